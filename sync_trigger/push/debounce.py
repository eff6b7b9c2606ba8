"""Debounced push syncs (CONTRACT §7): notifications for one calendar within `push_debounce` make one incremental
sync job of that calendar; one arriving while the calendar syncs makes exactly one follow-up after it.

The state lives in Redis, so every API and worker process agrees on it: one key per calendar,
``synchook:push:wanted:{cal_…}``, holding a random token while a sync of that calendar is wanted and not yet
covered by a queued job. The protocol:

- A notification ``SET wanted token NX``. Newly set: it enqueues ``push_sync(cal, token)`` deferred by the
  debounce; already set: the notification is coalesced into the sync that flag stands for.
- ``push_sync(cal, token)`` acts only while the flag still holds its token. Under the connection's row lock it
  looks for an active job covering the calendar: a *queued* one covers the notification (it has not read the
  provider yet), so the flag is dropped; a *running* one may have read the provider before the change, so the
  flag stays and a follow-up comes after it. With no such job it creates the push job (and its
  calendar.sync.queued event) and commits, then drops the flag, and only then enqueues the job's run.
- When any job finishes (sync_trigger/tasks.py), every flag still set on a calendar it covered gets a
  ``push_sync`` at once: the follow-up (a window still open is left to close by itself: the token names its
  end). A running job also has its flag checked back every `CHECK_BACK` seconds, so a worker killed between a
  job's end and that hook delays the follow-up instead of losing it.
- Push jobs of one calendar are at least MIN_GAP apart: a push_sync that comes sooner puts itself off until then,
  keeping the flag, so a notification storm makes a job at its start and one after it, not one per window.

Why this is race-free:
- Dropping a flag is compare-and-delete on its token, so a flag set again meanwhile (a newer notification,
  with its own push_sync) is never dropped by a push_sync of an older one.
- A notification coalesced into an existing flag (SET NX failed) arrived before that flag was dropped, which is
  before the push job's run was enqueued: the job has not read the provider yet, so it covers the notification.
- The finishing job commits its end before its hook reads the flags; a notification sets its flag before its
  push_sync reads the jobs. So either the hook sees the flag (and enqueues a push_sync that will find the job
  ended, or leaves it to the window's own push_sync, which runs later still), or the flag was set after the
  job's end was committed (and its own push_sync finds no running job).
- Two push_syncs of one calendar (the deferred one, a hook's, a check-back) serialise on the connection's row
  lock (SQLite: BEGIN IMMEDIATE serialises every writer): the second finds the first's queued job, or a
  changed flag, and does nothing.
- arq dedups by job id while a job is queued *or in progress* (our workers keep no results, keep_result=0):
  a hook reusing the deferred push_sync's id could be swallowed by that push_sync while it is deciding to wait.
  So every enqueue has an id of its own (token plus the finished job's id, or a random suffix).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from arq.connections import ArqRedis
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from sync_trigger import service
from sync_trigger.calendar_index.models import Calendar
from sync_trigger.models import ACTIVE_STATUSES, Connection, ConnectionStatus, JobStatus, SyncJob, SyncTrigger
from synchook.context import AppContext
from synchook.outbox import hand_off
from synchook.timeutil import utcnow

logger = logging.getLogger(__name__)

PUSH_SYNC_TASK = "push_sync"
WANTED_PREFIX = "synchook:push:wanted:"
# Set for MIN_GAP when a calendar's push job is queued: its next one waits until the key is gone.
RECENT_PREFIX = "synchook:push:recent:"
# At most one push job per calendar per MIN_GAP seconds. A window closes every `push_debounce`, so a notification
# storm (issue 20: 1,000 in one second, debounce 0.2 s) made a sync every 0.2 s, five for that second; with the gap
# it makes two (one at once, one for everything after it). A calendar edited now and then never meets the gap.
MIN_GAP = 1.0
# While a running job covers a wanted calendar, its flag is looked at again this often (the hook is the fast path).
CHECK_BACK = 5.0
# A flag outlives the longest wait it stands for (the debounce, then a whole running sync) by this margin;
# past it, a flag orphaned by a lost push_sync (Redis flushed its queue but kept keys) stops muting the calendar.
FLAG_MARGIN = 120

# Compare-and-delete: drop the flag only while it still holds the token that the caller acted on.
_DROP_IF_TOKEN = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Wanted(StrEnum):
    """What a notification did: started a debounce window, or joined the open one."""

    SCHEDULED = "scheduled"
    COALESCED = "coalesced"


def wanted_key(calendar_id: str) -> str:
    return WANTED_PREFIX + calendar_id


def flag_ttl(app: AppContext) -> int:
    return int(app.settings.push_debounce + app.settings.sync_job_timeout) + FLAG_MARGIN


def _redis(app: AppContext) -> ArqRedis:
    if app.redis is None:
        raise RuntimeError("push syncs need Redis")
    return app.redis


async def want_sync(app: AppContext, calendar_id: str) -> Wanted:
    """A notification for `calendar_id`: open its debounce window (one deferred push_sync) or join the open one.

    Raises what Redis raises when it is unreachable: the caller answers 503, so the provider retries.
    """
    redis = _redis(app)
    # The token names the window's end (Unix ms), before arq's own score for the deferred push_sync: that
    # push_sync always runs at or after it, by the same clock arq runs it by (see _window_open).
    closes_at = int(time.time() * 1000) + int(app.settings.push_debounce * 1000)
    token = f"{secrets.token_hex(8)}.{closes_at}"
    if not await redis.set(wanted_key(calendar_id), token, nx=True, ex=flag_ttl(app)):
        return Wanted.COALESCED
    try:
        await app.enqueue(
            PUSH_SYNC_TASK,
            calendar_id,
            token,
            _job_id=f"{PUSH_SYNC_TASK}:{calendar_id}:{token}",
            _defer_by=app.settings.push_debounce or None,
        )
    except BaseException:
        # No push_sync stands behind this flag: drop it, or it would mute the calendar until it expires.
        await drop_flag(redis, calendar_id, token)
        raise
    return Wanted.SCHEDULED


async def drop_flag(redis: ArqRedis, calendar_id: str, token: str) -> bool:
    return bool(await redis.eval(_DROP_IF_TOKEN, 1, wanted_key(calendar_id), token))  # type: ignore[misc]


class Outcome(StrEnum):
    """What one push_sync did."""

    QUEUED = "queued"  # a push job was created (and its run enqueued)
    STALE = "stale"  # the flag is gone or holds another token: nothing to do here
    EARLY = "early"  # the debounce window is still open: its own deferred push_sync comes at its end
    COVERED = "covered"  # a queued job covers the calendar: the flag was dropped
    WAITING = "waiting"  # a running job covers it: the follow-up comes when it ends
    SPACED = "spaced"  # its last push job was queued less than MIN_GAP ago: this push_sync runs again after it
    GONE = "gone"  # the calendar or its connection is gone or inactive: the flag was dropped


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    job: SyncJob | None = None
    event_id: str | None = None


async def push_sync(app: AppContext, calendar_id: str, token: str) -> Outcome:
    """The debounce window of `calendar_id` closed (or a covering job ended): queue its push job if still wanted."""
    redis = _redis(app)
    current = await redis.get(wanted_key(calendar_id))
    if current is None or current.decode() != token:
        return Outcome.STALE
    if _window_open(token):
        # A job of the calendar ended while this window is open: the window's own push_sync closes it.
        return Outcome.EARLY
    wait_ms = int(await redis.pttl(RECENT_PREFIX + calendar_id))
    if wait_ms > 0:
        # Too soon after the calendar's last push job: the flag stays (later notifications join it) until then.
        await _check_back(app, calendar_id, token, after=wait_ms / 1000)
        return Outcome.SPACED
    async with app.db.session() as session:
        decision = await _decide(session, calendar_id)
    if decision.outcome is Outcome.WAITING:
        # The flag lives as long as it waits (a long sync must not outlast it), and is looked at again.
        await redis.expire(wanted_key(calendar_id), flag_ttl(app))
        await _check_back(app, calendar_id, token)
        return decision.outcome
    if decision.job is not None:
        await redis.set(RECENT_PREFIX + calendar_id, 1, px=int(MIN_GAP * 1000))
    # After the commit and before the run is enqueued (see the module's docstring).
    await drop_flag(redis, calendar_id, token)
    if decision.job is not None and decision.event_id is not None:
        await hand_off(app.enqueue, [decision.event_id])
        await service.enqueue_job_run(app.enqueue, decision.job.id)
    return decision.outcome


def _window_open(token: str) -> bool:
    _, _, closes_at = token.rpartition(".")
    return closes_at.isdigit() and time.time() * 1000 < int(closes_at)


async def _decide(session: AsyncSession, calendar_id: str) -> Decision:
    calendar = await session.get(Calendar, calendar_id)
    if calendar is None:
        return Decision(Outcome.GONE)
    # The connection's row lock serialises push_syncs of its calendars with each other and with the background
    # scheduler's check (sync_trigger/background.py), so no two of them queue for the same calendar.
    connection = (
        await session.execute(select(Connection).where(col(Connection.id) == calendar.connection_id).with_for_update())
    ).scalar_one_or_none()
    if connection is None or connection.status != ConnectionStatus.ACTIVE:
        return Decision(Outcome.GONE)
    statuses = set(await _covering_statuses(session, calendar))
    if JobStatus.QUEUED in statuses:
        return Decision(Outcome.COVERED)
    if JobStatus.RUNNING in statuses:
        return Decision(Outcome.WAITING)
    job, event_id = service.add_incremental_job(
        session, connection=connection, trigger=SyncTrigger.PUSH, now=utcnow(), calendar_id=calendar.id
    )
    return Decision(Outcome.QUEUED, job=job, event_id=event_id)


async def _covering_statuses(session: AsyncSession, calendar: Calendar) -> list[str]:
    # Active jobs that sync this calendar: its own push job, its connection's background job, and on-demand
    # jobs of the workspace for every provider or for its provider.
    rows = await session.execute(
        select(col(SyncJob.status))
        .where(
            col(SyncJob.workspace_id) == calendar.workspace_id,
            col(SyncJob.status).in_(ACTIVE_STATUSES),
            or_(col(SyncJob.provider).is_(None), col(SyncJob.provider) == calendar.provider),
            or_(col(SyncJob.connection_id).is_(None), col(SyncJob.connection_id) == calendar.connection_id),
            or_(col(SyncJob.calendar_id).is_(None), col(SyncJob.calendar_id) == calendar.id),
        )
        .distinct()
    )
    return [str(status) for status in rows.scalars()]


async def _check_back(app: AppContext, calendar_id: str, token: str, *, after: float = CHECK_BACK) -> None:
    # An id of its own: this push_sync is still in progress, so arq would swallow a second enqueue of its id.
    await app.enqueue(
        PUSH_SYNC_TASK,
        calendar_id,
        token,
        _job_id=f"{PUSH_SYNC_TASK}:{calendar_id}:{token}:{secrets.token_hex(4)}",
        _defer_by=after,
    )


async def follow_up(app: AppContext, job: SyncJob) -> int:
    """After `job` ended (committed): a push_sync now for each calendar it covered that is still wanted.

    Returns how many were enqueued.
    """
    if app.redis is None:
        return 0
    async with app.db.session() as session:
        query = select(col(Calendar.id)).where(col(Calendar.workspace_id) == job.workspace_id)
        if job.calendar_id is not None:
            query = query.where(col(Calendar.id) == job.calendar_id)
        if job.connection_id is not None:
            query = query.where(col(Calendar.connection_id) == job.connection_id)
        if job.provider is not None:
            query = query.where(col(Calendar.provider) == job.provider)
        calendar_ids = [str(row) for row in (await session.execute(query)).scalars()]
    if not calendar_ids:
        return 0
    tokens = await app.redis.mget([wanted_key(c) for c in calendar_ids])
    enqueued = 0
    for calendar_id, token in zip(calendar_ids, tokens, strict=True):
        if token is None:
            continue
        token_text = token.decode()
        # Unique per (flag, finished job): see the module's docstring on arq's job-id dedup.
        await app.enqueue(
            PUSH_SYNC_TASK, calendar_id, token_text, _job_id=f"{PUSH_SYNC_TASK}:{calendar_id}:{token_text}:{job.id}"
        )
        enqueued += 1
    return enqueued
