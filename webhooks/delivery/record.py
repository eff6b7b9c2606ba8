"""Record: what became of a batch, written back in one unit of work: attempt rows, delivery rows, endpoint health.

Two forms, the same rows written. :func:`record_outcomes` is the general one, a transaction of bulk statements (one
update of the delivery rows, one insert of the attempts, the health updates): any outcome, either database.
:func:`record_successes` is PostgreSQL's for a flush's successful attempts (the steady state; a failure may start a
failing streak and disable the subscription, more than one statement): the three writes as the data-modifying parts
of one statement, atomic on its own, so no BEGIN and COMMIT either. A flush of a busy worker went from five round
trips (and their SQLAlchemy work on each side of each) to one. :func:`split_successes` divides a flush between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from subscriptions.service import endpoints_alive
from synchook.bulk import insert_rows, update_rows
from synchook.db import Database
from webhooks.delivery.stages import Cancelled, Deferred, Recorded, Sent, Settled
from webhooks.health import update_health
from webhooks.models import Delivery, DeliveryAttempt
from webhooks.retry import next_attempt_delay

__all__ = ["all_succeeded", "record_outcomes", "record_successes", "split_successes"]

_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_attempts = DeliveryAttempt.__table__  # type: ignore[attr-defined]
_ERROR_LIMIT = 1000
# The row key of an outcome update naming the lease it was sent under (checked, not set).
_HELD_BY = "held_by"

# Each group: the outcomes of one lease, and its owner.
Groups = Sequence[tuple[Sequence[Settled], str]]
K = TypeVar("K")


async def record_outcomes(
    session: AsyncSession,
    groups: Groups,
    *,
    schedule: tuple[float, ...],
    max_retry_after: float,
    disable_after: float,
    now: datetime,
) -> Recorded:
    """Write the outcomes of each group (one lease, by its owner) whose rows that lease still holds; the
    caller commits. Returns what to schedule after commit.
    """
    writes = _Writes.of(groups, schedule, max_retry_after, now)
    # Only the rows our lease still holds: if it ran out and another worker took one over, its record wins.
    # On PostgreSQL the owner is checked in the update's WHERE (one statement, no SELECT ... FOR UPDATE first);
    # in id order, the order the rows were locked in before, so two writers of the same rows queue, not deadlock.
    writes.updates.sort(key=lambda u: u["id"])
    recorded = set(await update_rows(session, _deliveries, writes.updates, guard=(_HELD_BY, "lease_owner")))
    await insert_rows(session, _attempts, [_attempt_row(sent) for sent in writes.sent if sent.claimed.id in recorded])
    succeeded = {s.claimed.subscription_id for s in writes.sent if s.claimed.id in recorded and s.outcome.ok}
    failed = {s.claimed.subscription_id for s in writes.sent if s.claimed.id in recorded and not s.outcome.ok}
    events: list[str] = []
    if succeeded or failed:
        events = await update_health(session, succeeded=succeeded, failed=failed, now=now, disable_after=disable_after)
    return writes.recorded(recorded, events)


def all_succeeded(groups: Groups) -> bool:
    """Whether every outcome of these is a successful attempt: then :func:`record_successes` may write them."""
    return all(_succeeded(settled) for batch, _ in groups for settled in batch)


def split_successes(groups: Sequence[tuple[K, list[Settled]]]) -> tuple[list[tuple[K, list[Settled]]], ...]:
    """A flush's ``(lease, outcomes)`` groups as two units: the successful attempts (what :func:`record_successes`
    may write) and the rest. A subscription with a failed attempt in the flush keeps all of its outcomes in the
    rest, so its health is worked out from all of them at once, as before; a healthy endpoint's successes no longer
    take the general path because another endpoint failed in the same flush (one hanging endpoint among ten made
    nearly every flush a transaction of five round trips: (d))."""
    failing = {
        settled.claimed.subscription_id
        for _, batch in groups
        for settled in batch
        if isinstance(settled, Sent) and not _succeeded(settled)
    }
    successes: list[tuple[K, list[Settled]]] = []
    rest: list[tuple[K, list[Settled]]] = []
    for key, batch in groups:
        ok: list[Settled] = []
        others: list[Settled] = []
        for settled in batch:
            succeeded = _succeeded(settled) and settled.claimed.subscription_id not in failing
            (ok if succeeded else others).append(settled)
        if ok:
            successes.append((key, ok))
        if others:
            rest.append((key, others))
    return successes, rest


def _succeeded(settled: Settled) -> bool:
    return isinstance(settled, Sent) and settled.outcome.ok and settled.outcome.error is None


async def record_successes(db: Database, groups: Groups, *, now: datetime) -> Recorded:
    """:func:`record_outcomes` for PostgreSQL and successful attempts (:func:`split_successes`), as one statement in
    autocommit (``Database.write_rows``): the same rows written, under the same lease check."""
    rows = [_success_row(cast(Sent, sent), lease_owner) for batch, lease_owner in groups for sent in batch]
    columns = list(zip(*rows, strict=True))
    written = await db.write_rows(
        _RECORD_SUCCESSES,
        {"now": now} | {_ARRAY + name: list(c) for name, c in zip(_SUCCESS_COLUMNS, columns, strict=True)},
    )
    recorded = {row[0] for row in written}
    return Recorded({}, [], {"succeeded": len(recorded)} if recorded else {})


@dataclass
class _Writes:
    """What a flush writes: each delivery row's new values (with the lease it was sent under), the attempts made,
    and when each row is due again."""

    updates: list[dict[str, Any]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    due: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, groups: Groups, schedule: tuple[float, ...], max_retry_after: float, now: datetime) -> _Writes:
        writes = cls()
        for batch, lease_owner in groups:
            for settled in batch:
                update, retry = _update_for(settled, schedule, max_retry_after, now)
                update[_HELD_BY] = lease_owner
                writes.updates.append(update)
                if retry is not None:
                    writes.due[settled.claimed.id] = retry
                if isinstance(settled, Sent):
                    writes.sent.append(settled)
        return writes

    def recorded(self, recorded: set[str], events: list[str]) -> Recorded:
        """What to do after commit, for the rows written (``recorded``: those the lease still held)."""
        outcomes: dict[str, int] = {}
        for update in self.updates:
            if update["id"] in recorded:
                outcomes[update["status"]] = outcomes.get(update["status"], 0) + 1
        retries = {delivery_id: delay for delivery_id, delay in self.due.items() if delivery_id in recorded}
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


# --- PostgreSQL's one statement -----------------------------------------------------------------------------------

# What varies between the successes of a flush, one array each; the rest is the same in every row (asyncpg encodes an
# array element by element, ~1-2 µs each: a column of one value is not sent as an array).
_SUCCESS_COLUMNS = {
    "id": _deliveries.c.id,
    _HELD_BY: _deliveries.c.lease_owner,
    "attempt_count": _deliveries.c.attempt_count,
    "status_code": _attempts.c.status_code,
    "number": _attempts.c.number,
    "started_at": _attempts.c.started_at,
    "duration_ms": _attempts.c.duration_ms,
    "response_body": _attempts.c.response_body,
}


_ARRAY = "each_"


def _success_row(sent: Sent, lease_owner: str) -> tuple[Any, ...]:
    """In the order of _SUCCESS_COLUMNS: the values record_outcomes writes for a success (_update_for, _attempt_row)."""
    outcome = sent.outcome
    claimed = sent.claimed
    return (
        claimed.id,
        lease_owner,
        claimed.attempt_count + 1,
        outcome.status_code,
        claimed.number,
        outcome.started_at,
        outcome.duration_ms,
        outcome.response_body,
    )


def _record_successes() -> sa.Select[Any]:
    # Parameter names unlike any column's: an UPDATE takes a parameter named as a column for a value to set it to.
    arrays = [sa.bindparam(_ARRAY + name, type_=postgresql.ARRAY(c.type)) for name, c in _SUCCESS_COLUMNS.items()]
    typed = [sa.column(name, column.type) for name, column in _SUCCESS_COLUMNS.items()]
    success = sa.func.unnest(*arrays).table_valued(*typed).render_derived(name="success")
    now = sa.bindparam("now", type_=_deliveries.c.updated_at.type)
    # The rows this flush's leases still hold, written as record_outcomes writes a success; the lease given back.
    recorded = (
        sa.update(_deliveries)
        .where(_deliveries.c.id == success.c.id, _deliveries.c.lease_owner == success.c[_HELD_BY])
        .values(
            status="succeeded",
            attempt_count=success.c.attempt_count,
            next_attempt_at=sa.null(),
            lease_until=sa.null(),
            lease_owner=sa.null(),
            last_status_code=success.c.status_code,
            last_error=sa.null(),
            cancel_reason=sa.null(),
            updated_at=now,
            completed_at=now,
        )
        .returning(
            _deliveries.c.id,
            _deliveries.c.workspace_id,
            _deliveries.c.subscription_id,
            *(success.c[name] for name in ("number", "started_at", "duration_ms", "status_code", "response_body")),
        )
        .cte("recorded")
    )
    attempted = (
        sa.insert(_attempts)
        .from_select(
            ["delivery_id", "workspace_id", "number", "started_at", "duration_ms", "status_code", "response_body"],
            sa.select(
                recorded.c.id,
                recorded.c.workspace_id,
                recorded.c.number,
                recorded.c.started_at,
                recorded.c.duration_ms,
                recorded.c.status_code,
                recorded.c.response_body,
            ),
        )
        .cte("attempted")
    )
    # A success proves its endpoint alive: the subscriptions' own statement (record_endpoint_health's), inside this one.
    alive = endpoints_alive(sa.select(recorded.c.subscription_id)).cte("alive")
    return sa.select(recorded.c.id).add_cte(attempted, alive)


# Built once, values bound at execution (see webhooks.delivery.claim); one SQL text, prepared once per connection.
_RECORD_SUCCESSES = _record_successes()
