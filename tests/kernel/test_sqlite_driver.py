"""`Database.sqlite_transaction`: a write transaction run whole on sqlite3, in one call to aiosqlite's thread.

What it sends must be what SQLAlchemy's execution sends (the same SQL and converted values), its rows must read as
SQLAlchemy reads them, and a transaction that fails or is abandoned must leave nothing behind.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, Column, MetaData, String, Table, bindparam, event, exc, func, insert, select

from synchook.db import Database, DriverTransaction, UTCDateTime, is_connection_error
from synchook.sqlite.driver import DriverStatement
from tests.support.hand_offs import counted_hand_offs

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("data", JSON, nullable=False),
    Column("at", UTCDateTime, nullable=False),
)

INSERT = insert(things).values(
    id=bindparam("id"), status=bindparam("status"), data=bindparam("data", type_=JSON), at=bindparam("at")
)
# An IN list of the statement's own, a bound time, an aggregate of times and a boolean: each converted on its way.
SUMMARY = select(
    func.count(things.c.id).label("open"),
    func.min(things.c.at).label("oldest"),
    select(things.c.id).where(things.c.id == bindparam("id")).exists().label("known"),
).where(things.c.status.in_(["queued", "running"]), things.c.at > bindparam("since", type_=UTCDateTime))

AT = datetime(2026, 11, 24, 1, 45, 27, 123, tzinfo=UTC)
ROW = {"id": "t1", "status": "queued", "data": {"a": [1, "é"], "b": None}, "at": AT}


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with database.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield database
    await database.close()


@pytest.fixture
def hand_offs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    with counted_hand_offs(monkeypatch) as handed:
        yield handed


async def _ids(db: Database) -> list[str]:
    async with db.read_rows() as connection:
        return [row.id for row in await connection.execute(select(things.c.id).order_by(things.c.id))]


async def test_a_driver_statement_sends_what_sqlalchemys_execution_sends(db: Database) -> None:
    sent: list[tuple[str, tuple[Any, ...]]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        sent.append((statement, tuple(parameters)))

    values = {**ROW, "since": AT - timedelta(hours=1)}
    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with db.session() as session:
            await session.execute(INSERT, values)
            await session.execute(SUMMARY, values)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    driven = [DriverStatement.compile(statement, db.engine.dialect) for statement in (INSERT, SUMMARY)]
    assert sent[0] == ("BEGIN IMMEDIATE", ())  # the session's, from the engine's begin event
    assert sent[1:] == [(statement.sql, statement.parameters(values)) for statement in driven]


async def test_a_driver_statements_row_reads_as_sqlalchemy_reads_it(db: Database) -> None:
    async with db.session() as session:
        await session.execute(INSERT, ROW)
        await session.execute(INSERT, {**ROW, "id": "t2", "status": "done"})
    values = {"id": "t1", "since": AT - timedelta(hours=1)}
    async with db.read_rows() as connection:
        expected = (await connection.execute(SUMMARY, values)).one()._asdict()
    found = await db.sqlite_transaction(lambda transaction: transaction.first(SUMMARY, values))
    assert found == expected == {"open": 1, "oldest": AT, "known": True}


async def test_a_transaction_is_one_hand_off_and_commits(db: Database, hand_offs: list[str]) -> None:
    await db.sqlite_transaction(lambda transaction: None)  # the pool's connection opened
    hand_offs.clear()

    def work(transaction: DriverTransaction) -> int:
        transaction.execute(INSERT, ROW)
        return transaction.execute(INSERT, {**ROW, "id": "t2"})

    assert await db.sqlite_transaction(work) == 1
    # BEGIN IMMEDIATE, both inserts and COMMIT in one call; then the pool's reset at checkin, after the lock.
    # Through a session: a cursor, its execution and its close for each statement, BEGIN's, COMMIT, the reset.
    assert hand_offs == ["OneCall", "rollback"], hand_offs
    assert await _ids(db) == ["t1", "t2"]


async def test_work_that_fails_commits_nothing_and_its_error_is_raised(db: Database) -> None:
    def work(transaction: DriverTransaction) -> None:
        transaction.execute(INSERT, ROW)
        raise LookupError("the work's own error")

    with pytest.raises(LookupError, match="the work's own error"):
        await db.sqlite_transaction(work)
    assert await _ids(db) == []
    await db.sqlite_transaction(lambda transaction: transaction.execute(INSERT, ROW))  # the connection is usable
    assert await _ids(db) == ["t1"]


async def test_a_failed_statement_is_raised_as_sqlalchemy_raises_it_and_rolls_back(db: Database) -> None:
    def work(transaction: DriverTransaction) -> None:
        transaction.execute(INSERT, {**ROW, "id": "t2"})
        transaction.execute(INSERT, ROW)
        transaction.execute(INSERT, ROW)  # the same primary key

    with pytest.raises(exc.IntegrityError) as raised:
        await db.sqlite_transaction(work)
    assert isinstance(raised.value.orig, sqlite3.IntegrityError)
    assert "INSERT INTO things" in str(raised.value)
    assert "queued" not in str(raised.value)  # parameters hidden, as the engine hides them
    assert await _ids(db) == []


async def test_database_is_locked_is_a_connection_error_as_through_sqlalchemy(db: Database) -> None:
    # What BEGIN IMMEDIATE raises when another process held SQLite's write lock past busy_timeout: 503, not 500.
    def work(transaction: DriverTransaction) -> None:
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(exc.OperationalError) as raised:
        await db.sqlite_transaction(work)
    assert is_connection_error(raised.value)


async def test_a_transaction_abandoned_before_commit_commits_nothing(db: Database) -> None:
    started, go = threading.Event(), threading.Event()

    def work(transaction: DriverTransaction) -> None:
        transaction.execute(INSERT, ROW)
        started.set()
        go.wait(10)  # the caller is cancelled meanwhile (a client gone, a shutdown)

    task = asyncio.create_task(db.sqlite_transaction(work))
    assert await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
    task.cancel()
    await asyncio.sleep(0)  # the cancellation reaches the task while its work still runs
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _ids(db) == []
    await db.sqlite_transaction(lambda transaction: transaction.execute(INSERT, ROW))  # lock and connection free
    assert await _ids(db) == ["t1"]


async def test_an_inline_engine_runs_the_transaction_on_the_loop(tmp_path: Path, hand_offs: list[str]) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}", inline_sqlite=True)
    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        assert await db.sqlite_transaction(lambda transaction: transaction.execute(INSERT, ROW)) == 1
        assert hand_offs == []  # the worker's engine: no thread
        assert await _ids(db) == ["t1"]
    finally:
        await db.close()


async def test_sqlite_transaction_is_sqlites(tmp_path: Path) -> None:
    db = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(RuntimeError):
            await db.sqlite_transaction(lambda transaction: None)
    finally:
        await db.close()
