"""The values one delivery passes through, each the result of one step and the input of the next.

``Claimed`` (a row this worker leases) becomes ``Cancelled``, ``Deferred`` or ``Ready`` (prepare);
a ``Ready`` one becomes ``Sent`` (or ``Deferred``: its endpoint turned slow); every ``Settled`` one is
written in a group commit, which yields ``Recorded``; what that leaves to do is ``Scheduled``.
Immutable: no step changes what an earlier one decided.

The values made per delivery (and per event: ``Body``) are NamedTuples, the per-batch ones frozen
dataclasses: a frozen dataclass sets each field through ``object.__setattr__``, and made ``Claimed``,
``Ready`` and ``Sent`` 2.9 + 1.6 + 0.9 µs per delivery, where the mutable record they replace took
0.6 µs; as NamedTuples they take 0.7 + 0.6 + 0.6 µs (timeit, Python 3.11).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from synchook.timeutil import isoformat
from webhooks.sender import Outcome
from webhooks.signing import Signer

if TYPE_CHECKING:
    from webhooks.delivery.lease import Lease

__all__ = [
    "Batch",
    "Body",
    "Cancelled",
    "Claimed",
    "Deferred",
    "Endpoint",
    "Ready",
    "Recorded",
    "Scheduled",
    "Sent",
    "Settled",
    "webhook_payload",
]


def webhook_payload(event_id: str, event_type: str, created_at: datetime, data: Any) -> dict[str, Any]:
    """The webhook body of CONTRACT §5 (id, type, timestamp, data): what is sent and what the API shows."""
    return {"id": event_id, "type": event_type, "timestamp": isoformat(created_at), "data": data}


# What json.dumps(payload, separators=(",", ":")) writes, without building an encoder per call (json.dumps does for
# any argument but the defaults): 13 -> 7 us a body (timeit, loaded machine); one body per event, and in (b) of the
# bench one event is one delivery.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class Body(NamedTuple):
    """An event's webhook body, serialised once: these exact bytes are signed and sent on every attempt."""

    workspace_id: str
    raw: bytes

    @classmethod
    def of(cls, event_id: str, workspace_id: str, event_type: str, created_at: datetime, data: Any) -> Body:
        payload = webhook_payload(event_id, event_type, created_at, data)
        return cls(workspace_id, _COMPACT.encode(payload).encode())


class Claimed(NamedTuple):
    """One delivery this worker holds the lease on, as it was when claimed."""

    id: str
    workspace_id: str
    event_id: str
    subscription_id: str
    status: str
    attempt_count: int
    replays: int
    last_status_code: int | None
    last_error: str | None
    number: int  # the attempt this would be, counted over the delivery's whole life

    @classmethod
    def inserted(cls, delivery_id: str, *, workspace_id: str, event_id: str, subscription_id: str) -> Claimed:
        """A row the fan-out has just inserted, already leased: first attempt, no replay."""
        return cls(delivery_id, workspace_id, event_id, subscription_id, "pending", 0, 0, None, None, 1)


class Endpoint(NamedTuple):
    """A subscription as the delivery path reads it, fresh at each claim: may it be sent to, where, signed how.

    A tuple of the row's columns, not an ORM object: a batch of 200 deliveries can name 200 subscriptions, and
    building ORM objects for them (a second query, ~60 µs each) was most of what a delivery to a large fan-out
    cost more than one to a small one (scenario (i)).
    """

    id: str
    workspace_id: str
    url: str
    status: str
    deleted_at: datetime | None
    disabled_reason: str | None
    rate_limit_per_second: int | None
    signature_type: str
    secret_sealed: str
    previous_secret_sealed: str | None
    previous_secret_expires_at: datetime | None

    @classmethod
    def of(cls, subscription: Any) -> Endpoint:
        """The same fields, read from a fan-out's match (``subscriptions.matching.Matched``), sent inline."""
        return cls(*(getattr(subscription, name) for name in cls._fields))


@dataclass(frozen=True, slots=True)
class Batch:
    """Deliveries held by one lease (sorted by id), with what sending them needs."""

    lease: Lease
    claimed: Sequence[Claimed]
    bodies: Mapping[str, Body]  # by event id
    subscriptions: Mapping[str, Endpoint]  # by subscription id
    now: datetime


class Cancelled(NamedTuple):
    """Must not be sent (subscription deleted or disabled, event not in its workspace)."""

    claimed: Claimed
    reason: str


class Deferred(NamedTuple):
    """Not sent now (rate limit, slow endpoint): due again ``until``, no attempt used."""

    claimed: Claimed
    until: datetime


class Ready(NamedTuple):
    """To be sent: the body, where to, signed how, after sleeping ``wait`` seconds (a reserved rate-limit slot)."""

    claimed: Claimed
    subscription: Endpoint
    body: Body
    signer: Signer
    wait: float = 0.0


class Sent(NamedTuple):
    """An attempt and what came of it (an attempt without a request too: a signing secret that cannot be opened)."""

    claimed: Claimed
    outcome: Outcome


Settled = Cancelled | Deferred | Sent


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a commit of outcomes leaves to do: deliveries to enqueue again (id → seconds from now), outbox
    events to hand off, and the count of each delivery outcome (for metrics)."""

    retries: Mapping[str, float]
    events: Sequence[str]
    outcomes: Mapping[str, int]

    @classmethod
    def merge(cls, parts: Sequence[Recorded]) -> Recorded:
        retries: dict[str, float] = {}
        events: list[str] = []
        outcomes: dict[str, int] = {}
        for part in parts:
            retries.update(part.retries)
            events.extend(part.events)
            for outcome, count in part.outcomes.items():
                outcomes[outcome] = outcomes.get(outcome, 0) + count
        return cls(retries, events, outcomes)


@dataclass(frozen=True, slots=True)
class Scheduled:
    """After commit: how many deliver jobs were enqueued for the retries, and whether the events were handed off."""

    retry_jobs: int
    events_handed_off: bool
