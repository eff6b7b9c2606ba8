"""Shared wire fields: ISO 8601 datetimes in bodies and query strings, parsed the same way everywhere."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

from synchook.timeutil import parse_datetime

_MAX_LENGTH = 64


def parse_iso8601(value: object) -> datetime:
    """Only strings, parsed by us: pydantic's lax mode would also take numbers as Unix times.

    A date-time must carry its time zone (`Z` or an offset): guessing UTC for `2026-12-01T09:00` silently
    shifts a caller's window by their offset. A bare date (`2026-12-01`) is that day from 00:00 UTC.
    """
    if not isinstance(value, str) or len(value) > _MAX_LENGTH:
        raise ValueError("must be an ISO 8601 date or date-time string")
    if _has_time_without_zone(value):
        raise ValueError(
            "date-time has no time zone: add Z for UTC or an offset such as +01:00 (e.g. 2026-12-01T09:00:00Z)"
        )
    try:
        return parse_datetime(value)
    except (ValueError, OverflowError):
        raise ValueError("must be an ISO 8601 date or date-time") from None


def _has_time_without_zone(value: str) -> bool:
    text = value.strip()
    if len(text) <= 10 or text[-1] in "Zz":  # a bare date (extended or basic form), or explicit UTC
        return False
    try:
        return datetime.fromisoformat(text).tzinfo is None
    except ValueError:
        return False  # not ISO 8601 at all: the normal parse says so


IsoDateTime = Annotated[
    datetime,
    BeforeValidator(parse_iso8601),
    WithJsonSchema({"type": "string", "maxLength": _MAX_LENGTH, "description": "ISO 8601 date or date-time"}),
]
