"""Cursor pagination over ULID ids (time-ordered), newest first; the query model every list endpoint shares."""

from __future__ import annotations

import base64
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def page_limit(maximum: int) -> BeforeValidator:
    """Parses a page size given as text, refusing anything outside 1..maximum with one message."""

    def parse(value: object) -> int:
        message = f"must be an integer from 1 to {maximum}"
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise PydanticCustomError("limit", message)
        try:
            limit = int(value)
        except ValueError:
            raise PydanticCustomError("limit", message) from None
        if not 1 <= limit <= maximum:
            raise PydanticCustomError("limit", message)
        return limit

    return BeforeValidator(parse)


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


_MAX_CURSOR = 128  # base64 of the longest id decode_cursor accepts (64), with room to spare


def decode_cursor(cursor: str) -> str:
    """The id a cursor carries; a cursor this API did not make is a validation error."""
    if len(cursor) > _MAX_CURSOR:  # refused before decoding: no work for an arbitrarily long value
        raise PydanticCustomError("cursor", "invalid cursor")
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise PydanticCustomError("cursor", "invalid cursor") from None
    if not value or len(value) > 64 or not all(c.isalnum() or c == "_" for c in value):
        raise PydanticCustomError("cursor", "invalid cursor")
    return value


Limit = Annotated[int, page_limit(MAX_LIMIT), Field(ge=1, le=MAX_LIMIT, description="Page size")]
IdCursor = Annotated[str, Field(max_length=512), AfterValidator(decode_cursor)]


class PageQuery(BaseModel):
    """`?limit=&cursor=`: the cursor is decoded into the last id of the previous page."""

    model_config = ConfigDict(frozen=True)

    limit: Limit = DEFAULT_LIMIT
    cursor: IdCursor | None = Field(default=None, description="The next_cursor of the previous page")

    @property
    def after_id(self) -> str | None:
        """The last id of the previous page; the next page holds older ids."""
        return self.cursor


def next_cursor(ids: list[str], limit: int) -> str | None:
    """Callers fetch limit+1 rows; a full extra row means there is a next page."""
    return encode_cursor(ids[limit - 1]) if len(ids) > limit else None
