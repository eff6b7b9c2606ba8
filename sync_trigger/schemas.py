"""Request bodies of the sync API: strict, unknown fields refused, each error naming its field."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr

from synchook.timeutil import parse_datetime


def _iso8601(value: object) -> datetime:
    # Only strings, parsed by us: pydantic's lax mode would also take numbers as Unix times.
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("must be an ISO 8601 date or date-time string")
    try:
        return parse_datetime(value)
    except (ValueError, OverflowError):
        raise ValueError("must be an ISO 8601 date or date-time") from None


IsoDateTime = Annotated[datetime, BeforeValidator(_iso8601)]
Provider = Literal["google", "microsoft"]


class TriggerSyncBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["incremental", "full"] = "incremental"
    provider: Provider | None = None
    from_date: IsoDateTime | None = None
    to_date: IsoDateTime | None = None


class ConnectionCreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    provider: Provider
    account: StrictStr = Field(min_length=1, max_length=320)
    access_token: StrictStr = Field(min_length=1, max_length=4096)
    refresh_token: StrictStr = Field(min_length=1, max_length=4096)
    expires_at: IsoDateTime | None = None
