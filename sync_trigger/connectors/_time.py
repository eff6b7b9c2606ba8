"""Time parsing shared by the connectors: everything leaves here timezone-aware UTC."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

logger = logging.getLogger(__name__)

# The Windows zone names Graph uses most (CLDR windowsZones, territory "001"), so an event written in
# one converts right; rarer names fall back to UTC (parse_zoned) and keep their name (mapping).
WINDOWS_ZONES = {
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "Romance Standard Time": "Europe/Paris",
    "E. Europe Standard Time": "Europe/Chisinau",
    "FLE Standard Time": "Europe/Kiev",
    "GTB Standard Time": "Europe/Bucharest",
    "Russian Standard Time": "Europe/Moscow",
    "Turkey Standard Time": "Europe/Istanbul",
    "Israel Standard Time": "Asia/Jerusalem",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Arabian Standard Time": "Asia/Dubai",
    "India Standard Time": "Asia/Kolkata",
    "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "US Mountain Standard Time": "America/Phoenix",
    "Pacific Standard Time": "America/Los_Angeles",
    "Alaskan Standard Time": "America/Anchorage",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Atlantic Standard Time": "America/Halifax",
    "E. South America Standard Time": "America/Sao_Paulo",
    "SA Pacific Standard Time": "America/Bogota",
    "Central Standard Time (Mexico)": "America/Mexico_City",
}


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
        return local.replace(tzinfo=ZoneInfo(WINDOWS_ZONES.get(zone, zone))).astimezone(UTC)
    except (ZoneInfoNotFoundError, ValueError):
        # A Windows zone name we do not map; we ask Graph for UTC (Prefer: outlook.timezone) so this
        # only happens on odd data. UTC beats dropping the event.
        logger.debug("unknown time zone %r, assuming UTC", zone)
        return local.replace(tzinfo=UTC)
