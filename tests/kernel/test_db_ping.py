"""Checkout of pooled PostgreSQL connections: pinged only after sitting idle (`synchook.db.ping_after_idle`), not
at every checkout (a round trip before every unit of work); a connection dropped while in steady use fails at its
first statement as a connection error, and the pool is renewed."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from synchook.db import is_connection_error, ping_after_idle
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
