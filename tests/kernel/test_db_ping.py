"""Checkout of pooled PostgreSQL connections: pinged only after sitting idle (`synchook.db.ping_after_idle`), not
at every checkout (a round trip before every unit of work); a connection dropped while in steady use fails at its
first statement as a connection error, and the pool is renewed."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from synchook.db import Database, is_connection_error, ping_after_idle
from tests.support.postgres import fetch


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_dropped_while_idle_is_replaced_before_use(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL connections")
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0)
    ping_after_idle(engine, 0.0)  # every checkout counts as after idleness here
    try:
        dropped = await _backend_pid(engine)
        await fetch(database_url, "SELECT pg_terminate_backend($1)", dropped)
        assert await _backend_pid(engine) != dropped  # pinged, found dead, replaced: no error reaches the caller
    finally:
        await engine.dispose()


async def test_a_connection_dropped_while_in_use_fails_once_as_a_connection_error(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL connections")
    engine = create_async_engine(database_url, pool_size=2, max_overflow=0)
    ping_after_idle(engine, 3600.0)  # in steady use: never pinged
    try:
        dropped = await _backend_pid(engine)
        await fetch(database_url, "SELECT pg_terminate_backend($1)", dropped)
        with pytest.raises(Exception) as failure:
            await _backend_pid(engine)
        assert is_connection_error(failure.value)  # the API answers 503 unavailable, the worker retries
        assert await _backend_pid(engine) != dropped  # the pool was invalidated: the next checkout is a new one
    finally:
        await engine.dispose()


async def test_work_arriving_one_unit_at_a_time_reuses_the_connection_returned_last(database_url: str) -> None:
    # A warm connection has the statements already prepared (asyncpg caches them per connection) and is not
    # pinged; going round every pooled connection in turn (FIFO) prepared each statement once per connection.
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL connections")
    db = Database(database_url, pool_size=4)
    try:
        async with db.engine.connect() as a, db.engine.connect() as b, db.engine.connect() as c:
            opened = {await _pid_of(conn) for conn in (a, b, c)}
        assert len(opened) == 3  # the pool now holds three idle connections
        used = [await _backend_pid(db.engine) for _ in range(6)]
        assert len(set(used)) == 1, used
    finally:
        await db.close()


async def _pid_of(conn: AsyncConnection) -> int:
    return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_dropped_under_driver_row_fails_once_and_the_pool_is_renewed(database_url: str) -> None:
    # Database.driver_row runs its statement on asyncpg itself (POST /v1/calendar/sync's call): a server restart
    # must cost it one failure, as SQLAlchemy's own execution, not one per pooled connection.
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL connections")
    db = Database(database_url, pool_size=2)
    pid = "SELECT pg_backend_pid() AS pid"
    try:
        async with db.engine.connect() as a, db.engine.connect() as b:
            opened = {await _pid_of(a), await _pid_of(b)}  # the pool now holds two idle connections
        for dropped in opened:
            await fetch(database_url, "SELECT pg_terminate_backend($1)", dropped)
        with pytest.raises(Exception) as failure:
            await db.driver_row(pid, [])
        assert is_connection_error(failure.value)  # the API answers 503 unavailable
        row = await db.driver_row(pid, [])
        assert row is not None and row["pid"] not in opened  # the next checkout is a new connection
    finally:
        await db.close()


async def test_driver_row_raises_errors_as_sqlalchemys_execution_does(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL connections")
    db = Database(database_url, pool_size=1)
    try:
        with pytest.raises(DBAPIError) as failure:
            await db.driver_row("SELECT 1 / $1::int", [0])
        assert not is_connection_error(failure.value) and not failure.value.connection_invalidated
        assert "[parameters" not in str(failure.value)  # hidden, as the engine hides them
        row = await db.driver_row("SELECT 2 AS two", [])
        assert row is not None and dict(row) == {"two": 2}  # the connection is still good
    finally:
        await db.close()


async def test_driver_row_without_a_server_is_a_connection_error(database_url: str) -> None:
    # PostgreSQL down (restarting, unreachable): the API answers 503 unavailable, as for SQLAlchemy's own checkout.
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL connections")
    closed_port = make_url(database_url).set(port=1).render_as_string(hide_password=False)
    db = Database(closed_port, pool_size=1)
    try:
        with pytest.raises(Exception) as failure:
            await db.driver_row("SELECT 1", [])
        assert is_connection_error(failure.value)
    finally:
        await db.close()
