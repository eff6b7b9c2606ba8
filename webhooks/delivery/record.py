"""Record: what became of a batch, written back in one unit of work: attempt rows (one bulk insert),
delivery rows (one bulk update), endpoint health. Plain dicts and bulk statements: no ORM object per
delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from synchook.bulk import insert_rows, update_rows
from webhooks.delivery.stages import Cancelled, Deferred, Recorded, Sent, Settled
from webhooks.health import update_health
from webhooks.models import Delivery, DeliveryAttempt
from webhooks.retry import next_attempt_delay

__all__ = ["record_outcomes"]

_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_attempts = DeliveryAttempt.__table__  # type: ignore[attr-defined]
_ERROR_LIMIT = 1000
# The row key of an outcome update naming the lease it was sent under (checked, not set).
_HELD_BY = "held_by"


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
    updates: list[dict[str, Any]] = []
    due: dict[str, float] = {}
    for batch, lease_owner in groups:
        for settled in batch:
            update, retry = _update_for(settled, schedule, max_retry_after, now)
            update[_HELD_BY] = lease_owner
            updates.append(update)
            if retry is not None:
                due[settled.claimed.id] = retry
    # Only the rows our lease still holds: if it ran out and another worker took one over, its record wins.
    # On PostgreSQL the owner is checked in the update's WHERE (one statement, no SELECT ... FOR UPDATE first);
    # in id order, the order the rows were locked in before, so two writers of the same rows queue, not deadlock.
    updates.sort(key=lambda u: u["id"])
    recorded = set(await update_rows(session, _deliveries, updates, guard=(_HELD_BY, "lease_owner")))
    outcomes: dict[str, int] = {}
    for update in updates:
        if update["id"] in recorded:
            outcomes[update["status"]] = outcomes.get(update["status"], 0) + 1
    retries = {delivery_id: delay for delivery_id, delay in due.items() if delivery_id in recorded}
    attempts: list[dict[str, Any]] = []
    succeeded: set[str] = set()
    failed: set[str] = set()
    for batch, _ in groups:
        for settled in batch:
            if isinstance(settled, Sent) and settled.claimed.id in recorded:
                attempts.append(_attempt_row(settled))
                (succeeded if settled.outcome.ok else failed).add(settled.claimed.subscription_id)
    await insert_rows(session, _attempts, attempts)
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
