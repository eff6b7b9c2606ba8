"""``GET /metrics``: this process's counters (synchook.metrics), then figures read from the database and Redis.

API and workers are separate processes. The HTTP and push counters count what *this* process did: sum them
across instances in PromQL. The figures read at scrape time (queue depth, outbox lag, open deliveries, sync
jobs by status, and the workers' delivery and attempt counters, which they add up in Redis:
synchook.metrics_totals) come from the shared database and Redis, so every API instance reports the same
cluster-wide truth: take ``max`` across instances, not ``sum``.

``GET /metrics`` needs no API key, like ``/healthz``: serve it on an internal network only, never publicly.
With ``SYNCHOOK_METRICS_TOKEN`` set it needs ``Authorization: Bearer <token>``. The database figures are read
at most once per ``metrics_cache_seconds`` per process, and concurrent scrapes share one read in flight:
however often (and by however many) it is scraped, /metrics costs the database three indexed queries per
few seconds.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlmodel import col
from starlette.requests import Request
from starlette.responses import Response

from sync_trigger.models import JOB_STATUSES, SyncJob
from synchook.context import AppContext
from synchook.errors import InvalidKey
from synchook.metrics import REGISTRY
from synchook.metrics_totals import engine_families, read_engine_totals
from synchook.outbox import Event
from synchook.queue import QUEUE_NAME
from synchook.timeutil import as_utc, utcnow
from webhooks.models import DUE_INDEX_STATUSES, DUE_INDEX_WHERE, Delivery

logger = logging.getLogger(__name__)

# Dead deliveries are counted with the open ones: they wait for a replay.
OPEN_DELIVERY_STATUSES: tuple[str, ...] = DUE_INDEX_STATUSES
_SCRAPE_TIMEOUT = 5.0


# --- Scrape-time gauges ------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """Cluster-wide state read at scrape time; None where the source could not be read."""

    queue_depth: int | None = None
    outbox_undispatched: int | None = None
    outbox_lag_seconds: float | None = None
    deliveries: dict[str, int] | None = None
    sync_jobs: dict[str, int] | None = None
    engine_totals: dict[str, float] | None = None
    sources: dict[str, bool] = field(default_factory=dict)


async def _read_database(ctx: AppContext, snapshot: Snapshot) -> None:
    async with ctx.db.session() as session:
        # Each query is served by an index: ix_events_undispatched, ix_deliveries_due, ix_sync_jobs_status_queued.
        undispatched = col(Event.dispatched_at).is_(None)
        count, oldest = (
            await session.execute(select(func.count(), func.min(col(Event.created_at))).where(undispatched))
        ).one()
        snapshot.outbox_undispatched = int(count)
        snapshot.outbox_lag_seconds = (
            max(0.0, (utcnow() - as_utc(oldest)).total_seconds()) if oldest is not None else 0.0
        )
        rows = await session.execute(
            select(col(Delivery.status), func.count())
            .where(text(DUE_INDEX_WHERE))  # the statuses counted are the partial due index's: it serves the count
            .group_by(col(Delivery.status))
        )
        deliveries = dict.fromkeys(OPEN_DELIVERY_STATUSES, 0)
        deliveries.update({str(status): int(n) for status, n in rows})
        snapshot.deliveries = deliveries
        rows = await session.execute(select(col(SyncJob.status), func.count()).group_by(col(SyncJob.status)))
        jobs = dict.fromkeys(JOB_STATUSES, 0)
        jobs.update({str(status): int(n) for status, n in rows})
        snapshot.sync_jobs = jobs


async def _read_redis(ctx: AppContext, snapshot: Snapshot) -> None:
    if ctx.redis is None:
        raise ConnectionError("no Redis connection")
    snapshot.queue_depth = int(await ctx.redis.zcard(QUEUE_NAME))
    snapshot.engine_totals = await read_engine_totals(ctx.redis)


Reader = Callable[[AppContext, Snapshot], Awaitable[None]]


async def _read_source(ctx: AppContext, snapshot: Snapshot, name: str, reader: Reader) -> None:
    try:
        await asyncio.wait_for(reader(ctx, snapshot), timeout=_SCRAPE_TIMEOUT)
        snapshot.sources[name] = True
    except Exception as exc:  # a scrape must still answer (with up=0) when a backing service is down
        logger.warning("metrics: %s unavailable: %s", name, type(exc).__name__)
        snapshot.sources[name] = False


async def read_database_figures(ctx: AppContext) -> Snapshot:
    """The database-backed figures alone (the expensive part of a scrape)."""
    snapshot = Snapshot()
    await _read_source(ctx, snapshot, "database", _read_database)
    return snapshot


class DatabaseFiguresCache:
    """The database figures of this process, read at most once per ``ttl`` seconds.

    Scrapes arriving while a read is in flight await that same read instead of starting their own, so N
    concurrent scrapes cost one set of queries, not N. A failed read (database down) is cached like any
    other: it reports up=0 until the next read.
    """

    def __init__(
        self,
        *,
        ttl: float,
        read: Callable[[AppContext], Awaitable[Snapshot]] = read_database_figures,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._read = read
        self._clock = clock
        self._figures: Snapshot | None = None
        self._read_at = 0.0
        self._in_flight: asyncio.Future[Snapshot] | None = None

    async def get(self, ctx: AppContext) -> Snapshot:
        if self._figures is not None and self._clock() - self._read_at < self._ttl:
            return self._figures
        if self._in_flight is None:
            self._in_flight = asyncio.ensure_future(self._refresh(ctx))
        # Shielded: a scraper that hangs up must not cancel the read the others are waiting for.
        return await asyncio.shield(self._in_flight)

    async def _refresh(self, ctx: AppContext) -> Snapshot:
        try:
            figures = await self._read(ctx)
            self._figures, self._read_at = figures, self._clock()
            return figures
        finally:
            self._in_flight = None


async def take_snapshot(ctx: AppContext, *, cache: DatabaseFiguresCache | None = None) -> Snapshot:
    """Database figures (through ``cache`` when given) and the queue depth (one O(1) Redis call, always live)."""
    figures = await cache.get(ctx) if cache is not None else await read_database_figures(ctx)
    snapshot = Snapshot(
        outbox_undispatched=figures.outbox_undispatched,
        outbox_lag_seconds=figures.outbox_lag_seconds,
        deliveries=figures.deliveries,
        sync_jobs=figures.sync_jobs,
        sources=dict(figures.sources),
    )
    await _read_source(ctx, snapshot, "redis", _read_redis)
    return snapshot


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        up = GaugeMetricFamily(
            "synchook_metrics_source_up", "Whether the scrape could read this backing service", labels=["source"]
        )
        for source, ok in sorted(s.sources.items()):
            up.add_metric([source], 1.0 if ok else 0.0)
        yield up
        if s.queue_depth is not None:
            yield GaugeMetricFamily(
                "synchook_queue_depth", f"Jobs waiting in the arq queue ({QUEUE_NAME})", value=s.queue_depth
            )
        if s.outbox_undispatched is not None:
            yield GaugeMetricFamily(
                "synchook_outbox_undispatched_events",
                "Events written to the outbox and not yet handed to the delivery engine",
                value=s.outbox_undispatched,
            )
        if s.outbox_lag_seconds is not None:
            yield GaugeMetricFamily(
                "synchook_outbox_lag_seconds",
                "Age of the oldest undispatched outbox event (0 when none)",
                value=s.outbox_lag_seconds,
            )
        if s.deliveries is not None:
            yield _by_label(
                "synchook_open_deliveries",
                "Deliveries not yet finished (pending, failed awaiting retry) or dead awaiting replay",
                "status",
                s.deliveries.items(),
            )
        if s.sync_jobs is not None:
            yield _by_label("synchook_sync_jobs", "Calendar sync jobs by status", "status", s.sync_jobs.items())
        if s.engine_totals is not None:
            yield from engine_families(s.engine_totals)


def _by_label(name: str, documentation: str, label: str, values: Iterable[tuple[str, int]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in values:
        family.add_metric([value], float(count))
    return family


def render(snapshot: Snapshot | None = None) -> bytes:
    """The exposition text: this process's counters, then the scrape-time gauges."""
    body = generate_latest(REGISTRY)
    if snapshot is not None:
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(SnapshotCollector(snapshot))
        body += generate_latest(scrape)
    return body


def _check_token(request: Request, ctx: AppContext) -> None:
    expected = ctx.settings.metrics_token
    if expected is None:
        return
    scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
    # compare_digest on bytes: constant time in the token's content (and never a TypeError on non-ASCII).
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        supplied.strip().encode(), expected.get_secret_value().encode()
    ):
        raise InvalidKey("/metrics needs Authorization: Bearer <SYNCHOOK_METRICS_TOKEN>")


def _cache(request: Request, ctx: AppContext) -> DatabaseFiguresCache:
    # One per app (so per process), made on the first scrape; no await between the look-up and the set.
    cache: DatabaseFiguresCache | None = getattr(request.app.state, "metrics_cache", None)
    if cache is None:
        cache = DatabaseFiguresCache(ttl=ctx.settings.metrics_cache_seconds)
        request.app.state.metrics_cache = cache
    return cache


async def metrics(request: Request) -> Response:
    ctx = cast(AppContext, request.app.state.ctx)
    _check_token(request, ctx)
    snapshot = await take_snapshot(ctx, cache=_cache(request, ctx))
    return Response(render(snapshot), media_type=CONTENT_TYPE_LATEST)
