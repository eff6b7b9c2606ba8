"""SQLite sessions queue on one lock across processes: handed over in order, never left held."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import exc, text

from synchook.db import Database, is_connection_error
from synchook.sqlite.lock import SQLiteWriteLock

# Holds the lock file of argv[1] until killed: another process in the middle of a write.
_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
async def databases(tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    # Two Database objects on one file open the lock file twice: to each other they are two processes.
    url = f"sqlite+aiosqlite:///{tmp_path / 'lock.db'}"
    first, second = Database(url), Database(url)
    async with first.session() as session:
        await session.execute(text("CREATE TABLE log (who TEXT)"))
    yield first, second
    await first.close()
    await second.close()


def _hold_in_subprocess(lock_file: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock_file)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


async def test_a_second_writer_waits_for_the_first_and_then_runs(databases: tuple[Database, Database]) -> None:
    first, second = databases
    order: list[str] = []
    inside = asyncio.Event()

    async def writer(db: Database, who: str, hold: float) -> None:
        async with db.session() as session:
            order.append(f"{who} in")
            inside.set()
            await session.execute(text("INSERT INTO log VALUES (:who)"), {"who": who})
            await asyncio.sleep(hold)
            order.append(f"{who} out")

    one = asyncio.create_task(writer(first, "one", 0.3))
    await inside.wait()
    await asyncio.gather(one, writer(second, "two", 0))
    assert order == ["one in", "one out", "two in", "two out"]
    async with second.session() as session:
        assert [r[0] for r in await session.execute(text("SELECT who FROM log ORDER BY rowid"))] == ["one", "two"]


async def test_sessions_of_one_process_take_turns_in_arrival_order(databases: tuple[Database, Database]) -> None:
    db, _ = databases
    order: list[int] = []

    async def writer(number: int) -> None:
        async with db.session() as session:
            await session.execute(text("INSERT INTO log VALUES (:who)"), {"who": str(number)})
            await asyncio.sleep(0.01)
            order.append(number)

    tasks = []
    for number in range(8):
        tasks.append(asyncio.create_task(writer(number)))
        await asyncio.sleep(0)  # each task reaches the lock before the next starts
    await asyncio.gather(*tasks)
    assert order == list(range(8))


async def test_a_killed_holder_releases_the_lock(databases: tuple[Database, Database], tmp_path: Path) -> None:
    db, _ = databases
    holder = _hold_in_subprocess(tmp_path / "lock.db-lock")
    try:
        writing = asyncio.create_task(_insert(db, "after the kill"))
        await asyncio.sleep(0.3)
        assert not writing.done(), "the session must wait while another process holds the lock"
        holder.kill()
        await asyncio.wait_for(writing, 10)
    finally:
        holder.kill()
        holder.wait()
    async with db.session() as session:
        assert (await session.execute(text("SELECT who FROM log"))).scalar_one() == "after the kill"


async def test_a_waiter_cancelled_mid_wait_leaves_the_lock_free(
    databases: tuple[Database, Database], tmp_path: Path
) -> None:
    db, _ = databases
    holder = _hold_in_subprocess(tmp_path / "lock.db-lock")
    try:
        waiting = asyncio.create_task(_insert(db, "cancelled"))
        await asyncio.sleep(0.2)  # now blocked in flock, in the lock's thread
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        holder.kill()
        holder.wait()
    # The abandoned wait got the lock when the holder died and gave it back: the next session runs.
    await asyncio.wait_for(_insert(db, "next"), 10)
    async with db.session() as session:
        assert [r[0] for r in await session.execute(text("SELECT who FROM log"))] == ["next"]


async def test_waiting_past_the_timeout_is_database_is_locked_and_the_lock_recovers(tmp_path: Path) -> None:
    lock = SQLiteWriteLock(str(tmp_path / "x.db"), timeout=0.2)
    holder = _hold_in_subprocess(tmp_path / "x.db-lock")
    try:
        with pytest.raises(exc.OperationalError, match="database is locked") as raised:
            async with lock:
                pytest.fail("entered a lock another process holds")
        assert is_connection_error(raised.value)  # answered 503 + Retry-After by the API, not 500
    finally:
        holder.kill()
        holder.wait()
    async with asyncio.timeout(10), lock:
        pass
    lock.close()


async def _insert(db: Database, who: str) -> None:
    async with db.session() as session:
        await session.execute(text("INSERT INTO log VALUES (:who)"), {"who": who})


async def test_a_session_opened_inside_another_of_the_same_task_does_not_wait_for_itself(
    databases: tuple[Database, Database],
) -> None:
    db, _ = databases
    async with asyncio.timeout(10), db.session() as outer:
        await _insert(db, "inner")  # the outer session has not begun: SQLite lets the inner one run
        await outer.execute(text("INSERT INTO log VALUES ('outer')"))
    async with db.session() as session:
        assert [r[0] for r in await session.execute(text("SELECT who FROM log ORDER BY rowid"))] == ["inner", "outer"]
