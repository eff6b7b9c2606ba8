"""Cursor pagination over ULID ids (time-ordered), newest first."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from starlette.requests import Request

from synchook.errors import ValidationFailed

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    after_id: str | None  # the last id of the previous page; the next page holds older ids


def page_request(request: Request) -> PageRequest:
    raw_limit = request.query_params.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise ValidationFailed("limit: must be an integer from 1 to 100", field="limit") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationFailed("limit: must be an integer from 1 to 100", field="limit")
    cursor = request.query_params.get("cursor")
    return PageRequest(limit=limit, after_id=decode_cursor(cursor) if cursor else None)


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


_MAX_CURSOR = 128  # base64 of the longest id decode_cursor accepts (64), with room to spare


def decode_cursor(cursor: str) -> str:
    if len(cursor) > _MAX_CURSOR:  # refused before decoding: no work for an arbitrarily long value
        raise ValidationFailed("cursor: invalid cursor", field="cursor")
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("cursor: invalid cursor", field="cursor") from None
    if not value or len(value) > 64 or not all(c.isalnum() or c == "_" for c in value):
        raise ValidationFailed("cursor: invalid cursor", field="cursor")
    return value


def next_cursor(ids: list[str], limit: int) -> str | None:
    """Callers fetch limit+1 rows; a full extra row means there is a next page."""
    return encode_cursor(ids[limit - 1]) if len(ids) > limit else None
