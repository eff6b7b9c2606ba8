"""A bench stopped from outside (`kill`, `timeout`, Ctrl-C) stops its stack and drops its throwaway database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from tests.support.postgres import ADMIN_DATABASE, asyncpg_dsn, postgres_url, with_database


async def _bench_databases(url: str) -> set[str]:
    connection = await asyncpg.connect(asyncpg_dsn(with_database(url, ADMIN_DATABASE)), timeout=30)
    try:
        rows = await connection.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'synchook_bench_%'")
    finally:
        await connection.close()
    return {row["datname"] for row in rows}


def _children(pid: int) -> set[int]:
    """The processes `pid` started (from /proc), still running."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(
    "command",
    [
        ["bench", "--db", "postgres", "--only", "a", "--events", "300"],
        ["bench.bench_push", "--db", "postgres"],
    ],
    ids=["make bench", "push bench"],
)
def test_a_bench_stopped_with_sigterm_stops_its_stack_and_drops_its_database(command: list[str]) -> None:
    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL not provided (set SYNCHOOK_TEST_POSTGRES_URL; .ci/run does)")
    before = asyncio.run(_bench_databases(url))
    env = os.environ | {"SYNCHOOK_BENCH_POSTGRES_URL": url}
    bench = subprocess.Popen(
        [sys.executable, "-m", *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        # Running: its database made, and its stack (Redis, the receiver, the API, workers) started.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and bench.poll() is None:
            made = asyncio.run(_bench_databases(url)) - before
            stack = _children(bench.pid)
            if made and len(stack) >= 4:
                break
            time.sleep(0.2)
        assert len(made) == 1 and len(stack) >= 4, (made, stack)
        bench.send_signal(signal.SIGTERM)
        _, errors = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == 130, errors[-2000:]
    assert errors.strip().splitlines()[-1] == "bench: interrupted; its stack stopped and its database dropped"
    assert not made & asyncio.run(_bench_databases(url))
    assert not [pid for pid in stack if _alive(pid)], stack
