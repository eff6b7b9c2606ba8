"""Sync jobs: accept on-demand requests under the hourly cap, and move jobs through their lifecycle.

Every state change writes its lifecycle event to the outbox in the same transaction; callers hand the
returned event ids to the queue after commit.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from arq.connections import ArqRedis
from sqlalchemy import (
    Boolean,
    CursorResult,
    Integer,
    Result,
    Row,
    Select,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.elements import BindParameter
from sqlmodel import col

from sync_trigger.calendar_index.changes import latest_sequence
from sync_trigger.errors import WINDOW, NoConnection, SyncCapReached, SyncInProgress, SyncQuota
from sync_trigger.models import ACTIVE_STATUSES, Connection, ConnectionStatus, NewJob, SyncJob, SyncTrigger
from sync_trigger.schemas import SyncAccepted, TriggerSyncBody
from synchook import idempotency
from synchook.crypto import SecretBox
from synchook.db import Database, DriverTransaction, UTCDateTime
from synchook.enqueue import QueuedJob, enqueue_jobs
from synchook.errors import NotFound, ValidationFailed
from synchook.ids import looks_like_id, new_id
from synchook.outbox import RELAY_TASK, Enqueue, Event, record_event
from synchook.pipelined import PipelinedRedis
from synchook.queue import QUEUE_NAME
from synchook.reseal import ResealCount, reseal_columns
from synchook.timeutil import as_utc, isoformat, utcnow

logger = logging.getLogger(__name__)

RUN_SYNC_TASK = "run_sync_job"
IDEMPOTENCY_SCOPE = "calendar.sync"
DEFAULT_LOOKBACK = timedelta(days=90)
DEFAULT_LOOKAHEAD = timedelta(days=180)
# A job interrupted this many times (worker killed mid-sync) is failed rather than retried forever.
MAX_ATTEMPTS = 5


# --- Views -----------------------------------------------------------------------------------------


def job_event_data(job: SyncJob | NewJob) -> dict[str, Any]:
    """The `data` of every calendar.sync.* event (CONTRACT §5)."""
    return {
        "job_id": job.id,
        "workspace_id": job.workspace_id,
        "mode": job.mode,
        "trigger": job.trigger,
        "provider": job.provider,
        # What the job covers beyond its provider: one connection (a poll), one calendar (a push sync), or
        # null (every connection of the provider); subscription filters match on them (§4.2).
        "connection_id": job.connection_id,
        "calendar_id": job.calendar_id,
        "status": job.status,
        "queued_at": isoformat(job.queued_at),
        "started_at": isoformat(job.started_at),
        "completed_at": isoformat(job.completed_at),
        # null until the job finishes: there is nothing to count before.
        "stats": dict(job.stats) if job.stats is not None else None,
        "error": dict(job.error) if job.error is not None else None,
    }


# --- Triggering ------------------------------------------------------------------------------------


def add_incremental_job(
    session: AsyncSession,
    *,
    connection: Connection,
    trigger: SyncTrigger,
    now: datetime,
    calendar_id: str | None = None,
) -> tuple[SyncJob, str]:
    """A queued incremental job of one connection (a poll) or one of its calendars (a push sync), and the id of
    its calendar.sync.queued event, both in the caller's transaction; the caller hands both off after commit."""
    job = SyncJob(
        id=new_id("cal_sync"),
        workspace_id=connection.workspace_id,
        mode="incremental",
        provider=connection.provider,
        trigger=trigger,
        connection_id=connection.id,
        calendar_id=calendar_id,
        status="queued",
        queued_at=now,
    )
    return job, queue_job(session, job, now=now)


def queue_job(session: AsyncSession, job: SyncJob, *, now: datetime) -> str:
    """Add a queued job and its calendar.sync.queued event to the caller's transaction; the event's id, which the
    caller hands off after commit with the job itself."""
    session.add(job)
    event = record_event(
        session,
        workspace_id=job.workspace_id,
        type="calendar.sync.queued",
        provider=job.provider,
        data=job_event_data(job),
        at=now,
    )
    return event.id


@dataclass(frozen=True, slots=True)
class Accepted:
    status_code: int
    data: dict[str, Any]
    quota: SyncQuota
    replayed: bool = False


def resolve_window(body: TriggerSyncBody, *, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The full sync's date window (defaults now-90d .. now+180d); incremental syncs take none."""
    if body.mode != "full":
        for name in ("from_date", "to_date"):
            if getattr(body, name) is not None:
                raise ValidationFailed(f"{name}: only allowed when mode is full", field=name)
        return None, None
    from_date = body.from_date or now - DEFAULT_LOOKBACK
    to_date = body.to_date or now + DEFAULT_LOOKAHEAD
    if from_date >= to_date:
        raise ValidationFailed("from_date: must precede to_date", field="from_date")
    return from_date, to_date


async def trigger_sync(
    db: Database,
    *,
    workspace_id: str,
    body: TriggerSyncBody,
    cap: int,
    idempotency_key: str | None = None,
    redis: ArqRedis | None = None,
    queue: str = QUEUE_NAME,
    pipe: PipelinedRedis | None = None,
) -> Accepted:
    """Queue an on-demand sync (or replay the response stored under the idempotency key).

    Up to three units of work (claim the key, queue the job, release the key on failure), so it takes the
    `db` they are opened from, not a session. ``pipe``: the API's pipelined Redis connection, which then carries the
    enqueue (synchook.enqueue.enqueue_jobs)."""
    window = resolve_window(body, now=utcnow())
    # The request's fingerprint only matters under a key (2 % of a request's CPU otherwise).
    request_hash = "" if idempotency_key is None else idempotency.fingerprint(body.model_dump(mode="json"))
    if idempotency_key is not None:
        replay = await idempotency.claim(
            db, workspace_id=workspace_id, scope=IDEMPOTENCY_SCOPE, key=idempotency_key, request_hash=request_hash
        )
        if replay is not None:
            async with db.session() as session:
                quota = await sync_quota(session, workspace_id=workspace_id, cap=cap, now=utcnow())
            return Accepted(replay.status_code, replay.response, quota, replayed=True)
    try:
        if idempotency_key is None:
            # PostgreSQL: the workspace lock, the admission and the inserts are one call (sync_trigger_admit, st0007)
            # in autocommit, its own transaction: one round trip, run on asyncpg itself (Database.driver_row).
            # SQLite: the admission and the inserts in one write transaction, one call to the driver's thread
            # (Database.sqlite_transaction).
            queued = await _queue(db, workspace_id=workspace_id, body=body, window=window, cap=cap)
        else:
            async with db.session() as session:
                queued = await _queue(
                    await session.connection(), workspace_id=workspace_id, body=body, window=window, cap=cap
                )
                # The stored response commits with the job it describes.
                await idempotency.complete(
                    session,
                    workspace_id=workspace_id,
                    scope=IDEMPOTENCY_SCOPE,
                    key=idempotency_key,
                    request_hash=request_hash,
                    status_code=202,
                    response=queued.data,
                )
    except BaseException:
        if idempotency_key is not None:
            await _release_quietly(db, workspace_id=workspace_id, key=idempotency_key)
        raise
    await _hand_over(redis, queue, event_id=queued.event_id, job_id=queued.job_id, pipe=pipe)
    quota = SyncQuota(
        limit=cap, used=queued.quota.used + 1, oldest_queued_at=queued.quota.oldest_queued_at or queued.at, now=utcnow()
    )
    return Accepted(202, queued.data, quota)


@dataclass(frozen=True, slots=True)
class _Queued:
    job_id: str
    event_id: str
    at: datetime
    quota: SyncQuota  # before this job
    data: dict[str, Any]  # the 202's data


async def _queue(
    connection: AsyncConnection | Database,
    *,
    workspace_id: str,
    body: TriggerSyncBody,
    window: tuple[datetime | None, datetime | None],
    cap: int,
) -> _Queued:
    """Admit the request and insert its job and calendar.sync.queued event, in the connection's transaction (a
    Database: a transaction of their own); the refusals (NoConnection, SyncInProgress, SyncCapReached) are raised
    here."""
    # SQLite: read under the write lock (BEGIN IMMEDIATE serialises every writer). PostgreSQL: read just before the
    # call that takes the workspace lock; the cap stays exact (a request counts every job queued after its own
    # window start, whatever the order of the clocks).
    now = utcnow()
    job = NewJob(
        id=new_id("cal_sync"),
        workspace_id=workspace_id,
        mode=body.mode,
        provider=body.provider,
        from_date=window[0],
        to_date=window[1],
        queued_at=now,
    )
    event_id = new_id("evt")
    admission = await _admit(connection, job, event_id=event_id, cap=cap, now=now)
    if not admission.connected:
        raise NoConnection(body.provider)
    quota = SyncQuota(limit=cap, used=admission.used, oldest_queued_at=admission.oldest_queued_at, now=now)
    if admission.full_sync_overlaps:
        raise SyncInProgress(quota)
    if quota.used >= cap:
        raise SyncCapReached(quota)
    return _Queued(job.id, event_id, now, quota, SyncAccepted.of(job).model_dump(mode="json"))


async def _release_quietly(db: Database, *, workspace_id: str, key: str) -> None:
    # The original error matters more; an unreleased claim only makes retries with this key wait (409).
    try:
        await idempotency.release(db, workspace_id=workspace_id, scope=IDEMPOTENCY_SCOPE, key=key)
    except Exception as exc:
        logger.warning("idempotency key not released: %s", type(exc).__name__)


async def _hand_over(
    redis: ArqRedis | None, queue: str, *, event_id: str, job_id: str, pipe: PipelinedRedis | None
) -> None:
    """After commit, best effort, in one round trip: the event's outbox hand-off and the job (the relay sweeper and
    the recovery cron repair a miss). The job id is its arq job id, so it is never queued twice."""
    if redis is None:
        return
    jobs = [QueuedJob(RELAY_TASK, ([event_id],)), QueuedJob(RUN_SYNC_TASK, (job_id,), job_id=job_id)]
    try:
        await enqueue_jobs(redis, jobs, queue=queue, pipe=pipe)
    except Exception as exc:
        logger.warning("sync job %s not enqueued (sweeper and recovery will retry): %s", job_id, type(exc).__name__)


async def enqueue_job_run(enqueue: Enqueue | None, job_id: str) -> bool:
    """Best effort: the job id is the arq job id, so it is never queued twice; the recovery cron repairs a miss."""
    if enqueue is None:
        return False
    try:
        return await enqueue(RUN_SYNC_TASK, job_id, _job_id=job_id) is not None
    except Exception as exc:
        logger.warning("sync job %s not enqueued (recovery will retry): %s", job_id, type(exc).__name__)
        return False


async def sync_quota(session: AsyncSession, *, workspace_id: str, cap: int, now: datetime) -> SyncQuota:
    """Accepted on-demand syncs of the rolling hour, counted from the jobs themselves."""
    row = (
        await session.execute(
            select(func.count(col(SyncJob.id)), func.min(col(SyncJob.queued_at))).where(
                col(SyncJob.workspace_id) == workspace_id,
                col(SyncJob.trigger) == SyncTrigger.API,
                col(SyncJob.queued_at) > now - WINDOW,
            )
        )
    ).one()
    return SyncQuota(limit=cap, used=int(row[0]), oldest_queued_at=row[1], now=now)


@dataclass(frozen=True, slots=True)
class _Admission:
    connected: bool
    full_sync_overlaps: bool
    used: int
    oldest_queued_at: datetime | None

    def admits(self, cap: int) -> bool:
        return self.connected and not self.full_sync_overlaps and self.used < cap


async def _admission(
    connection: AsyncConnection, *, workspace_id: str, provider: str | None, now: datetime
) -> _Admission:
    """What decides an on-demand sync, read under the workspace lock in one statement: an active connection (of
    the provider), a queued or running full sync it overlaps, and the rolling hour's accepted syncs (sync_quota)."""
    statement = _ADMISSION_OF_ALL if provider is None else _ADMISSION_OF_PROVIDER
    row = (
        await connection.execute(statement, {"workspace_id": workspace_id, "provider": provider, "since": now - WINDOW})
    ).one()
    return _Admission(
        connected=bool(row.connected),
        full_sync_overlaps=bool(row.overlaps),
        used=int(row.used),
        oldest_queued_at=row.oldest,
    )


async def _admit(
    connection: AsyncConnection | Database, job: NewJob, *, event_id: str, cap: int, now: datetime
) -> _Admission:
    """Take the workspace's lock, read the admission (as `_admission`) and, if it admits the job, insert the job and
    its calendar.sync.queued event (id ``event_id``), in the caller's transaction.

    PostgreSQL: one call of sync_trigger_admit (st0007), where the lock, then the admission with both inserts as a
    CTE took two statements and, in a transaction of their own, BEGIN and COMMIT around them. SQLite: the admission,
    then the two inserts (BEGIN IMMEDIATE has serialised every writer already). A Database: on PostgreSQL the call
    in autocommit, its own transaction, on the driver's connection (``Database.driver_row``); on SQLite the admission
    and the inserts as one transaction in one call to the driver's thread (``Database.sqlite_transaction``)."""
    admitted = {
        "workspace_id": job.workspace_id,
        "provider": job.provider,
        "since": now - WINDOW,
        "cap": cap,
        **{f"job_{name}": getattr(job, name) for name in _JOB_COLUMNS},
        **{f"event_{name}": value for name, value in _queued_event_row(job, event_id=event_id, now=now).items()},
    }
    if isinstance(connection, Database) and connection.dialect == "sqlite":
        return await connection.sqlite_transaction(functools.partial(_admit_in_transaction, admitted=admitted, cap=cap))
    if isinstance(connection, Database):
        found = await connection.driver_row(_ADMIT_SQL, _driver_values(admitted))
        if found is None:  # the function returns one row, always
            raise RuntimeError("sync_trigger_admit returned no row")
        oldest = found["oldest_queued_at"]
        return _Admission(
            connected=bool(found["is_connected"]),
            full_sync_overlaps=bool(found["full_sync_overlaps"]),
            used=int(found["used_count"]),
            oldest_queued_at=None if oldest is None else as_utc(oldest),
        )
    if connection.dialect.name == "sqlite":
        admission = await _admission(connection, workspace_id=job.workspace_id, provider=job.provider, now=now)
        if admission.admits(cap):
            await connection.execute(_INSERT_JOB, admitted)
            await connection.execute(_INSERT_QUEUED_EVENT, admitted)
        return admission
    row = (await connection.execute(_ADMIT, admitted)).one()
    return _Admission(
        connected=bool(row.is_connected),
        full_sync_overlaps=bool(row.full_sync_overlaps),
        used=int(row.used_count),
        oldest_queued_at=row.oldest_queued_at,
    )


def _admit_in_transaction(transaction: DriverTransaction, *, admitted: dict[str, Any], cap: int) -> _Admission:
    """SQLite, on the driver's thread inside BEGIN IMMEDIATE: `_admission`'s statement, then the two inserts if it
    admits the job (as `_admit` does through SQLAlchemy)."""
    statement = _ADMISSION_OF_ALL if admitted["provider"] is None else _ADMISSION_OF_PROVIDER
    row = transaction.first(statement, admitted)
    if row is None:  # aggregates without GROUP BY: one row, always
        raise RuntimeError("the admission returned no row")
    admission = _Admission(
        connected=bool(row["connected"]),
        full_sync_overlaps=bool(row["overlaps"]),
        used=int(row["used"]),
        oldest_queued_at=row["oldest"],
    )
    if admission.admits(cap):
        transaction.execute(_INSERT_JOB, admitted)
        transaction.execute(_INSERT_QUEUED_EVENT, admitted)
    return admission


def _queued_event_row(job: NewJob, *, event_id: str, now: datetime) -> dict[str, Any]:
    # The row `queue_job` adds through the ORM (record_event), as column values.
    return {
        "id": event_id,
        "workspace_id": job.workspace_id,
        "type": "calendar.sync.queued",
        "provider": job.provider,
        "data": job_event_data(job),
        "created_at": now,
    }


def _admission_statement(*, of_provider: bool) -> Select[Any]:
    workspace: BindParameter[str] = bindparam("workspace_id")
    connection = select(col(Connection.id)).where(
        col(Connection.workspace_id) == workspace, col(Connection.status) == ConnectionStatus.ACTIVE
    )
    # Any request (full or incremental) overlapping a queued or running full sync is refused: the full
    # sync rebuilds the same index. provider NULL means every provider, so it overlaps everything.
    full_sync = select(col(SyncJob.id)).where(
        col(SyncJob.workspace_id) == workspace,
        col(SyncJob.mode) == "full",
        col(SyncJob.status).in_(ACTIVE_STATUSES),
    )
    if of_provider:
        provider: BindParameter[str] = bindparam("provider")
        connection = connection.where(col(Connection.provider) == provider)
        full_sync = full_sync.where(or_(col(SyncJob.provider).is_(None), col(SyncJob.provider) == provider))
    quota = (
        select(func.count(col(SyncJob.id)).label("used"), func.min(col(SyncJob.queued_at)).label("oldest"))
        .where(
            col(SyncJob.workspace_id) == workspace,
            col(SyncJob.trigger) == SyncTrigger.API,
            col(SyncJob.queued_at) > bindparam("since", type_=UTCDateTime),
        )
        .subquery()
    )
    return select(
        connection.exists().label("connected"), full_sync.exists().label("overlaps"), quota.c.used, quota.c.oldest
    )


# Built once: composing them cost more CPU per request than running them.
_ADMISSION_OF_ALL = _admission_statement(of_provider=False)
_ADMISSION_OF_PROVIDER = _admission_statement(of_provider=True)


_jobs = SyncJob.__table__  # type: ignore[attr-defined]
_events = Event.__table__  # type: ignore[attr-defined]
# What an accepted on-demand job's row is made of (every other column is NULL); `attempts` has no server default.
_JOB_COLUMNS = (
    "id",
    "workspace_id",
    "mode",
    "provider",
    "trigger",
    "from_date",
    "to_date",
    "status",
    "queued_at",
    "attempts",
)
_EVENT_COLUMNS = ("id", "workspace_id", "type", "provider", "data", "created_at")


def _values(table: Any, prefix: str, names: tuple[str, ...]) -> list[BindParameter[Any]]:
    return [bindparam(f"{prefix}_{name}", type_=table.c[name].type) for name in names]


_INSERT_JOB = insert(_jobs).values(dict(zip(_JOB_COLUMNS, _values(_jobs, "job", _JOB_COLUMNS), strict=True)))
_INSERT_QUEUED_EVENT = insert(_events).values(
    dict(zip(_EVENT_COLUMNS, _values(_events, "event", _EVENT_COLUMNS), strict=True))
)


# The function's parameters, in its order; the job's and the event's provider are the request's (`provider`).
_ADMIT_PARAMETERS = (
    "workspace_id",
    "provider",
    "since",
    "cap",
    *(f"job_{name}" for name in _JOB_COLUMNS if name not in ("workspace_id", "provider")),
    *(f"event_{name}" for name in _EVENT_COLUMNS if name not in ("workspace_id", "provider")),
)
_ADMIT = (
    text(
        "SELECT is_connected, full_sync_overlaps, used_count, oldest_queued_at "
        f"FROM sync_trigger_admit({', '.join(':' + name for name in _ADMIT_PARAMETERS)})"
    )
    .bindparams(
        bindparam("since", type_=UTCDateTime),
        *_values(_jobs, "job", ("from_date", "to_date", "queued_at")),
        *_values(_events, "event", ("data", "created_at")),
    )
    .columns(is_connected=Boolean, full_sync_overlaps=Boolean, used_count=Integer, oldest_queued_at=UTCDateTime)
)
# The same call for asyncpg itself (Database.driver_row), its parameters in _ADMIT_PARAMETERS' order.
_ADMIT_SQL = (
    "SELECT is_connected, full_sync_overlaps, used_count, oldest_queued_at "
    f"FROM sync_trigger_admit({', '.join(f'${n}' for n in range(1, len(_ADMIT_PARAMETERS) + 1))})"
)
_ADMIT_JSON = frozenset({"event_data"})


def _driver_values(admitted: dict[str, Any]) -> list[Any]:
    """_ADMIT's parameters as SQLAlchemy binds them on asyncpg: times aware in UTC (UTCDateTime), JSON as its text
    (the JSON type's json.dumps; the dialect's codec sends text), the rest as they are."""
    values: list[Any] = []
    for name in _ADMIT_PARAMETERS:
        value = admitted[name]
        if name in _ADMIT_JSON:
            value = json.dumps(value)
        elif isinstance(value, datetime):
            value = as_utc(value)
        values.append(value)
    return values


async def get_job(db: Database, *, workspace_id: str, job_id: str) -> Row[Any]:
    """The job's row (every column of sync_jobs, as SyncJobView reads them); NotFound for another workspace's.

    One read outside any transaction, no ORM (``Database.first_row``)."""
    row = None
    if looks_like_id(job_id, "cal_sync"):
        row = await db.first_row(_ONE_JOB, {"job_id": job_id, "workspace_id": workspace_id})
    if row is None:
        raise NotFound("Sync job")
    return row


# Built once: composing the statement cost more CPU per request than running it. Core, not the ORM: a row, no object.
_ONE_JOB = select(SyncJob.__table__).where(  # type: ignore[attr-defined]
    col(SyncJob.id) == bindparam("job_id"), col(SyncJob.workspace_id) == bindparam("workspace_id")
)


# --- Lifecycle (worker side) -----------------------------------------------------------------------


# A running job's retry state is cleared whenever it (re)starts or ends.
_NOT_RETRYING: dict[str, Any] = {"retry_attempt": None, "retry_at": None, "retry_error": None}


@dataclass(slots=True)
class StartedJob:
    job: SyncJob
    connections: list[Connection]
    event_ids: list[str] = field(default_factory=list)
    # Every connection the job covers was deleted since it was queued: it fails (connection_deleted).
    connections_deleted: bool = False

    @property
    def exhausted(self) -> bool:
        return self.job.attempts > MAX_ATTEMPTS


async def start_job(session: AsyncSession, *, job_id: str, worker_id: str | None = None) -> StartedJob | None:
    """queued → running with a calendar.sync.started event; a job already running (re-run after a crash)
    resumes without a second event; a finished or unknown job gives None. `worker_id` records who runs it."""
    now = utcnow()
    moved = await session.execute(
        update(SyncJob)
        .where(col(SyncJob.id) == job_id, col(SyncJob.status) == "queued")
        .values(
            status="running",
            started_at=now,
            attempts=col(SyncJob.attempts) + 1,
            worker_id=worker_id,
            **_NOT_RETRYING,
        )
    )
    if _rowcount(moved) != 1:
        moved = await session.execute(
            update(SyncJob)
            .where(col(SyncJob.id) == job_id, col(SyncJob.status) == "running")
            .values(attempts=col(SyncJob.attempts) + 1, worker_id=worker_id, **_NOT_RETRYING)
        )
        if _rowcount(moved) != 1:
            return None
        started = StartedJob(job=await _load_job(session, job_id), connections=[])
    else:
        job = await _load_job(session, job_id)
        event = record_event(
            session,
            workspace_id=job.workspace_id,
            type="calendar.sync.started",
            provider=job.provider,
            data=job_event_data(job),
            at=now,
        )
        started = StartedJob(job=job, connections=[], event_ids=[event.id])
    started.connections = await _job_connections(session, started.job)
    if not started.connections:
        started.connections_deleted = not await _any_connection_in_scope(session, started.job)
    return started


async def finish_job(
    session: AsyncSession,
    *,
    job_id: str,
    stats: dict[str, Any] | None,
    error: dict[str, Any] | None,
    changes: dict[str, Any] | None = None,
) -> list[str]:
    """running → completed | failed with its event; returns the event ids (none if already finished).

    `changes` (created, updated, deleted, through_sequence) goes into a completed event's data (§6.2).
    """
    status = "failed" if error is not None else "completed"
    now = utcnow()
    moved = await session.execute(
        update(SyncJob)
        .where(col(SyncJob.id) == job_id, col(SyncJob.status) == "running")
        .values(status=status, completed_at=now, stats=stats, error=error, **_NOT_RETRYING)
    )
    if _rowcount(moved) != 1:
        return []
    job = await _load_job(session, job_id)
    data = job_event_data(job)
    if status == "completed":
        data["changes"] = await _changes_summary(session, job.workspace_id, changes)
    event = record_event(
        session,
        workspace_id=job.workspace_id,
        type=f"calendar.sync.{status}",
        provider=job.provider,
        data=data,
        at=now,
    )
    return [event.id]


async def _changes_summary(session: AsyncSession, workspace_id: str, changes: dict[str, Any] | None) -> dict[str, Any]:
    summary = dict(changes or {"created": 0, "updated": 0, "deleted": 0, "through_sequence": None})
    if summary.get("through_sequence") is None:
        # This sync wrote no change: every change committed so far is all a receiver needs to have seen.
        summary["through_sequence"] = (await latest_sequence(session, workspace_id))[0]
    return summary


async def is_running(session: AsyncSession, *, job_id: str) -> bool:
    """Still running: not failed meanwhile (its connection deleted) nor finished by another run."""
    found = await session.execute(
        select(col(SyncJob.id)).where(col(SyncJob.id) == job_id, col(SyncJob.status) == "running")
    )
    return found.first() is not None


async def record_retry(
    session: AsyncSession, *, job_id: str, attempt: int | None, at: datetime | None, error: dict[str, Any] | None
) -> None:
    """Show (attempt set) or clear (attempt None) a running job's provider retry state; keep its transaction short."""
    await session.execute(
        update(SyncJob)
        .where(col(SyncJob.id) == job_id, col(SyncJob.status) == "running")
        .values(retry_attempt=attempt, retry_at=at, retry_error=error)
    )


async def fail_jobs_of_deleted_connection(session: AsyncSession, *, connection: Connection) -> list[str]:
    """In the deleting transaction: fail the active jobs that sync `connection` (connection_deleted).

    Its background jobs, queued or running, and the running jobs covering it (a running job has already
    chosen its connections). A queued job for the workspace or provider picks its connections when it
    starts; it fails there only if none is left (start_job).
    """
    now = utcnow()
    covers = (col(SyncJob.connection_id) == connection.id) | (
        (col(SyncJob.status) == "running")
        & col(SyncJob.connection_id).is_(None)
        & (col(SyncJob.provider).is_(None) | (col(SyncJob.provider) == connection.provider))
    )
    job_ids = (
        await session.execute(
            select(col(SyncJob.id)).where(
                col(SyncJob.workspace_id) == connection.workspace_id,
                col(SyncJob.status).in_(ACTIVE_STATUSES),
                covers,
            )
        )
    ).scalars()
    error = {
        "code": "connection_deleted",
        "message": f"Connection {connection.id} was deleted before the sync finished",
    }
    # The connection's calendars and events go with it, so nothing the job applied for it remains.
    stats = {"calendars": 0, "events_created": 0, "events_updated": 0, "events_deleted": 0}
    event_ids: list[str] = []
    for job_id in list(job_ids):
        moved = await session.execute(
            update(SyncJob)
            .where(col(SyncJob.id) == job_id, col(SyncJob.status).in_(ACTIVE_STATUSES))
            .values(status="failed", completed_at=now, stats=stats, error=error, **_NOT_RETRYING)
        )
        if _rowcount(moved) != 1:
            continue
        job = await _load_job(session, job_id)
        event = record_event(
            session,
            workspace_id=job.workspace_id,
            type="calendar.sync.failed",
            provider=job.provider,
            data=job_event_data(job),
            at=now,
        )
        event_ids.append(event.id)
    return event_ids


async def running_job_owners(session: AsyncSession, *, limit: int = 500) -> list[tuple[str, str]]:
    """(job id, worker id) of the running jobs whose worker is recorded, oldest first."""
    rows = await session.execute(
        select(col(SyncJob.id), col(SyncJob.worker_id))
        .where(col(SyncJob.status) == "running", col(SyncJob.worker_id).is_not(None))
        .order_by(col(SyncJob.queued_at))
        .limit(limit)
    )
    return [(r[0], str(r[1])) for r in rows]


async def stale_job_ids(
    session: AsyncSession, *, queued_before: datetime, running_before: datetime, limit: int = 500
) -> list[str]:
    """Jobs the queue may have lost: queued too long, or running past the job timeout."""
    rows = await session.execute(
        select(col(SyncJob.id))
        .where(
            or_(
                (col(SyncJob.status) == "queued") & (col(SyncJob.queued_at) < queued_before),
                (col(SyncJob.status) == "running") & (col(SyncJob.started_at) < running_before),
            )
        )
        .order_by(col(SyncJob.queued_at))
        .limit(limit)
    )
    return [r[0] for r in rows]


def _rowcount(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)


async def _load_job(session: AsyncSession, job_id: str) -> SyncJob:
    # populate_existing: the UPDATE above bypassed the identity map.
    result = await session.execute(
        select(SyncJob).where(col(SyncJob.id) == job_id).execution_options(populate_existing=True)
    )
    return result.scalar_one()


async def _job_connections(session: AsyncSession, job: SyncJob) -> list[Connection]:
    query = _in_scope(select(Connection), job).where(col(Connection.status) == ConnectionStatus.ACTIVE)
    return list((await session.execute(query.order_by(col(Connection.id)))).scalars())


async def _any_connection_in_scope(session: AsyncSession, job: SyncJob) -> bool:
    # Whatever its status: a connection awaiting re-authorisation still exists.
    return (await session.execute(_in_scope(select(col(Connection.id)), job).limit(1))).first() is not None


def _in_scope(query: Select[Any], job: SyncJob) -> Select[Any]:
    query = query.where(col(Connection.workspace_id) == job.workspace_id)
    if job.connection_id is not None:
        query = query.where(col(Connection.id) == job.connection_id)
    if job.provider is not None:
        query = query.where(col(Connection.provider) == job.provider)
    return query


# --- Secrets ---------------------------------------------------------------------------------------


async def reseal_connection_tokens(db: Database, box: SecretBox) -> ResealCount:
    """Re-encrypt every connection's tokens under the newest master key, never over a refresh made meanwhile."""
    table = Connection.__table__  # type: ignore[attr-defined]
    return await reseal_columns(db, box, table, ("access_token_sealed", "refresh_token_sealed"))
