"""Helpers both fakes share: UTC times, page-size parameters, opaque tokens."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime


def utc(value: datetime | date) -> datetime:
    """An aware UTC datetime; naive values are taken as UTC, dates as their midnight."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def utc_millis(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as Google's `updated` and Graph's `lastModifiedDateTime` read."""
    return utc(value).strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc(value).microsecond // 1000:03d}Z"


def clamp(value: str | None, default: int, cap: int) -> int:
    """A page size asked for by a client: 1..cap, `default` when absent or not a number."""
    try:
        return max(1, min(cap, int(value))) if value else default
    except ValueError:
        return default


def new_token() -> str:
    return secrets.token_urlsafe(18)
