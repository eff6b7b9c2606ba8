"""Record: what became of a batch, written back in one unit of work: attempt rows (one bulk insert),
delivery rows (one bulk update), endpoint health. Plain dicts and bulk statements: no ORM object per
delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from synchook.bulk import insert_rows, update_rows
from synchook.db import among
from webhooks.delivery.stages import Cancelled, Deferred, Recorded, Sent, Settled
from webhooks.health import update_health
from webhooks.models import Delivery, DeliveryAttempt
from webhooks.retry import next_attempt_delay

__all__ = ["record_outcomes"]

_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_attempts = DeliveryAttempt.__table__  # type: ignore[attr-defined]
_ERROR_LIMIT = 1000


async def record_outcomes(
    session: AsyncSession,
    groups: Sequence[tuple[Sequence[Settled], str]],
    *,
    schedule: tuple[float, ...],
    max_retry_after: float,
    disable_after: float,
    now: datetime,
) -> Recorded:
    """Write the outcomes of each group (one lease, by its owner) whose rows that lease still holds; the
    caller commits. Returns what to schedule after commit.
    """
    retries: dict[str, float] = {}
    outcomes: dict[str, int] = {}
    attempts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    succeeded: set[str] = set()
    failed: set[str] = set()
    owners = await _lease_owners(session, [s.claimed.id for batch, _ in groups for s in batch])
    for batch, lease_owner in groups:
        for settled in batch:
            claimed = settled.claimed
            if owners.get(claimed.id) != lease_owner:
                continue  # our lease ran out and another worker took over: its record wins
            update, retry = _update_for(settled, schedule, max_retry_after, now)
            updates.append(update)
            outcomes[update["status"]] = outcomes.get(update["status"], 0) + 1
            if retry is not None:
                retries[claimed.id] = retry
            if isinstance(settled, Sent):
                attempts.append(_attempt_row(settled))
                (succeeded if settled.outcome.ok else failed).add(claimed.subscription_id)
    await insert_rows(session, _attempts, attempts)
    await update_rows(session, _deliveries, updates)
    events: list[str] = []
    if succeeded or failed:
        events = await update_health(session, succeeded=succeeded, failed=failed, now=now, disable_after=disable_after)
    return Recorded(retries, events, outcomes)


def _attempt_row(sent: Sent) -> dict[str, Any]:
    outcome = sent.outcome
    return {
        "delivery_id": sent.claimed.id,
        "workspace_id": sent.claimed.workspace_id,
        "number": sent.claimed.number,
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
        .where(among(_deliveries.c.id, sorted(ids)))
        .with_for_update()
    )
    return {r[0]: r[1] for r in rows}


def _update_for(
    settled: Settled, schedule: tuple[float, ...], max_retry_after: float, now: datetime
) -> tuple[dict[str, Any], float | None]:
    """The delivery row's new values, and in how many seconds it is due again (None: not)."""
    claimed = settled.claimed
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
    retry: float | None = None
    if isinstance(settled, Cancelled):
        row.update(status="cancelled", cancel_reason=settled.reason, completed_at=now)
    elif isinstance(settled, Deferred):
        # Same status and count, a later due time, the lease given back.
        row["next_attempt_at"] = settled.until
        retry = max((settled.until - now).total_seconds(), 0.0)
    else:
        outcome = settled.outcome
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
                retry = delay
    if row["last_error"]:
        row["last_error"] = row["last_error"][:_ERROR_LIMIT]
    return row, retry
