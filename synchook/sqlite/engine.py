"""A SQLite database file as an async engine: WAL, BEGIN IMMEDIATE, one write lock per file, optionally on the loop."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from synchook.sqlite.inline import inline_connector
from synchook.sqlite.lock import SQLiteWriteLock

# How long a SQLite writer waits for the file before "database is locked" (SQLite's busy_timeout too).
SQLITE_LOCK_TIMEOUT = 30.0

# aiosqlite logs every call with its arguments (the statement's parameters) at DEBUG: never let it.
logging.getLogger("aiosqlite").setLevel(logging.INFO)


def ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def create_sqlite_engine(url: str, *, inline: bool, hide_parameters: bool, reader: bool = False) -> AsyncEngine:
    """``inline``: run SQLite on the loop's thread (synchook.sqlite.inline), for a file database.

    ``reader``: connections that only read, each statement on its own (no BEGIN IMMEDIATE, so no write lock):
    in WAL mode they read the last commit beside the one writer instead of queueing behind it."""
    ensure_sqlite_dir(url)
    path = sqlite_file(url)
    if inline and path:
        engine = create_async_engine(
            url,
            async_creator=inline_connector(path, timeout=SQLITE_LOCK_TIMEOUT),
            hide_parameters=hide_parameters,
            **_reader_options(reader),
        )
    else:
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_LOCK_TIMEOUT},
            hide_parameters=hide_parameters,
            **_reader_options(reader),
        )
    if reader:
        configure_sqlite_reader(engine)
    else:
        configure_sqlite(engine)
    return engine


def _reader_options(reader: bool) -> dict[str, Any]:
    # A reader never opens a transaction: there is nothing to roll back when a connection goes back to the pool
    # (aiosqlite would still send that no-op to its thread and wait for the answer).
    return {"pool_reset_on_return": None} if reader else {}


def configure_sqlite_reader(engine: AsyncEngine) -> None:
    # No BEGIN at all: the driver is in autocommit mode (isolation_level None), so each SELECT is a read
    # transaction of its own. query_only: a write sent here by mistake fails instead of skipping the write lock.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_TIMEOUT * 1000)}")
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()


def configure_sqlite(engine: AsyncEngine) -> None:
    # Several processes (api, worker, CLI) share one file: WAL lets readers run beside the writer,
    # and BEGIN IMMEDIATE takes the write lock up front so two writers queue on busy_timeout
    # instead of failing with "database is locked" when a read transaction upgrades.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_TIMEOUT * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_write_lock(url: str) -> SQLiteWriteLock | None:
    """The lock every writer of this SQLite file queues on (None for PostgreSQL and in-memory SQLite)."""
    path = sqlite_file(url)
    return SQLiteWriteLock(path, timeout=SQLITE_LOCK_TIMEOUT) if path else None


def sqlite_file(url: str) -> str | None:
    """The database file's path, for SQLite on a file (not PostgreSQL, not in-memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return parsed.database
