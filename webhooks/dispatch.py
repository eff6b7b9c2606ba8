"""Fan-out: each outbox event becomes one delivery row per matching subscription, then ids go to the queue.

One transaction claims the events (``dispatched_at`` set only where still NULL, so concurrent relays
and sweepers hand each event out exactly once) and inserts their deliveries; only after commit are
jobs enqueued. A failed enqueue loses nothing: the delivery sweeper finds due rows.

A batch stops before an event that would take its transaction past ``_BATCH_ROWS`` rows: that event starts
the next batch. An event that matches more than a page of subscriptions (or whose fan-out already started) is
fanned out page by page instead: each page of subscriptions, in id order after the last one that has a
delivery of the event, is inserted and enqueued in a transaction of its own that holds the event's row lock,
and the last page sets ``dispatched_at``. Until
then the event stays undispatched, so a worker that dies mid-way leaves it to the outbox sweeper, which
resumes after the last committed page: every (event, subscription) delivery is made once, and memory holds
one page, not 100,000 rows. The events after it go in the next batch: id order is kept.

On a worker (given its ``WorkerContext``) the first batch skips the queue, as much of it as the worker's
inline budget allows (``Runtime.take_inline``): those rows are inserted already leased, and after commit
this job sends them itself with the bodies and subscriptions it holds. That saves a queue hop, a claim
transaction and a reload per delivery. If the job dies, the lease runs out and the sweeper re-enqueues
the rows, as for any deliver job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from subscriptions.matching import Matched, Scoped, in_scope, match_page, match_subscriptions, match_workspaces
from subscriptions.models import SubscriptionStatus
from synchook.bulk import insert_rows
from synchook.context import AppContext
from synchook.db import among, among_bound, unindexed
from synchook.outbox import Event
from synchook.timeutil import utcnow
from webhooks.delivery.lease import Lease
from webhooks.delivery.pipeline import run
from webhooks.delivery.prepare import slow_waves
from webhooks.delivery.rows import disabled_cancel_reason, new_delivery
from webhooks.delivery.runtime import WorkerContext
from webhooks.delivery.schedule import schedule_deliveries, schedule_due
from webhooks.delivery.stages import Batch, Body, Claimed, Endpoint
from webhooks.health import SUBSCRIPTION_DISABLED_EVENT
from webhooks.models import Delivery

__all__ = ["dispatch_events"]

logger = logging.getLogger(__name__)

_events = Event.__table__  # type: ignore[attr-defined]
_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_CLAIM_CHUNK = 500
# Subscriptions per page of a large fan-out: one transaction and what memory holds at a time.
_PAGE = 1_000
# Deliveries one batch transaction may insert; later events go in the next batch ((a)'s batches: 20 x 100).
_BATCH_ROWS = 5_000
_EVENT_COLUMNS = (
    _events.c.id,
    _events.c.workspace_id,
    _events.c.type,
    _events.c.provider,
    _events.c.target_subscription_id,
    _events.c.data,
    _events.c.created_at,
)

MatchKey = tuple[str, str, str | None, str | None]


@dataclass
class _Rows:
    """The deliveries one transaction inserts, and those of them this job sends itself after commit."""

    now: datetime
    lease: Lease
    # Whether rows may be sent inline (a batch's first, on a worker): each then takes one of the worker's inline
    # budget (webhooks.delivery.runtime.INLINE_ROWS), given back once sent.
    inline_allowed: bool
    worker: WorkerContext | None
    clock: float = field(default_factory=time.monotonic)
    rows: list[dict[str, Any]] = field(default_factory=list)
    inline: list[Claimed] = field(default_factory=list)
    bodies: dict[str, Body] = field(default_factory=dict)
    held: dict[str, Endpoint] = field(default_factory=dict)
    # Rows to endpoints this worker knows slow, and of them those put off at insert (seconds until due): see put_off.
    slow: list[dict[str, Any]] = field(default_factory=list)
    due_in: dict[str, float] = field(default_factory=dict)

    def add(self, event: Any, subscriptions: Sequence[Scoped]) -> None:
        """One row per subscription that wants the event (its filters matched; its scope is checked here).

        Rows are sent inline only if ``inline_allowed``: a batch's, whose matches are ``Matched`` rows with
        every field sending reads (a page's are only ``Scoped``).
        """
        event_id, workspace_id, event_type, _provider, target, data, created_at = event[:7]  # a claim's: + begun
        # A subscription is never told about its own disabling: it is the one endpoint known not to listen.
        skip = data.get("subscription_id") if event_type == SUBSCRIPTION_DISABLED_EVENT else None
        worker = self.worker
        for subscription in subscriptions:
            if subscription.id == skip or subscription.workspace_id != workspace_id:
                continue
            if target is None and not in_scope(subscription, event_type, data):
                continue
            row = new_delivery(
                workspace_id=workspace_id,
                event_id=event_id,
                event_type=event_type,
                subscription_id=subscription.id,
                now=self.now,
                # A disabled subscription still gets its rows, cancelled, for a later replay.
                cancel_reason=None
                if subscription.status == SubscriptionStatus.ENABLED
                else disabled_cancel_reason(subscription.disabled_reason),
            )
            self.rows.append(row)
            if row["status"] != "pending" or worker is None:
                continue
            if worker.runtime.is_slow(subscription.id, self.clock):
                self.slow.append(row)
            elif self.inline_allowed and worker.runtime.take_inline():
                # Sent by this job right after commit: leased at insert, no claim needed.
                row["lease_until"], row["lease_owner"] = self.lease.until, self.lease.owner
                self.inline.append(
                    Claimed.inserted(
                        row["id"], workspace_id=workspace_id, event_id=event_id, subscription_id=subscription.id
                    )
                )
                if subscription.id not in self.held:  # once per subscription, not per row (1.5 % of a worker in (b))
                    self.held[subscription.id] = Endpoint.of(cast("Matched", subscription))
                if event_id not in self.bodies:
                    self.bodies[event_id] = Body.of(event_id, workspace_id, event_type, created_at, data)

    def put_off(self) -> None:
        """The rows to endpoints this worker knows slow go in due when one of the endpoint's slots can take them
        (``slow_waves``), not now: due now, each was claimed by a deliver job only to be put off there, a claim and a
        write more than a healthy delivery costs. Those a free slot can take now stay due now."""
        if not self.slow or self.worker is None:
            return
        waves = slow_waves(self.worker.runtime, [row["subscription_id"] for row in self.slow], now=self.now)
        for index, until in waves.items():
            row = self.slow[index]
            row["next_attempt_at"] = until
            self.due_in[row["id"]] = (until - self.now).total_seconds()

    def queued(self) -> list[str]:
        """The pending rows due now and not sent inline: they go to deliver jobs."""
        due_later = self.due_in
        return [
            row["id"]
            for row in self.rows
            if row["status"] == "pending" and row["lease_until"] is None and row["id"] not in due_later
        ]


async def dispatch_events(app: AppContext, event_ids: Sequence[str], *, worker: WorkerContext | None) -> int:
    """Create the deliveries of these events (those not yet dispatched) and enqueue them; returns events claimed.

    With a ``worker`` (on a worker process) the first batch is sent by this call instead, within the worker's inline
    budget; without (no worker at hand: the CLI, tests) every delivery goes to the queue.
    """
    left = list(dict.fromkeys(event_ids))
    claimed: int | None = None
    while left:
        # Only the first batch is sent inline: this job should not hold its later rows' leases while it sends.
        count, left, page_first = await _dispatch_batch(app, left, worker, inline=claimed is None)
        claimed = count if claimed is None else claimed
        if left and page_first:
            await _fan_out_in_pages(app, left[0])
            left = left[1:]
    return claimed or 0


async def _dispatch_batch(
    app: AppContext, ids: list[str], worker: WorkerContext | None, *, inline: bool
) -> tuple[int, list[str], bool]:
    """One transaction: claim these events and insert the deliveries of those that fit; returns how many were
    claimed, the ones left (set back to undispatched, in id order), and whether the first of those goes page by
    page (else the batch was full: it starts the next batch)."""
    now = utcnow()
    lease = Lease(now + timedelta(seconds=app.settings.delivery_lease_seconds), [])
    # The whole batch is sent by this job if the worker's budget allows (webhooks.delivery.runtime.INLINE_ROWS): a
    # row sent inline costs no claim (an update of the row and its round trip), no deliver job and no reload. In (a)
    # of the benchmark on PostgreSQL, a limit of one deliver job's rows (200) left 90 % of the rows to claims.
    made = _Rows(now, lease, worker is not None and inline, worker)
    handed_over = False
    try:
        async with app.db.session() as session:
            events = await _claim(session, ids, now)
            left, page_first = await _fill_batch(session, events, made)
            if left:
                # Left undispatched until their deliveries are made: a replay waits for them, the sweeper resumes them.
                await session.execute(sa.update(_events).where(among(_events.c.id, left)).values(dispatched_at=None))
            made.put_off()
            await insert_rows(session, _deliveries, made.rows)
        pending = made.queued()
        logger.debug(
            "dispatched %d events into %d deliveries (%d sent inline)", len(events), len(made.rows), len(made.inline)
        )
        made.rows.clear()  # written: not held (about 1 KB a row) while this job sends
        made.slow.clear()
        if pending:
            await schedule_deliveries(app, pending)
        if made.due_in:
            await schedule_due(app, made.due_in)
        if made.inline and worker is not None:
            made.inline.sort(key=lambda c: c.id)
            lease.ids = [c.id for c in made.inline]
            taken, runtime = len(made.inline), worker.runtime  # of the inline budget
            handed_over = True  # run gives the budget back once the batch is over, sent or failed
            try:
                # On PostgreSQL in the background: a relay job ends once its fan-out has committed, not when its inline
                # sends end (a hanging endpoint's rows held every job of the worker until it was marked slow: (d) of the
                # benchmark went from 0.84-0.86 to 0.90-0.98 x). On SQLite the same change lowered (d) to 0.83-0.89 x in
                # paired runs: the healthy endpoints' rate beside a hanging one fell by a seventh, the calm rate did not
                # (docs/performance.md, seventeenth round). Why is not measured, so there a relay job still waits.
                await run(
                    worker,
                    Batch(lease=lease, claimed=made.inline, bodies=made.bodies, subscriptions=made.held, now=now),
                    background=app.db.dialect == "postgresql",
                    then=lambda: runtime.give_back_inline(taken),
                )
            except Exception as exc:
                # The events are dispatched and the rows stored: their lease runs out and the sweeper re-enqueues them.
                logger.warning(
                    "inline delivery of %d deliveries failed, left to the sweeper: %s", taken, type(exc).__name__
                )
    finally:
        if worker is not None and not handed_over:
            worker.runtime.give_back_inline(len(made.inline))
    return len(events), left, page_first


async def _claim(session: AsyncSession, ids: list[str], now: datetime) -> list[Any]:
    """Mark the undispatched ones among these events dispatched; their rows, sorted by id, each ending with
    ``begun``: whether the event already has deliveries (a paged fan-out that stopped mid-way, a killed worker)."""
    statement = _CLAIM_EVENTS[(await session.connection()).dialect.name == "postgresql"]
    events: list[Any] = []
    for start in range(0, len(ids), _CLAIM_CHUNK):
        result = await session.execute(statement, {"ids": ids[start : start + _CLAIM_CHUNK], "now": now})
        events.extend(result.all())
    # By the id alone (unique): comparing whole rows went through Row.__lt__, 2 % of a worker in (b).
    return sorted(events, key=itemgetter(0))


# Asked in the claim's RETURNING, one index probe per claimed event: it was a statement of its own, one round
# trip more per batch. Written with the tables named: SQLite's RETURNING drops SQLAlchemy's qualifiers, and an
# unqualified ``id`` inside the subquery would be the delivery's.
_BEGUN = (
    sa.exists()
    .select_from(_deliveries)
    .where(sa.literal_column("deliveries.event_id") == sa.literal_column("events.id"))
    .label("begun")
)

# Built once per database kind (SQLite, PostgreSQL), values bound at execution: see webhooks.delivery.claim.
_CLAIM_EVENTS = tuple(
    sa.update(_events)
    .where(among_bound(_events.c.id, "ids", postgres=postgres), unindexed(_events.c.dispatched_at).is_(None))
    .values(dispatched_at=sa.bindparam("now", type_=_events.c.dispatched_at.type))
    .returning(*_EVENT_COLUMNS, _BEGUN)
    for postgres in (False, True)
)


async def _fill_batch(session: AsyncSession, events: list[Any], made: _Rows) -> tuple[list[str], bool]:
    """Add the deliveries of the claimed events to ``made``, in id order, until one does not fit; returns that
    event's id and every later one's, and whether it goes page by page (more than a page of subscriptions, or a
    fan-out begun) rather than in the next batch."""
    started = {event[0] for event in events if event[-1]}
    # A batch of lifecycle events mostly shares a few (workspace, type, provider) keys: match each once.
    matches = await _match_across_workspaces(session, events)
    for index, event in enumerate(events):
        event_id, workspace_id, event_type, provider, target, *_ = event
        if event_id in started:
            return [later[0] for later in events[index:]], True
        key: MatchKey = (workspace_id, event_type, provider, target)
        subscriptions = matches.get(key)
        if subscriptions is None:
            subscriptions = matches[key] = await match_subscriptions(
                session,
                workspace_id=workspace_id,
                event_type=event_type,
                provider=provider,
                target_subscription_id=target,
                limit=_PAGE + 1,
            )
        if len(subscriptions) > _PAGE or (made.rows and len(made.rows) + len(subscriptions) > _BATCH_ROWS):
            return [later[0] for later in events[index:]], len(subscriptions) > _PAGE
        made.add(event, subscriptions)
    return [], False


async def _match_across_workspaces(session: AsyncSession, events: list[Any]) -> dict[MatchKey, list[Matched]]:
    """The matches of the batch's untargeted events whose (type, provider) several workspaces share, one statement
    for each (type, provider): a relay batch of 20 events in 20 workspaces made 20 statements. Keys left out (one
    workspace, a targeted event, or more matches than a batch can take) are matched one by one."""
    workspaces: dict[tuple[str, str | None], dict[str, None]] = {}
    for _id, workspace_id, event_type, provider, target, *_ in events:
        if target is None:
            workspaces.setdefault((event_type, provider), {})[workspace_id] = None
    matches: dict[MatchKey, list[Matched]] = {}
    for (event_type, provider), names in workspaces.items():
        if len(names) < 2:
            continue
        found = await match_workspaces(
            session, workspace_ids=list(names), event_type=event_type, provider=provider, limit=_BATCH_ROWS + _PAGE
        )
        if found is not None:
            for workspace_id in names:
                matches[(workspace_id, event_type, provider, None)] = found.get(workspace_id, [])
    return matches


async def _fan_out_in_pages(app: AppContext, event_id: str) -> None:
    """The deliveries of one undispatched event, a page of subscriptions per transaction, each enqueued after commit.

    Each page holds the event's row lock (PostgreSQL; SQLite's transactions take the one write lock) and starts
    after the last subscription that has a delivery of the event, so two dispatchers of the same event (a relay
    job and the sweeper) take turns and never insert a pair twice. The last page marks the event dispatched.
    """
    after: str | None = None
    while True:
        now = utcnow()
        made = _Rows(now, Lease(now, []), False, None)
        async with app.db.session() as session:
            page, after, last = await _next_page(session, event_id, after, made)
            await insert_rows(session, _deliveries, made.rows)
            if last:
                await session.execute(sa.update(_events).where(_events.c.id == event_id).values(dispatched_at=now))
        pending = made.queued()
        if pending:
            await schedule_deliveries(app, pending)
        logger.debug("fan-out of %s: a page of %d subscriptions, %d deliveries", event_id, page, len(made.rows))
        if last:
            return


async def _next_page(
    session: AsyncSession, event_id: str, after: str | None, made: _Rows
) -> tuple[int, str | None, bool]:
    """Add the next page's deliveries to ``made``; returns the subscriptions read, the new cursor, and whether
    it was the last page (also when another dispatcher has finished the event)."""
    event = (
        await session.execute(
            sa.select(*_EVENT_COLUMNS)
            .where(_events.c.id == event_id, _events.c.dispatched_at.is_(None))
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE: the lock its update of dispatched_at takes
        )
    ).first()
    if event is None:
        return 0, after, True
    done = await session.scalar(
        sa.select(sa.func.max(_deliveries.c.subscription_id)).where(_deliveries.c.event_id == event_id)
    )
    # Resume after whichever is further: this call's cursor (its last page may have made no rows), or the last
    # subscription given a delivery (by an earlier or a concurrent dispatcher).
    cursor = max((c for c in (after, done) if c is not None), default=None)
    _id, workspace_id, event_type, provider, target, _data, _created_at = event
    subscriptions = await match_page(
        session,
        workspace_id=workspace_id,
        event_type=event_type,
        provider=provider,
        target_subscription_id=target,
        after=cursor,
        limit=_PAGE + 1,
    )
    page = subscriptions[:_PAGE]
    made.add(event, page)
    last = len(subscriptions) <= _PAGE
    return len(page), (page[-1].id if page else cursor), last
