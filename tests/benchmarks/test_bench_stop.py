"""A bench stopped from outside (`kill`, `timeout`, Ctrl-C) stops its stack and drops its throwaway database."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from tests.support.postgres import ADMIN_DATABASE, asyncpg_dsn, postgres_url, with_database


async def _bench_databases(url: str, name: re.Pattern[str]) -> set[str]:
    """The server's databases named as the bench names its own (``tests.support.postgres.unique_name``)."""
    connection = await asyncpg.connect(asyncpg_dsn(with_database(url, ADMIN_DATABASE)), timeout=30)
    try:
        rows = await connection.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'synchook_bench%'")
    finally:
        await connection.close()
    return {row["datname"] for row in rows if name.fullmatch(row["datname"])}


def _stat(path: Path) -> list[str] | None:
    """A process's /proc stat fields after its name (state first, then the parent's pid), or None once it is gone."""
    try:
        return path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> set[int]:
    """The processes `pid` started, still running."""
    found = set()
    for path in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(path)
        if fields is not None and int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(path.parent.name))
    return found


def _alive(pid: int) -> bool:
    fields = _stat(Path(f"/proc/{pid}/stat"))
    return fields is not None and fields[0] != "Z"


@pytest.mark.parametrize(
    ("command", "database"),
    [
        (["bench", "--db", "postgres", "--only", "a", "--events", "300"], r"synchook_bench_[0-9a-f]{12}"),
        (["bench.bench_push", "--db", "postgres"], r"synchook_bench_push_[0-9a-f]{12}"),
    ],
    ids=["make bench", "push bench"],
)
def test_a_bench_stopped_with_sigterm_stops_its_stack_and_drops_its_database(command: list[str], database: str) -> None:
    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL not provided (set SYNCHOOK_TEST_POSTGRES_URL; .ci/run does)")
    # By its name: the other bench's case may run at the same time (pytest -n).
    name = re.compile(database)
    before = asyncio.run(_bench_databases(url, name))
    env = os.environ | {"SYNCHOOK_BENCH_POSTGRES_URL": url}
    bench = subprocess.Popen(
        [sys.executable, "-m", *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    made: set[str] = set()
    stack: set[int] = set()
    try:
        # Running: its database made, and its stack (Redis, the receiver, the API, workers) started.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and bench.poll() is None:
            made = asyncio.run(_bench_databases(url, name)) - before
            stack = _children(bench.pid)
            if made and len(stack) >= 4:
                break
            time.sleep(0.2)
    finally:
        # Stopped in any case, so a failed check does not leave a bench running.
        if bench.poll() is None:
            bench.send_signal(signal.SIGTERM)
        try:
            _, errors = bench.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            bench.kill()
            _, errors = bench.communicate()
    assert len(made) == 1 and len(stack) >= 4, (made, stack, errors[-2000:])
    assert bench.returncode == 130, errors[-2000:]
    assert errors.strip().splitlines()[-1] == "bench: interrupted; its stack stopped and its database dropped"
    assert not made & asyncio.run(_bench_databases(url, name))
    assert not [pid for pid in stack if _alive(pid)], stack
