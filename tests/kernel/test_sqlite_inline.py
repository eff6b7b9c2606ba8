"""A worker's SQLite runs on the loop's thread: a transaction never waits for a loop turn between statements."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from synchook.db import Database


@pytest.mark.parametrize("inline", [True, False])
async def test_statements_of_a_session_run_back_to_back_only_inline(tmp_path: Path, inline: bool) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}", inline_sqlite=inline)
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    threads = threading.active_count()
    counter = asyncio.create_task(count_turns())
    try:
        async with db.session() as session:
            await session.execute(text("CREATE TABLE t (n INTEGER)"))
            before = turns
            for n in range(20):
                await session.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
            between = turns - before
            total = (await session.execute(text("SELECT sum(n) FROM t"))).scalar_one()
        assert total == sum(range(20))
        if inline:
            assert between == 0, "an inline statement yielded to the loop"
            assert threading.active_count() == threads, "an inline connection started a thread"
        else:
            assert between >= 20  # aiosqlite: one loop turn (at least) per statement
    finally:
        counter.cancel()
        await db.close()
    # Committed for other connections too.
    reader = Database(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    try:
        async with reader.session() as session:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 20
    finally:
        await reader.close()
