"""UTCDateTime on SQLite writes the very text SQLAlchemy's own DATETIME writes, and reads it back as aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from synchook.db import Database, UTCDateTime

_metadata = sa.MetaData()
_stamps = sa.Table(
    "stamps",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("ours", UTCDateTime, nullable=True),
    sa.Column("reference", sa.DateTime, nullable=True),  # SQLAlchemy's own SQLite storage format
)

MOMENTS = [
    datetime(2026, 11, 24, 1, 2, 3, tzinfo=UTC),  # no microseconds: still written as .000000
    datetime(2026, 11, 24, 1, 2, 3, 5, tzinfo=UTC),
    datetime(2026, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),  # converted to UTC
    datetime(2026, 6, 1, 12, 0, 0, 999999),  # naive means UTC
]


@pytest.mark.parametrize("moment", MOMENTS)
async def test_stored_text_matches_sqlalchemys_and_reads_back_as_utc(tmp_path: Path, moment: datetime) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'stamps.db'}")
    try:
        async with db.session() as session:
            await session.run_sync(lambda s: _metadata.create_all(s.connection()))
            utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
            await session.execute(sa.insert(_stamps).values(id=1, ours=moment, reference=utc.replace(tzinfo=None)))
            ours, reference = (await session.execute(sa.text("SELECT ours, reference FROM stamps"))).one()
            assert ours == reference
            read = (await session.execute(sa.select(_stamps.c.ours))).scalar_one()
            assert read == utc and read.tzinfo is UTC
            # Comparisons in SQL see the same text: an equal bound value matches, a later one orders after.
            assert (await session.execute(sa.select(sa.func.count()).where(_stamps.c.ours == moment))).scalar() == 1
            later = utc + timedelta(microseconds=1)
            assert (await session.execute(sa.select(sa.func.count()).where(_stamps.c.ours < later))).scalar() == 1
    finally:
        await db.close()


async def test_rows_sharing_one_datetime_and_rows_alternating_each_store_their_own(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'stamps.db'}")
    shared = datetime(2026, 11, 24, 9, 0, 0, 1, tzinfo=UTC)
    # One object in several rows, other values between, and an equal value as another object.
    moments = [shared, shared, MOMENTS[1], shared, datetime(2026, 11, 24, 9, 0, 0, 1, tzinfo=UTC), MOMENTS[2], shared]
    try:
        async with db.session() as session:
            await session.run_sync(lambda s: _metadata.create_all(s.connection()))
            await session.execute(
                sa.insert(_stamps),
                [
                    {"id": i, "ours": m, "reference": m.astimezone(UTC).replace(tzinfo=None)}
                    for i, m in enumerate(moments)
                ],
            )
            rows = (await session.execute(sa.text("SELECT ours, reference FROM stamps ORDER BY id"))).all()
            assert [ours for ours, _ in rows] == [reference for _, reference in rows]
            assert len({ours for ours, _ in rows}) == 3
    finally:
        await db.close()
