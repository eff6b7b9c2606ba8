"""Datetimes as SQLite stores them: UTC text, written and read in one step each (synchook.db.UTCDateTime).

SQLite stores text. These write and read the very text SQLAlchemy's own SQLite DATETIME does
("2026-11-24 01:45:27.000123"; ordering and equality in SQL unchanged) in one step each instead
of three Python layers: five datetimes per delivery row made that a hot spot of the engine.
"""

from __future__ import annotations

from datetime import UTC, datetime

# The last datetime written and its text, replaced as one tuple (API threads write too). A batch
# writes one `now` into several columns of every row: a 2,000-row fan-out converts it once, not 6,000 times.
_last_sqlite_text: tuple[datetime | None, str] = (None, "")


def sqlite_text(value: datetime | None) -> str | None:
    global _last_sqlite_text
    if value is None:
        return None
    last = _last_sqlite_text
    if last[0] is value:  # the tuple holds it, so no other datetime can have its identity meanwhile
        return last[1]
    utc = value.astimezone(UTC) if value.tzinfo is not None and value.utcoffset() else value  # naive is UTC
    text = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond:06d}"
    )
    _last_sqlite_text = (value, text)
    return text


def sqlite_datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)
