"""Replays: one delivery at once, or every match of a bulk request in batches; each one audited.

A bulk replay runs in two phases, one short transaction per batch, progress (counts and the cursor)
committed with the batch so a killed job resumes where it stopped:

1. deliveries of the workspace matching the criteria (``failed``/``dead`` by default, to a live,
   enabled subscription) get a fresh retry sequence (:func:`webhooks.delivery.rows.reset_for_replay`);
2. with a ``subscription_id``, every event of the range that subscription wants but never had a
   delivery to it (it was created after the event, or did not match it then) gets one now.

Neither phase can put a second in-flight delivery of an event to a subscription: phase 1 reuses the
existing row and skips rows that are pending or leased; phase 2 inserts only where no row exists, under
a lock on the subscription row that serialises concurrent replays to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from subscriptions.catalogue import CATALOGUE, patterns_for
from subscriptions.models import Subscription, SubscriptionStatus
from synchook.auth.models import Workspace
from synchook.context import AppContext
from synchook.errors import Conflict, DomainError, NotFound
from synchook.ids import looks_like_id, new_id
from synchook.outbox import Event
from synchook.timeutil import isoformat, parse_datetime, utcnow
from webhooks.admin.queries import find_delivery, id_bound
from webhooks.admin.schemas import BulkReplayBody
from webhooks.constants import BULK_REPLAY_TASK
from webhooks.delivery.rows import new_delivery, reset_for_replay
from webhooks.delivery.schedule import schedule_deliveries
from webhooks.models import ACTIVE_REPLAY_STATUSES, REPLAYABLE_STATUSES, Delivery, Replay, ReplayKind, ReplayStatus

__all__ = [
    "BATCH_SIZE",
    "BulkMatch",
    "ReplayInProgress",
    "ReplayTooLarge",
    "cancel_replay",
    "count_bulk_matches",
    "create_bulk_replay",
    "enqueue_bulk_replay",
    "get_replay",
    "list_replays",
    "replay_delivery",
    "resume_stalled_replays",
    "run_bulk_replay",
]

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
_EVENTS_PHASE = "evt_"  # cursor value that opens phase 2 (sorts before every event id)
_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_events = Event.__table__  # type: ignore[attr-defined]
_subscriptions = Subscription.__table__  # type: ignore[attr-defined]
_replays = Replay.__table__  # type: ignore[attr-defined]


# --- criteria --------------------------------------------------------------------------------------


def _catalogue_types() -> set[str]:
    return {event_type.name for event_type in CATALOGUE}


def expand_event_types(patterns: Iterable[str]) -> set[str]:
    """Names and wildcards (``calendar.sync.*``, ``*``) to concrete type names; unknown names pass as they are."""
    names = _catalogue_types()
    expanded: set[str] = set()
    for pattern in patterns:
        if pattern == "*" or pattern.endswith(".*"):
            expanded |= {name for name in names if pattern in patterns_for(name)}
        else:
            expanded.add(pattern)
    return expanded


@dataclass(frozen=True, slots=True)
class Criteria:
    """A Replay row's criteria, parsed once: what both phases select."""

    workspace_id: str
    since: datetime
    until: datetime
    statuses: tuple[str, ...]
    subscription_id: str | None
    event_types: frozenset[str] | None

    @classmethod
    def of(cls, replay: Replay) -> Criteria:
        raw = replay.criteria
        types = raw.get("event_types")
        return cls(
            workspace_id=replay.workspace_id,
            since=parse_datetime(raw["since"]),
            until=parse_datetime(raw["until"]),
            statuses=tuple(raw.get("status") or REPLAYABLE_STATUSES),
            subscription_id=raw.get("subscription_id"),
            event_types=frozenset(expand_event_types(types)) if types else None,
        )


def _delivery_conditions(criteria: Criteria) -> list[Any]:
    d, s = _deliveries.c, _subscriptions.c
    conditions = [
        d.workspace_id == criteria.workspace_id,
        d.status.in_(criteria.statuses),
        d.id >= id_bound("dlv", criteria.since),
        d.id < id_bound("dlv", criteria.until),
        s.deleted_at.is_(None),
        s.status == SubscriptionStatus.ENABLED,
    ]
    if criteria.subscription_id is not None:
        conditions.append(d.subscription_id == criteria.subscription_id)
    if criteria.event_types is not None:
        conditions.append(d.event_type.in_(sorted(criteria.event_types)))
    return conditions


def _deliveries_from() -> Any:
    return _deliveries.join(_subscriptions, _subscriptions.c.id == _deliveries.c.subscription_id)


def _wanted_types(subscription: Subscription, criteria: Criteria) -> list[str]:
    patterns = set(subscription.event_types or ["*"])
    wanted = {name for name in _catalogue_types() if patterns.intersection(patterns_for(name))}
    if criteria.event_types is not None:
        wanted &= criteria.event_types
    return sorted(wanted)


def _undelivered_conditions(subscription: Subscription, criteria: Criteria) -> list[Any]:
    """Events of the range this subscription wants (same rules as dispatch) with no delivery to it at all."""
    e, d = _events.c, _deliveries.c
    conditions = [
        e.workspace_id == criteria.workspace_id,
        e.id >= id_bound("evt", criteria.since),
        e.id < id_bound("evt", criteria.until),
        # Undispatched events still get their deliveries from the relay; targeted ones (tests) are not replayed.
        e.dispatched_at.is_not(None),
        e.target_subscription_id.is_(None),
        e.type.in_(_wanted_types(subscription, criteria)),
        ~sa.exists().where(d.event_id == e.id, d.subscription_id == subscription.id),
    ]
    if subscription.providers:
        conditions.append(sa.or_(e.provider.is_(None), e.provider.in_(subscription.providers)))
    return conditions


async def _live_subscription(session: AsyncSession, *, workspace_id: str, subscription_id: str) -> Subscription:
    if not looks_like_id(subscription_id, "sub"):
        raise NotFound("Subscription")
    subscription = (
        await session.execute(
            sa.select(Subscription).where(
                col(Subscription.workspace_id) == workspace_id, col(Subscription.id) == subscription_id
            )
        )
    ).scalar_one_or_none()
    if subscription is None:
        raise NotFound("Subscription")
    _check_sendable(subscription)
    return subscription


def _check_sendable(subscription: Subscription) -> None:
    if subscription.deleted_at is not None:
        raise Conflict(
            f"Subscription {subscription.id} was deleted: nothing can be sent to it", code="subscription_deleted"
        )
    if subscription.status != SubscriptionStatus.ENABLED:
        raise Conflict(
            f"Subscription {subscription.id} is disabled; enable it (PATCH status=enabled) before replaying",
            code="subscription_disabled",
        )


# --- one delivery ----------------------------------------------------------------------------------


async def replay_delivery(
    app: AppContext, *, workspace_id: str, delivery_id: str, requested_by: str
) -> tuple[Replay, Delivery]:
    """Start a fresh retry sequence for one delivery (same event, so the same webhook-id); audited.

    Commits, then enqueues the delivery: two steps, so it takes one explicit context, `app`, not a session."""
    now = utcnow()
    async with app.db.session() as session:
        delivery = await find_delivery(session, workspace_id=workspace_id, delivery_id=delivery_id)
        subscription = await session.get(Subscription, delivery.subscription_id)
        if subscription is None:
            raise Conflict("The delivery's subscription no longer exists", code="subscription_deleted")
        _check_sendable(subscription)
        reset = await reset_for_replay(session, [delivery.id], workspace_id=workspace_id, now=now)
        if not reset:
            raise Conflict(
                f"Delivery {delivery.id} is already pending or being sent; wait for it to finish",
                code="replay_in_progress",
            )
        replay = Replay(
            id=new_id("rpl"),
            workspace_id=workspace_id,
            kind=ReplayKind.SINGLE,
            requested_by=requested_by,
            criteria={
                "delivery_id": delivery.id,
                "event_id": delivery.event_id,
                "subscription_id": delivery.subscription_id,
                "previous_status": delivery.status,
            },
            status=ReplayStatus.COMPLETED,
            matched=1,
            replayed=1,
            cursor=delivery.id,
            created_at=now,
            updated_at=now,
            completed_at=now,
        )
        session.add(replay)
        await session.flush()
        await session.refresh(delivery)
    await schedule_deliveries(app, reset)
    logger.info("delivery %s replayed by %s (%s)", delivery.id, requested_by, replay.id)
    return replay, delivery


# --- bulk ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BulkMatch:
    deliveries: int
    undelivered_events: int

    @property
    def total(self) -> int:
        return self.deliveries + self.undelivered_events


def _criteria_for(body: BulkReplayBody, *, now: datetime) -> dict[str, Any]:
    criteria = body.criteria()
    # An open range is closed at the request time, so what the job selects is what was counted.
    criteria["until"] = criteria["until"] or isoformat(now)
    return criteria


async def count_bulk_matches(session: AsyncSession, criteria: Criteria) -> BulkMatch:
    """How many deliveries phase 1 would replay and how many events phase 2 would send."""
    deliveries = await session.scalar(
        sa.select(sa.func.count()).select_from(_deliveries_from()).where(*_delivery_conditions(criteria))
    )
    undelivered = 0
    if criteria.subscription_id is not None:
        subscription = await session.get(Subscription, criteria.subscription_id)
        if subscription is not None:
            undelivered = (
                await session.scalar(
                    sa.select(sa.func.count())
                    .select_from(_events)
                    .where(*_undelivered_conditions(subscription, criteria))
                )
                or 0
            )
    return BulkMatch(deliveries=int(deliveries or 0), undelivered_events=int(undelivered))


class ReplayTooLarge(DomainError):
    code = "replay_too_large"
    status = 422

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            f"The replay matches {count} deliveries, more than the limit of {limit} (SYNCHOOK_REPLAY_MAX); "
            f"send confirm_count: {count} to replay them all"
        )
        self.count = count
        self.limit = limit


class ReplayInProgress(Conflict):
    code = "replay_in_progress"

    def __init__(self, replay_id: str) -> None:
        super().__init__(
            f"Bulk replay {replay_id} of this workspace is still queued or running; wait for it or cancel it"
        )
        self.replay_id = replay_id


async def create_bulk_replay(
    session: AsyncSession,
    *,
    workspace_id: str,
    body: BulkReplayBody,
    requested_by: str,
    replay_max: int,
    dry_run: bool = False,
) -> tuple[Replay, BulkMatch]:
    """Record a bulk replay (status ``queued``) with its match count; with ``dry_run`` only count.

    More than ``replay_max`` matches needs ``body.confirm_count`` equal to the count; one bulk replay of a
    workspace is queued or running at a time. The caller commits, then calls :func:`enqueue_bulk_replay`.
    """
    now = utcnow()
    if body.subscription_id is not None:
        await _live_subscription(session, workspace_id=workspace_id, subscription_id=body.subscription_id)
    replay = Replay(
        id=new_id("rpl"),
        workspace_id=workspace_id,
        kind=ReplayKind.BULK,
        requested_by=requested_by,
        criteria=_criteria_for(body, now=now),
        status=ReplayStatus.QUEUED,
        created_at=now,
        updated_at=now,
    )
    match = await count_bulk_matches(session, Criteria.of(replay))
    replay.matched = match.total
    if dry_run:
        return replay, match
    if match.total > replay_max and body.confirm_count != match.total:
        raise ReplayTooLarge(match.total, replay_max)
    # Counted before the lock: the count can be slow and needs none; the check and the insert below need it.
    await _lock_workspace(session, workspace_id)
    active = await _active_bulk_replay(session, workspace_id)
    if active is not None:
        raise ReplayInProgress(active)
    session.add(replay)
    await session.flush()
    logger.info("bulk replay %s by %s: %d matched", replay.id, requested_by, replay.matched)
    return replay, match


async def _lock_workspace(session: AsyncSession, workspace_id: str) -> None:
    # PostgreSQL: the workspace row lock makes "no active bulk replay, then insert" atomic against a
    # concurrent request, which waits here and then sees this one's row. SQLite renders no FOR UPDATE, but
    # every session there is BEGIN IMMEDIATE, so writers run one at a time already.
    await session.execute(sa.select(col(Workspace.id)).where(col(Workspace.id) == workspace_id).with_for_update())


async def _active_bulk_replay(session: AsyncSession, workspace_id: str) -> str | None:
    r = _replays.c
    return await session.scalar(
        sa.select(r.id)
        .where(r.workspace_id == workspace_id, r.kind == ReplayKind.BULK, r.status.in_(ACTIVE_REPLAY_STATUSES))
        .order_by(r.id)
        .limit(1)
    )


async def enqueue_bulk_replay(app: AppContext, replay_id: str) -> bool:
    """Best effort: a replay left queued is picked up again by the resume cron."""
    try:
        await app.enqueue(BULK_REPLAY_TASK, replay_id, _job_id=f"{BULK_REPLAY_TASK}:{replay_id}")
        return True
    except Exception as exc:
        logger.warning("bulk replay %s not enqueued (the resume cron will): %s", replay_id, type(exc).__name__)
        return False


@dataclass
class _Step:
    scheduled: list[str] = field(default_factory=list)
    done: bool = False


async def run_bulk_replay(app: AppContext, replay_id: str, *, batch_size: int = BATCH_SIZE) -> Replay | None:
    """Work through a bulk replay batch by batch until it is done or cancelled; returns its final row.

    One transaction per batch, each followed by enqueueing its deliveries: an orchestration, so it takes one
    explicit context, `app`, and opens each unit of work itself."""
    while True:
        async with app.db.session() as session:
            replay = await _lock_replay(session, replay_id)
            if replay is None or replay.status not in ACTIVE_REPLAY_STATUSES:
                return replay
            step = await _advance(session, replay, batch_size=batch_size, now=utcnow())
        # After commit: a lost enqueue is repaired by the delivery sweeper (the rows are due now).
        if step.scheduled:
            await schedule_deliveries(app, step.scheduled)
        if step.done:
            logger.info("bulk replay %s: %s (%d replayed)", replay.id, replay.status, replay.replayed)
            return replay


async def _lock_replay(session: AsyncSession, replay_id: str) -> Replay | None:
    # FOR UPDATE (PostgreSQL): a cancel waits for the batch in progress and the next batch sees it.
    query = (
        sa.select(Replay).where(col(Replay.id) == replay_id).with_for_update().execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def _advance(session: AsyncSession, replay: Replay, *, batch_size: int, now: datetime) -> _Step:
    criteria = Criteria.of(replay)
    replay.status = ReplayStatus.RUNNING
    replay.updated_at = now
    step = _Step()
    if replay.cursor is None or replay.cursor.startswith("dlv_"):
        await _replay_deliveries(session, replay, criteria, step, batch_size=batch_size, now=now)
    else:
        await _send_undelivered(session, replay, criteria, step, batch_size=batch_size, now=now)
    if step.done:
        replay.status = ReplayStatus.COMPLETED
        replay.completed_at = now
        # Rows that changed status between the count and the run were matched but not replayed.
        replay.matched = max(replay.matched, replay.replayed + replay.skipped)
        replay.skipped = replay.matched - replay.replayed
    return step


async def _replay_deliveries(
    session: AsyncSession, replay: Replay, criteria: Criteria, step: _Step, *, batch_size: int, now: datetime
) -> None:
    d = _deliveries.c
    query = sa.select(d.id).select_from(_deliveries_from()).where(*_delivery_conditions(criteria))
    if replay.cursor is not None:
        query = query.where(d.id > replay.cursor)
    query = query.order_by(d.id).limit(batch_size).with_for_update(of=_deliveries)
    ids = [row[0] for row in await session.execute(query)]
    if ids:
        reset = await reset_for_replay(session, ids, workspace_id=criteria.workspace_id, now=now)
        step.scheduled.extend(reset)
        replay.replayed += len(reset)
        replay.skipped += len(ids) - len(reset)
        replay.cursor = ids[-1]
    if len(ids) < batch_size:
        if criteria.subscription_id is None:
            step.done = True
        else:
            replay.cursor = _EVENTS_PHASE


async def _send_undelivered(
    session: AsyncSession, replay: Replay, criteria: Criteria, step: _Step, *, batch_size: int, now: datetime
) -> None:
    assert criteria.subscription_id is not None
    # The row lock serialises every replay to this subscription: the NOT EXISTS below sees their inserts.
    subscription = (
        await session.execute(
            sa.select(Subscription)
            .where(col(Subscription.id) == criteria.subscription_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if subscription is None or subscription.deleted_at is not None or subscription.status != SubscriptionStatus.ENABLED:
        step.done = True  # nothing more can be sent to it; what is left counts as skipped
        return
    e = _events.c
    rows = (
        await session.execute(
            sa.select(e.id, e.type)
            .where(*_undelivered_conditions(subscription, criteria), e.id > (replay.cursor or _EVENTS_PHASE))
            .order_by(e.id)
            .limit(batch_size)
            # FOR KEY SHARE until commit: retention, which locks an event before it deletes it, cannot take one
            # these deliveries are about to refer to (the deliveries have no foreign key to do it; webhooks.models).
            .with_for_update(read=True, key_share=True)
        )
    ).all()
    if rows:
        inserts = [
            new_delivery(
                workspace_id=subscription.workspace_id,
                event_id=event_id,
                event_type=event_type,
                subscription_id=subscription.id,
                now=now,
                replays=1,
            )
            for event_id, event_type in rows
        ]
        await session.execute(sa.insert(_deliveries), inserts)
        step.scheduled.extend(row["id"] for row in inserts)
        replay.replayed += len(inserts)
        replay.cursor = rows[-1][0]
    if len(rows) < batch_size:
        step.done = True


# --- audit trail -----------------------------------------------------------------------------------


async def get_replay(session: AsyncSession, *, workspace_id: str, replay_id: str) -> Replay:
    if not looks_like_id(replay_id, "rpl"):
        raise NotFound("Replay")
    replay = (
        await session.execute(
            sa.select(Replay).where(col(Replay.workspace_id) == workspace_id, col(Replay.id) == replay_id)
        )
    ).scalar_one_or_none()
    if replay is None:
        raise NotFound("Replay")
    return replay


async def list_replays(
    session: AsyncSession, *, workspace_id: str, limit: int, before_id: str | None, kind: str | None = None
) -> list[Replay]:
    """The audit trail: every replay of the workspace (single and bulk), newest first."""
    query = sa.select(Replay).where(col(Replay.workspace_id) == workspace_id)
    if kind is not None:
        query = query.where(col(Replay.kind) == kind)
    if before_id is not None:
        query = query.where(col(Replay.id) < before_id)
    rows = await session.execute(query.order_by(col(Replay.id).desc()).limit(limit))
    return list(rows.scalars())


async def cancel_replay(session: AsyncSession, *, workspace_id: str, replay_id: str) -> Replay:
    """Stop a queued or running bulk replay after its current batch; what it already replayed stays replayed."""
    replay = await get_replay(session, workspace_id=workspace_id, replay_id=replay_id)
    now = utcnow()
    result = await session.execute(
        sa.update(_replays)
        .where(_replays.c.id == replay.id, _replays.c.status.in_(ACTIVE_REPLAY_STATUSES))
        .values(status=ReplayStatus.CANCELLED, updated_at=now, completed_at=now)
    )
    if not getattr(result, "rowcount", 0):
        await session.refresh(replay)
        raise Conflict(f"Replay {replay.id} is already {replay.status}", code="replay_finished")
    await session.refresh(replay)
    logger.info("bulk replay %s cancelled", replay.id)
    return replay


async def resume_stalled_replays(app: AppContext, *, stalled_after: timedelta = timedelta(seconds=60)) -> int:
    """Enqueue again every active bulk replay untouched for a while (lost with Redis, or its worker died)."""
    cutoff = utcnow() - stalled_after
    async with app.db.session() as session:
        ids = [
            row[0]
            for row in await session.execute(
                sa.select(_replays.c.id)
                .where(_replays.c.status.in_(ACTIVE_REPLAY_STATUSES), _replays.c.updated_at < cutoff)
                .order_by(_replays.c.id)
                .limit(100)
            )
        ]
    for replay_id in ids:
        await enqueue_bulk_replay(app, replay_id)
    return len(ids)
