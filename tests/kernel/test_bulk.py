"""Bulk inserts and updates store exactly what SQLAlchemy's own insert and update store, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from synchook.bulk import insert_rows, update_rows
from synchook.db import Database, UTCDateTime

_metadata = sa.MetaData()


def _table(name: str) -> sa.Table:
    return sa.Table(
        name,
        _metadata,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("count", sa.Integer, nullable=True),
        sa.Column("at", UTCDateTime, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        prefixes=["TEMPORARY"],  # this connection's own: nothing left behind in the shared test database
    )


_bulk, _reference = _table("bulk_rows"), _table("reference_rows")
_SHARED = datetime(2026, 11, 24, 9, 0, 0, 1, tzinfo=UTC)
ROWS: list[dict[str, Any]] = [
    {"id": "r1", "count": 0, "at": _SHARED, "note": None, "status": "pending"},
    {"id": "r2", "count": None, "at": None, "note": "it's \"quoted\", ünïcode ✓", "status": "pending"},
    {"id": "r3", "count": 7, "at": datetime(2026, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
     "note": "", "status": "failed"},
    {"id": "r4", "count": -1, "at": datetime(2026, 6, 1, 12, 0, 0, 999999), "note": "x" * 5000, "status": "dead"},
    {"id": "r5", "count": 2**31 - 1, "at": _SHARED, "note": "a\nb", "status": "pending"},
]  # fmt: skip
UPDATES: list[dict[str, Any]] = [
    {"status": "succeeded", "count": 1, "at": None, "id": "r1"},
    {"status": "failed", "count": None, "at": datetime(2027, 2, 3, 4, 5, 6, tzinfo=UTC), "id": "r3"},
    {"status": "pending", "count": 9, "at": _SHARED + timedelta(hours=1), "id": "r5"},
]


async def _stored(session: Any, table: sa.Table) -> list[tuple[Any, ...]]:
    # Raw text query: on SQLite the stored text itself, not values parsed back.
    return [tuple(row) for row in await session.execute(sa.text(f"SELECT * FROM {table.name} ORDER BY id"))]


async def test_bulk_writes_store_what_sqlalchemy_stores(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.session() as session:
            await session.run_sync(lambda s: _metadata.create_all(s.connection()))
            await insert_rows(session, _bulk, ROWS)
            await session.execute(sa.insert(_reference), ROWS)
            inserted = await _stored(session, _bulk)
            assert inserted == await _stored(session, _reference)
            assert [row[0] for row in inserted] == ["r1", "r2", "r3", "r4", "r5"]

            await update_rows(session, _bulk, UPDATES)
            for update in UPDATES:
                values = {k: v for k, v in update.items() if k != "id"}
                await session.execute(sa.update(_reference).where(_reference.c.id == update["id"]).values(**values))
            updated = await _stored(session, _bulk)
            assert updated == await _stored(session, _reference)
            assert updated != inserted  # the updates changed r1, r3 and r5, and left r2 and r4 alone
            assert [row for row in updated if row[0] in ("r2", "r4")] == [r for r in inserted if r[0] in ("r2", "r4")]

            read = (await session.execute(sa.select(_bulk.c.at).where(_bulk.c.id == "r3"))).scalar_one()
            assert read == datetime(2027, 2, 3, 4, 5, 6, tzinfo=UTC)
            await session.run_sync(lambda s: _metadata.drop_all(s.connection()))
    finally:
        await db.close()


async def test_nothing_to_write_runs_no_statement(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.session() as session:
            # No table exists under this name: any statement would fail.
            missing = sa.Table("no_such_table", sa.MetaData(), sa.Column("id", sa.String, primary_key=True))
            await insert_rows(session, missing, [])
            await update_rows(session, missing, [])
    finally:
        await db.close()


# Columns with one value in every row (PostgreSQL sends those once, as a scalar) beside ones that differ.
SHARED_ROWS: list[dict[str, Any]] = [
    {"id": f"s{i}", "count": None, "at": _SHARED, "note": f"n{i % 2}", "status": "pending"} for i in range(4)
]
SHARED_UPDATES: list[dict[str, Any]] = [
    {"status": "succeeded", "count": 1, "at": None, "note": "done", "id": "s1"},
    {"status": "succeeded", "count": 1, "at": None, "note": "done", "id": "s2"},
]


async def test_bulk_writes_with_shared_values_store_what_sqlalchemy_stores(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.session() as session:
            await session.run_sync(lambda s: _metadata.create_all(s.connection()))
            for rows in (SHARED_ROWS, [ROWS[1]]):  # a single row: every value is shared
                await insert_rows(session, _bulk, rows)
                await session.execute(sa.insert(_reference), rows)
            assert await _stored(session, _bulk) == await _stored(session, _reference)
            for updates in (SHARED_UPDATES, [UPDATES[0] | {"id": "s3"}], [{"status": "dead", "id": "r2"}]):
                await update_rows(session, _bulk, updates)
                for update in updates:
                    values = {k: v for k, v in update.items() if k != "id"}
                    await session.execute(sa.update(_reference).where(_reference.c.id == update["id"]).values(**values))
            updated = await _stored(session, _bulk)
            assert updated == await _stored(session, _reference)
            assert [row[0] for row in updated if row[4] != "pending"] == ["r2", "s1", "s2", "s3"]
            await session.run_sync(lambda s: _metadata.drop_all(s.connection()))
    finally:
        await db.close()
