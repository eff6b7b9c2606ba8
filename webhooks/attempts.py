"""What sends did, written back in one unit of work: attempt rows (one bulk insert), delivery rows
(one bulk update), endpoint health. Plain dicts and bulk statements: no ORM object per delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from synchook.bulk import insert_rows, update_rows
from webhooks.health import update_health
from webhooks.models import Delivery, DeliveryAttempt
from webhooks.retry import next_attempt_delay
from webhooks.sender import Outcome

__all__ = ["Claimed", "Plan", "record_outcomes"]

_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_attempts = DeliveryAttempt.__table__  # type: ignore[attr-defined]
_ERROR_LIMIT = 1000


@dataclass(slots=True)
class Claimed:
    """One delivery this worker holds the lease on, and what became of it."""

    id: str
    workspace_id: str
    event_id: str
    subscription_id: str
    status: str
    attempt_count: int
    replays: int
    last_status_code: int | None
    last_error: str | None
    number: int = 0  # this attempt's number over the delivery's whole life
    outcome: Outcome | None = None
    cancel_reason: str | None = None
    defer_until: datetime | None = None  # rate limited: try again then, no attempt consumed


@dataclass(slots=True)
class Plan:
    """After commit: deliveries to enqueue again (id → seconds from now), and outbox events to hand off."""

    retries: dict[str, float] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)  # delivery outcome → count, for metrics


async def record_outcomes(
    session: AsyncSession,
    groups: Sequence[tuple[Sequence[Claimed], str]],
    *,
    schedule: tuple[float, ...],
    max_retry_after: float,
    disable_after: float,
    now: datetime,
) -> Plan:
    """Write the outcomes of each group (one lease, by its owner) whose rows that lease still holds; the
    caller commits. Returns what to schedule after commit.
    """
    plan = Plan()
    attempts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    succeeded: set[str] = set()
    failed: set[str] = set()
    owners = await _lease_owners(session, [c.id for batch, _ in groups for c in batch])
    for batch, lease_owner in groups:
        for claimed in batch:
            if owners.get(claimed.id) != lease_owner:
                continue  # our lease ran out and another worker took over: its record wins
            update = _update_for(claimed, schedule, max_retry_after, now, plan)
            updates.append(update)
            plan.outcomes[update["status"]] = plan.outcomes.get(update["status"], 0) + 1
            outcome = claimed.outcome
            if outcome is None:
                continue
            attempts.append(_attempt_row(claimed, outcome))
            (succeeded if outcome.ok else failed).add(claimed.subscription_id)
    await insert_rows(session, _attempts, attempts)
    await update_rows(session, _deliveries, updates)
    if succeeded or failed:
        plan.events = await update_health(
            session, succeeded=succeeded, failed=failed, now=now, disable_after=disable_after
        )
    return plan


def _attempt_row(claimed: Claimed, outcome: Outcome) -> dict[str, Any]:
    return {
        "delivery_id": claimed.id,
        "workspace_id": claimed.workspace_id,
        "number": claimed.number,
        "started_at": outcome.started_at,
        "duration_ms": outcome.duration_ms,
        "status_code": outcome.status_code,
        "error": outcome.error[:_ERROR_LIMIT] if outcome.error else None,
        "response_body": outcome.response_body,
    }


async def _lease_owners(session: AsyncSession, ids: list[str]) -> dict[str, str | None]:
    """Who holds each row's lease now; one query for every lease in the flush.

    FOR UPDATE (PostgreSQL) holds the rows until commit; SQLite's BEGIN IMMEDIATE already serialises writers.
    """
    rows = await session.execute(
        sa.select(_deliveries.c.id, _deliveries.c.lease_owner)
        .where(_deliveries.c.id.in_(sorted(ids)))
        .with_for_update()
    )
    return {r[0]: r[1] for r in rows}


def _update_for(
    claimed: Claimed, schedule: tuple[float, ...], max_retry_after: float, now: datetime, plan: Plan
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": claimed.id,
        "status": claimed.status,
        "attempt_count": claimed.attempt_count,
        "next_attempt_at": None,
        "lease_until": None,
        "lease_owner": None,
        "last_status_code": claimed.last_status_code,
        "last_error": claimed.last_error,
        "cancel_reason": None,
        "updated_at": now,
        "completed_at": None,
    }
    outcome = claimed.outcome
    if claimed.cancel_reason is not None:
        row.update(status="cancelled", cancel_reason=claimed.cancel_reason, completed_at=now)
    elif outcome is None:
        # Deferred by the rate limit: same status and count, a later due time, the lease given back.
        due = claimed.defer_until or now
        row["next_attempt_at"] = due
        plan.retries[claimed.id] = max((due - now).total_seconds(), 0.0)
    else:
        attempts = claimed.attempt_count + 1
        row.update(attempt_count=attempts, last_status_code=outcome.status_code, last_error=outcome.error)
        if outcome.ok:
            row.update(status="succeeded", last_error=None, completed_at=now)
        else:
            delay = next_attempt_delay(
                attempts, schedule, retry_after=outcome.retry_after, max_retry_after=max_retry_after
            )
            if delay is None:
                row.update(status="dead", completed_at=now)
            else:
                row.update(status="failed", next_attempt_at=now + timedelta(seconds=delay))
                plan.retries[claimed.id] = delay
    if row["last_error"]:
        row["last_error"] = row["last_error"][:_ERROR_LIMIT]
    return row
