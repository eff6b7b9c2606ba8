"""Time parsing shared by the connectors: everything leaves here timezone-aware UTC."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

logger = logging.getLogger(__name__)


def as_utc(value: datetime) -> datetime:
    # Naive datetimes come from storage that dropped the offset (SQLite); they were UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def rfc3339(value: datetime) -> str:
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: object) -> datetime | None:
    """An RFC 3339 / ISO 8601 timestamp; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        logger.debug("unreadable timestamp %r", value)
        return None


def date_midnight_utc(value: object) -> datetime | None:
    """An all-day date (`2024-05-02`) as 00:00 UTC of that date."""
    if not isinstance(value, str):
        return None
    try:
        day = date.fromisoformat(value[:10])
    except ValueError:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def parse_zoned(value: object, zone: object) -> datetime | None:
    """A Graph `dateTimeTimeZone`: a naive local time (7 fractional digits) plus a zone name."""
    if not isinstance(value, str) or not value:
        return None
    try:
        local = datetime.fromisoformat(value)
    except ValueError:
        return None
    if local.tzinfo is not None:
        return as_utc(local)
    if not isinstance(zone, str) or zone.upper() in ("", "UTC", "ETC/UTC", "Z"):
        return local.replace(tzinfo=UTC)
    try:
        return local.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    except (ZoneInfoNotFoundError, ValueError):
        # Windows zone names ("Pacific Standard Time") are not IANA; we ask Graph for UTC
        # (Prefer: outlook.timezone) so this only happens on odd data. UTC beats dropping the event.
        logger.debug("unknown time zone %r, assuming UTC", zone)
        return local.replace(tzinfo=UTC)
