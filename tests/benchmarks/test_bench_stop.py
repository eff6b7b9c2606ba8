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


def test_a_bench_stopped_with_sigterm_drops_its_database() -> None:
    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL not provided (set SYNCHOOK_TEST_POSTGRES_URL; .ci/run does)")
    before = asyncio.run(_bench_databases(url))
    command = [sys.executable, "-m", "bench", "--db", "postgres", "--only", "a", "--events", "300"]
    env = os.environ | {"SYNCHOOK_BENCH_POSTGRES_URL": url}
    bench = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert bench.stdout is not None
        # Its first measurement printed: the database made, the stack (API, workers, receiver, Redis) running.
        deadline = time.monotonic() + 120
        for line in bench.stdout:
            if line.startswith("raw") or time.monotonic() > deadline:
                break
        made = asyncio.run(_bench_databases(url)) - before
        assert len(made) == 1, made
        stack = _children(bench.pid)
        assert len(stack) >= 3, stack  # Redis, the receiver, the workers at least
        bench.send_signal(signal.SIGTERM)
        _, errors = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == 130, errors[-2000:]
    assert errors.strip().splitlines()[-1] == "bench: interrupted; its stack stopped and its database dropped"
    assert not made & asyncio.run(_bench_databases(url))
    assert not [pid for pid in stack if _alive(pid)], stack
