"""Wire shapes of the admin API: the bulk-replay body, query filters, and the JSON of each row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from synchook.http.fields import IsoDateTime
from synchook.http.pagination import PageQuery
from synchook.http.wire import Timestamp, Wire
from synchook.outbox import Event
from synchook.timeutil import isoformat
from webhooks.delivery.stages import webhook_payload
from webhooks.models import (
    REPLAYABLE_STATUSES,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Replay,
    ReplayableStatus,
    ReplayKind,
    ReplayStatus,
)

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
    status: list[ReplayableStatus] | None = Field(default=None, min_length=1)
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
            "status": sorted({str(status) for status in self.status or REPLAYABLE_STATUSES}),
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


def _blank_is_absent(value: object) -> object:
    # `?status=` from a form with nothing chosen means no filter, as leaving the parameter out does.
    return None if value == "" else value


# The bound sits on the text itself: on the optional type it would also be asked of None (a TypeError, a 500).
FilterText = Annotated[
    Annotated[StrictStr, Field(max_length=_MAX_FILTER_LENGTH)] | None, BeforeValidator(_blank_is_absent)
]
QueryTime = Annotated[IsoDateTime | None, BeforeValidator(_blank_is_absent)]


class TimeRangeQuery(PageQuery):
    since: QueryTime = Field(default=None, description="Only items at or after")
    until: QueryTime = Field(default=None, description="Only items before")

    @field_validator("until")
    @classmethod
    def _after_since(cls, until: datetime | None, info: ValidationInfo) -> datetime | None:
        since = info.data.get("since")
        if until is not None and since is not None and until <= since:
            raise PydanticCustomError("range", "must be after since")
        return until

    @property
    def range(self) -> TimeRange:
        return TimeRange(since=self.since, until=self.until)


class EventsQuery(TimeRangeQuery):
    type: FilterText = Field(default=None, description="Only events of this type")


class DeliveriesQuery(TimeRangeQuery):
    status: Annotated[DeliveryStatus | None, BeforeValidator(_blank_is_absent)] = Field(
        default=None, description="Only deliveries in this status"
    )
    subscription_id: FilterText = Field(default=None, description="Only deliveries to this subscription")
    event_type: FilterText = Field(default=None, description="Only deliveries of this event type")

    def filters(self) -> DeliveryFilters:
        return DeliveryFilters(
            status=self.status, subscription_id=self.subscription_id, event_type=self.event_type, range=self.range
        )


class ReplaysQuery(PageQuery):
    kind: Annotated[ReplayKind | None, BeforeValidator(_blank_is_absent)] = Field(
        default=None, description="Only replays of this kind"
    )


class CreateReplayQuery(BaseModel):
    dry_run: bool = Field(default=False, description="Only count what would be sent (200, no replay)")


# --- Response shapes ---------------------------------------------------------------------------------


class EventView(Wire):
    """The webhook body of CONTRACT §5, as delivered."""

    id: str = Field(pattern="^evt_")
    type: str
    timestamp: Timestamp
    data: dict[str, Any]

    @classmethod
    def of(cls, event: Event) -> EventView:
        # The body a receiver gets, built where the sender builds it: one serialisation of §5.
        return cls.model_validate(webhook_payload(event.id, event.type, event.created_at, event.data))


class DeliveryView(Wire):
    id: str
    event_id: str
    event_type: str
    subscription_id: str
    status: DeliveryStatus
    attempt_count: int
    replays: int
    next_attempt_at: Timestamp | None
    last_status_code: int | None
    last_error: str | None
    cancel_reason: str | None
    created_at: Timestamp
    updated_at: Timestamp
    completed_at: Timestamp | None

    @classmethod
    def fields_of(cls, delivery: Delivery) -> dict[str, Any]:
        return {
            "id": delivery.id,
            "event_id": delivery.event_id,
            "event_type": delivery.event_type,
            "subscription_id": delivery.subscription_id,
            "status": DeliveryStatus(delivery.status),
            "attempt_count": delivery.attempt_count,
            "replays": delivery.replays,
            "next_attempt_at": delivery.next_attempt_at,
            "last_status_code": delivery.last_status_code,
            "last_error": delivery.last_error,
            "cancel_reason": delivery.cancel_reason,
            "created_at": delivery.created_at,
            "updated_at": delivery.updated_at,
            "completed_at": delivery.completed_at,
        }

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryView:
        return cls(**cls.fields_of(delivery))


class AttemptView(Wire):
    number: int = Field(ge=1)
    started_at: Timestamp
    duration_ms: int = Field(ge=0)
    status_code: int | None
    error: str | None
    response_body: str | None = Field(description="truncated to 4 KiB")

    @classmethod
    def of(cls, attempt: DeliveryAttempt) -> AttemptView:
        return cls(
            number=attempt.number,
            started_at=attempt.started_at,
            duration_ms=attempt.duration_ms,
            status_code=attempt.status_code,
            error=attempt.error,
            response_body=attempt.response_body,
        )


class DeliveryDetailView(DeliveryView):
    attempts: list[AttemptView]
    event: EventView | None

    @classmethod
    def of_detail(cls, delivery: Delivery, attempts: list[DeliveryAttempt], event: Event | None) -> DeliveryDetailView:
        return cls(
            **cls.fields_of(delivery),
            attempts=[AttemptView.of(attempt) for attempt in attempts],
            event=EventView.of(event) if event is not None else None,
        )


class DeliveryReplayed(DeliveryView):
    replay_id: str = Field(pattern="^rpl_")


class ReplayView(Wire):
    id: str = Field(pattern="^rpl_")
    kind: ReplayKind
    status: ReplayStatus
    requested_by: str
    criteria: dict[str, Any]
    matched: int = Field(ge=0)
    replayed: int = Field(ge=0)
    skipped: int = Field(ge=0)
    created_at: Timestamp
    updated_at: Timestamp
    completed_at: Timestamp | None

    @classmethod
    def fields_of(cls, replay: Replay) -> dict[str, Any]:
        return {
            "id": replay.id,
            "kind": replay.kind,
            "status": replay.status,
            "requested_by": replay.requested_by,
            "criteria": replay.criteria,
            "matched": replay.matched,
            "replayed": replay.replayed,
            "skipped": replay.skipped,
            "created_at": replay.created_at,
            "updated_at": replay.updated_at,
            "completed_at": replay.completed_at,
        }

    @classmethod
    def of(cls, replay: Replay) -> ReplayView:
        return cls(**cls.fields_of(replay))


class ReplayCreated(ReplayView):
    """202: the queued replay, with what its criteria matched."""

    deliveries: int = Field(ge=0, description="deliveries of the range that match")
    undelivered_events: int = Field(ge=0, description="events never delivered to `subscription_id`, sent too")


class ReplayPreview(Wire):
    """200 for `?dry_run=true`: what a replay would send, nothing queued."""

    id: None
    status: Literal["dry_run"]
    matched: int = Field(ge=0)
    criteria: dict[str, Any]
    deliveries: int = Field(ge=0)
    undelivered_events: int = Field(ge=0)
