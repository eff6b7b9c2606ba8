"""Shared wire fields: ISO 8601 datetimes in bodies and query strings, parsed the same way everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

from synchook.errors import ValidationFailed
from synchook.timeutil import parse_datetime

_MAX_LENGTH = 64


def parse_iso8601(value: object) -> datetime:
    """Only strings, parsed by us: pydantic's lax mode would also take numbers as Unix times."""
    if not isinstance(value, str) or len(value) > _MAX_LENGTH:
        raise ValueError("must be an ISO 8601 date or date-time string")
    try:
        return parse_datetime(value)
    except (ValueError, OverflowError):
        raise ValueError("must be an ISO 8601 date or date-time") from None


IsoDateTime = Annotated[
    datetime,
    BeforeValidator(parse_iso8601),
    WithJsonSchema({"type": "string", "maxLength": _MAX_LENGTH, "description": "ISO 8601 date or date-time"}),
]


def datetime_param(params: Mapping[str, str], name: str) -> datetime | None:
    """An optional ISO 8601 query parameter; a bad one is 422 naming it."""
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return parse_iso8601(raw)
    except ValueError as exc:
        raise ValidationFailed(f"{name}: {exc}", field=name) from None
