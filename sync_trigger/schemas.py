"""Request bodies of the sync API: strict, unknown fields refused, each error naming its field."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from synchook.http.fields import IsoDateTime

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
