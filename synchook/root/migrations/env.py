from __future__ import annotations

import asyncio
import contextlib

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from synchook.root.models import metadata
from synchook.sqlite.engine import sqlite_write_lock

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool, hide_parameters=True)  # no bound value in a log
    lock = sqlite_write_lock(url)  # a migration queues with the running processes' writes
    try:
        async with lock or contextlib.nullcontext(), engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()
        if lock is not None:
            lock.close()


def run_migrations_online() -> None:
    existing = config.attributes.get("connection")
    if existing is not None:
        _run(existing)
        return
    asyncio.run(_run_async(config.attributes["database_url"]))


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `synchook migrate`")
run_migrations_online()
