"""Alembic migrations produce exactly the models' schema, on SQLite and PostgreSQL, and round-trip to base."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, inspect

from synchook.db import create_engine
from synchook.root import migrate
from synchook.root.models import metadata
from tests.support.postgres import create_database, drop_database, postgres_url, unique_name


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    base = postgres_url()
    if base is None:
        pytest.skip("PostgreSQL not provided (set SYNCHOOK_TEST_POSTGRES_URL; .ci/run does)")
    name = unique_name("synchook_migrations")
    url = asyncio.run(create_database(base, name))
    try:
        yield url
    finally:
        asyncio.run(drop_database(base, name))


def differences(url: str, target: MetaData = metadata) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: compare_metadata(
                        MigrationContext.configure(sync, opts={"compare_type": True, "compare_server_default": False}),
                        target,
                    )
                )
        finally:
            await engine.dispose()

    # No filtering: UTCDateTime and JSON render as the same DDL types the migrations use, so SQLite's
    # type affinity produces no spurious differences today. If one appears, filter it here with a reason.
    return asyncio.run(run())


def tables(url: str) -> set[str]:
    async def run() -> set[str]:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_migrations_match_the_models(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    assert differences(empty_database) == []


def test_downgrade_to_base_and_upgrade_again(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    migrate.downgrade(empty_database, "base")
    assert tables(empty_database) <= {"alembic_version"}
    migrate.upgrade(empty_database)
    assert differences(empty_database) == []


def test_a_column_without_a_migration_is_detected(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    grown = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(grown)
    Table("events", grown, Column("new_column_without_migration", Integer), extend_existing=True)
    found = differences(empty_database, grown)
    assert [d[0] for d in found] == ["add_column"]
    assert found[0][3].name == "new_column_without_migration"
