"""Request bodies and response shapes of the subscriptions API."""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator
from sqlalchemy import Row

from subscriptions.catalogue import PROVIDERS, is_known_pattern
from subscriptions.models import SignatureType, Subscription, SubscriptionStatus
from synchook.http.wire import Timestamp, Wire
from synchook.providers import Provider, ProviderName

if TYPE_CHECKING:  # the service imports the bodies above; the views only read its result's attributes
    from subscriptions.service import RevealedSecret

# In strict bodies an enum arrives as its value (JSON has no enums), as ProviderName does.
SignatureTypeName = Annotated[SignatureType, Strict(False)]
SubscriptionStatusName = Annotated[SubscriptionStatus, Strict(False)]

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


MAX_SCOPE_IDS = 100
ScopeIds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=40)]], Field(min_length=1, max_length=MAX_SCOPE_IDS)
]


def _scope_ids(value: list[str] | None) -> list[str] | None:
    # Without duplicates, in the caller's order: equal filters compare equal.
    return None if value is None else list(dict.fromkeys(value))


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateSubscription(_Body):
    url: str
    event_types: list[str] = Field(min_length=1, max_length=MAX_EVENT_TYPES)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    providers: list[ProviderName] | None = Field(default=None, min_length=1)
    connection_ids: ScopeIds | None = None
    calendar_ids: ScopeIds | None = None
    rate_limit_per_second: int | None = Field(default=None, gt=0, le=MAX_RATE_LIMIT)
    signature_type: SignatureTypeName = SignatureType.HMAC_SHA256

    _check_event_types = field_validator("event_types")(_event_types)
    _check_description = field_validator("description")(_description)
    _check_providers = field_validator("providers")(_providers)
    _check_scope = field_validator("connection_ids", "calendar_ids")(_scope_ids)


class UpdateSubscription(_Body):
    """Only the fields sent change; ``providers``, ``description`` and ``rate_limit_per_second`` may be null."""

    url: str | None = None
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=MAX_EVENT_TYPES)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    providers: list[ProviderName] | None = Field(default=None, min_length=1)
    connection_ids: ScopeIds | None = None
    calendar_ids: ScopeIds | None = None
    rate_limit_per_second: int | None = Field(default=None, gt=0, le=MAX_RATE_LIMIT)
    status: SubscriptionStatusName | None = None

    _check_description = field_validator("description")(_description)
    _check_providers = field_validator("providers")(_providers)
    _check_scope = field_validator("connection_ids", "calendar_ids")(_scope_ids)

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


# --- Response shapes ---------------------------------------------------------------------------------


class SubscriptionView(Wire):
    """The public view of a subscription: never a secret."""

    id: str = Field(pattern=r"^sub_[0-9A-HJKMNP-TV-Z]{26}$")
    url: str
    event_types: list[str]
    providers: list[Provider] | None
    connection_ids: list[str] | None
    calendar_ids: list[str] | None
    description: str | None
    status: SubscriptionStatus
    disabled_reason: str | None
    signature_type: SignatureType
    public_key: str | None = Field(description="whpk_… for ed25519 subscriptions")
    rate_limit_per_second: int | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def fields_of(cls, subscription: Subscription | Row[Any]) -> dict[str, Any]:
        return {
            "id": subscription.id,
            "url": subscription.url,
            "event_types": subscription.event_types,
            "providers": subscription.providers,
            "connection_ids": subscription.connection_ids,
            "calendar_ids": subscription.calendar_ids,
            "description": subscription.description,
            "status": subscription.status,
            "disabled_reason": subscription.disabled_reason,
            "signature_type": subscription.signature_type,
            "public_key": subscription.public_key,
            "rate_limit_per_second": subscription.rate_limit_per_second,
            "created_at": subscription.created_at,
            "updated_at": subscription.updated_at,
        }

    @classmethod
    def of(cls, subscription: Subscription | Row[Any]) -> SubscriptionView:
        """From the subscription, or its row (GET reads one row of the shown columns, no ORM object)."""
        return cls.model_validate(cls.fields_of(subscription))


class SecretView(Wire):
    """The signing secret (whsec_…, or whsk_… for ed25519) and, during a rotation, the previous one's end."""

    secret: str = Field(pattern="^(whsec|whsk)_")
    public_key: str | None
    previous_secret_expires_at: Timestamp | None
    previous_public_key: str | None

    @classmethod
    def fields_of(cls, view: RevealedSecret) -> dict[str, Any]:
        return {
            "secret": view.secret.reveal(),
            "public_key": view.public_key,
            "previous_secret_expires_at": view.previous_secret_expires_at,
            "previous_public_key": view.previous_public_key,
        }

    @classmethod
    def of(cls, view: RevealedSecret) -> SecretView:
        return cls.model_validate(cls.fields_of(view))


class SubscriptionCreated(SubscriptionView):
    """201: the subscription with its `whsec_` secret, shown here and at the secret endpoint only.

    An ed25519 subscription has no `secret` here: a receiver verifies `v1a` with `public_key` alone, and the
    `whsk_` signing key stays behind the secret endpoint.
    """

    secret: str | None = Field(default=None, pattern="^whsec_", exclude_if=lambda value: value is None)
    previous_secret_expires_at: Timestamp | None
    previous_public_key: str | None

    @classmethod
    def of_new(cls, subscription: Subscription, secret: RevealedSecret) -> SubscriptionCreated:
        fields = {**SubscriptionView.fields_of(subscription), **SecretView.fields_of(secret)}
        if subscription.signature_type == SignatureType.ED25519:
            fields["secret"] = None
        return cls.model_validate(fields)


class EventTypeView(Wire):
    name: str
    description: str
    json_schema: dict[str, Any] = Field(alias="schema", description="JSON Schema of the webhook body")


class TestEventSent(Wire):
    event_id: str = Field(pattern="^evt_")
