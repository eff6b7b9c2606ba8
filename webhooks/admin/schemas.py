"""Wire shapes of the admin API: the bulk-replay body, query filters, and the JSON of each row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from synchook.errors import ValidationFailed
from synchook.http.fields import IsoDateTime, parse_iso8601
from synchook.outbox import Event
from synchook.timeutil import isoformat
from webhooks.delivery.stages import webhook_payload
from webhooks.models import DELIVERY_STATUSES, Delivery, DeliveryAttempt, Replay

REPLAYABLE_STATUSES: tuple[str, ...] = ("failed", "dead")
_MAX_FILTER_LENGTH = 100


EventTypeName = Annotated[StrictStr, Field(min_length=1, max_length=_MAX_FILTER_LENGTH)]


class BulkReplayBody(BaseModel):
    """`POST /v1/webhooks/replays`. With `subscription_id`, events of the range that never had a delivery to
    that subscription (it was created after them, or did not match them then) are sent to it too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: IsoDateTime
    until: IsoDateTime | None = None
    subscription_id: StrictStr | None = Field(default=None, max_length=40)
    event_types: list[EventTypeName] | None = Field(default=None, min_length=1, max_length=50)
    status: list[Literal["failed", "dead"]] | None = Field(default=None, min_length=1)
    # Past SYNCHOOK_REPLAY_MAX matches, the caller repeats the count it was told to show it means it.
    confirm_count: StrictInt | None = Field(default=None, ge=0)

    @field_validator("until")
    @classmethod
    def _range(cls, until: datetime | None, info: ValidationInfo) -> datetime | None:
        since = info.data.get("since")
        if until is not None and since is not None and until <= since:
            raise PydanticCustomError("range", "must be after since")
        return until

    def criteria(self) -> dict[str, Any]:
        """The JSON stored on the Replay row (the audit trail's "what")."""
        return {
            "since": isoformat(self.since),
            "until": isoformat(self.until),
            "subscription_id": self.subscription_id,
            "event_types": sorted(set(self.event_types)) if self.event_types else None,
            "status": sorted(set(self.status or REPLAYABLE_STATUSES)),
        }


@dataclass(frozen=True, slots=True)
class TimeRange:
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryFilters:
    status: str | None = None
    subscription_id: str | None = None
    event_type: str | None = None
    range: TimeRange = TimeRange()


def _param(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if len(value) > _MAX_FILTER_LENGTH:
        raise ValidationFailed(f"{name}: too long", field=name)
    return value


def _time_param(params: Mapping[str, str], name: str) -> datetime | None:
    value = _param(params, name)
    if value is None:
        return None
    try:
        return parse_iso8601(value)
    except ValueError as exc:
        raise ValidationFailed(f"{name}: {exc}", field=name) from None


def time_range(params: Mapping[str, str]) -> TimeRange:
    since, until = _time_param(params, "since"), _time_param(params, "until")
    if since is not None and until is not None and until <= since:
        raise ValidationFailed("until: must be after since", field="until")
    return TimeRange(since=since, until=until)


def event_type_filter(params: Mapping[str, str]) -> str | None:
    return _param(params, "type")


def delivery_filters(params: Mapping[str, str]) -> DeliveryFilters:
    status = _param(params, "status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise ValidationFailed(f"status: must be one of {', '.join(DELIVERY_STATUSES)}", field="status")
    return DeliveryFilters(
        status=status,
        subscription_id=_param(params, "subscription_id"),
        event_type=_param(params, "event_type"),
        range=time_range(params),
    )


def flag(params: Mapping[str, str], name: str) -> bool:
    value = (params.get(name) or "").lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValidationFailed(f"{name}: must be true or false", field=name)


def event_out(event: Event) -> dict[str, Any]:
    return webhook_payload(event.id, event.type, event.created_at, event.data)


def delivery_out(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "subscription_id": delivery.subscription_id,
        "status": delivery.status,
        "attempt_count": delivery.attempt_count,
        "replays": delivery.replays,
        "next_attempt_at": isoformat(delivery.next_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "cancel_reason": delivery.cancel_reason,
        "created_at": isoformat(delivery.created_at),
        "updated_at": isoformat(delivery.updated_at),
        "completed_at": isoformat(delivery.completed_at),
    }


def attempt_out(attempt: DeliveryAttempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "started_at": isoformat(attempt.started_at),
        "duration_ms": attempt.duration_ms,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "response_body": attempt.response_body,
    }


def replay_out(replay: Replay) -> dict[str, Any]:
    return {
        "id": replay.id,
        "kind": replay.kind,
        "status": replay.status,
        "requested_by": replay.requested_by,
        "criteria": replay.criteria,
        "matched": replay.matched,
        "replayed": replay.replayed,
        "skipped": replay.skipped,
        "created_at": isoformat(replay.created_at),
        "updated_at": isoformat(replay.updated_at),
        "completed_at": isoformat(replay.completed_at),
    }
