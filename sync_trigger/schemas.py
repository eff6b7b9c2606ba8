"""Request bodies of the sync API: strict, unknown fields refused, each error naming its field."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

from synchook.http.fields import IsoDateTime

Provider = Literal["google", "microsoft"]

TOKEN_MAX_BYTES = 4096


def _check_token(value: str) -> str:
    # Bytes, not characters: 4096 emoji are 16 KiB, which sealed no longer fits its column (a 500 on PostgreSQL).
    if len(value.encode("utf-8")) > TOKEN_MAX_BYTES:
        raise ValueError(f"must be at most {TOKEN_MAX_BYTES} bytes of UTF-8")
    # A token becomes an Authorization header on every provider call: CR/LF would split it (or fail every sync).
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ValueError("must not contain control characters such as CR or LF")
    return value


ProviderToken = Annotated[StrictStr, Field(min_length=1, max_length=TOKEN_MAX_BYTES), AfterValidator(_check_token)]


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
    access_token: ProviderToken
    refresh_token: ProviderToken
    expires_at: IsoDateTime | None = None
