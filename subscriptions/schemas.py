"""Request bodies and response shapes of the subscriptions API."""

from __future__ import annotations

import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from subscriptions.catalogue import PROVIDERS, is_known_pattern
from subscriptions.models import Subscription
from synchook.timeutil import isoformat

Provider = Literal["google", "microsoft"]
SignatureType = Literal["hmac-sha256", "ed25519"]
Status = Literal["enabled", "disabled"]

MAX_DESCRIPTION = 1000
MAX_EVENT_TYPES = 50
MAX_RATE_LIMIT = 100_000
DEFAULT_OVERLAP = 86_400
MAX_OVERLAP = 30 * 86_400


def _event_types(value: list[str]) -> list[str]:
    unknown = [p for p in value if not is_known_pattern(p)]
    if unknown:
        raise ValueError(
            f"unknown event type or wildcard {unknown[0][:100]!r}; "
            "use names from GET /v1/webhooks/event-types, a group wildcard such as 'calendar.sync.*', or '*'"
        )
    return list(dict.fromkeys(value))


def _description(value: str | None) -> str | None:
    if value is not None and any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("must not contain control characters (line breaks, tabs, ...)")
    return value


def _providers(value: list[str] | None) -> list[str] | None:
    # Stored in catalogue order without duplicates, so equal filters compare equal.
    return None if value is None else [p for p in PROVIDERS if p in value]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateSubscription(_Body):
    url: str
    event_types: list[str] = Field(min_length=1, max_length=MAX_EVENT_TYPES)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    providers: list[Provider] | None = Field(default=None, min_length=1)
    rate_limit_per_second: int | None = Field(default=None, gt=0, le=MAX_RATE_LIMIT)
    signature_type: SignatureType = "hmac-sha256"

    _check_event_types = field_validator("event_types")(_event_types)
    _check_description = field_validator("description")(_description)
    _check_providers = field_validator("providers")(_providers)


class UpdateSubscription(_Body):
    """Only the fields sent change; ``providers``, ``description`` and ``rate_limit_per_second`` may be null."""

    url: str | None = None
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=MAX_EVENT_TYPES)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    providers: list[Provider] | None = Field(default=None, min_length=1)
    rate_limit_per_second: int | None = Field(default=None, gt=0, le=MAX_RATE_LIMIT)
    status: Status | None = None

    _check_description = field_validator("description")(_description)
    _check_providers = field_validator("providers")(_providers)

    @field_validator("url", "event_types", "status")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Runs only for fields the caller sent: these may be left out, but not cleared.
        if value is None:
            raise ValueError("must not be null")
        return value

    @field_validator("event_types")
    @classmethod
    def _check_event_types(cls, value: list[str]) -> list[str]:
        return _event_types(value)

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class RotateSecret(_Body):
    expire_previous_in: int = Field(default=DEFAULT_OVERLAP, ge=0, le=MAX_OVERLAP)


def subscription_out(subscription: Subscription) -> dict[str, Any]:
    """The public view of a subscription: never a secret."""
    return {
        "id": subscription.id,
        "url": subscription.url,
        "event_types": subscription.event_types,
        "providers": subscription.providers,
        "description": subscription.description,
        "status": subscription.status,
        "disabled_reason": subscription.disabled_reason,
        "signature_type": subscription.signature_type,
        "public_key": subscription.public_key,
        "rate_limit_per_second": subscription.rate_limit_per_second,
        "created_at": isoformat(subscription.created_at),
        "updated_at": isoformat(subscription.updated_at),
    }
