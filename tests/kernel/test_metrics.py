from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from arq.connections import ArqRedis
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from subscriptions.models import Subscription
from sync_trigger.models import SyncJob
from synchook import metrics, metrics_totals
from synchook.context import AppContext
from synchook.ids import new_id
from synchook.outbox import Event
from synchook.queue import QUEUE_NAME
from synchook.root import metrics as root_metrics
from synchook.settings import Settings
from synchook.timeutil import utcnow
from tests.factories import make_tenant
from webhooks.models import Delivery


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # These tests change the database between scrapes and expect to see it: no caching unless a test asks.
    return {"metrics_cache_seconds": 0}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_metrics_needs_no_key_and_reports_every_family(client: httpx.AsyncClient) -> None:
    text = await scrape(client)
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "synchook_deliveries",
        "synchook_delivery_attempt_duration_seconds",
        "synchook_http_requests",
        "synchook_http_request_duration_seconds",
        "synchook_queue_depth",
        "synchook_outbox_lag_seconds",
        "synchook_outbox_undispatched_events",
        "synchook_open_deliveries",
        "synchook_sync_jobs",
        "synchook_metrics_source_up",
    } <= names
    assert value(text, "synchook_metrics_source_up", source="database") == 1
    assert value(text, "synchook_metrics_source_up", source="redis") == 1


async def test_queue_depth_is_the_arq_queue_size(client: httpx.AsyncClient, redis: ArqRedis) -> None:
    assert value(await scrape(client), "synchook_queue_depth") == 0
    await redis.enqueue_job("relay_events", ["evt_x"], _queue_name=QUEUE_NAME)
    await redis.enqueue_job("relay_events", ["evt_y"], _queue_name=QUEUE_NAME)
    assert value(await scrape(client), "synchook_queue_depth") == 2


async def test_outbox_lag_is_the_age_of_the_oldest_undispatched_event(
    client: httpx.AsyncClient, app_ctx: AppContext
) -> None:
    assert value(await scrape(client), "synchook_outbox_lag_seconds") == 0
    tenant = await make_tenant(app_ctx)
    now = utcnow()
    async with app_ctx.db.session() as session:
        for age, dispatched in ((600, True), (120, False), (5, False)):
            session.add(
                Event(
                    id=new_id("evt"),
                    workspace_id=tenant.workspace_id,
                    type="calendar.sync.queued",
                    data={},
                    created_at=now - timedelta(seconds=age),
                    dispatched_at=now if dispatched else None,
                )
            )
    text = await scrape(client)
    lag = value(text, "synchook_outbox_lag_seconds")
    assert lag is not None and 120 <= lag < 180
    assert value(text, "synchook_outbox_undispatched_events") == 2


async def test_open_deliveries_and_sync_jobs_are_counted_by_status(
    client: httpx.AsyncClient, app_ctx: AppContext
) -> None:
    tenant = await make_tenant(app_ctx)
    now = utcnow()
    async with app_ctx.db.session() as session:
        subscription = Subscription(
            id=new_id("sub"),
            workspace_id=tenant.workspace_id,
            url="https://example.com/hook",
            event_types=["*"],
            secret_sealed="x",
            created_at=now,
            updated_at=now,
        )
        event = Event(id=new_id("evt"), workspace_id=tenant.workspace_id, type="webhook.test", data={}, created_at=now)
        session.add_all([subscription, event])
        await session.flush()
        for status in ("pending", "pending", "failed", "dead", "succeeded", "cancelled"):
            session.add(
                Delivery(
                    id=new_id("dlv"),
                    workspace_id=tenant.workspace_id,
                    event_id=event.id,
                    event_type=event.type,
                    subscription_id=subscription.id,
                    status=status,
                    created_at=now,
                    updated_at=now,
                )
            )
        for status in ("queued", "running", "completed", "completed"):
            session.add(
                SyncJob(
                    id=new_id("cal_sync"), workspace_id=tenant.workspace_id, mode="full", status=status, queued_at=now
                )
            )
    text = await scrape(client)
    assert value(text, "synchook_open_deliveries", status="pending") == 2
    assert value(text, "synchook_open_deliveries", status="failed") == 1
    assert value(text, "synchook_open_deliveries", status="dead") == 1
    assert value(text, "synchook_open_deliveries", status="succeeded") is None
    assert value(text, "synchook_sync_jobs", status="queued") == 1
    assert value(text, "synchook_sync_jobs", status="running") == 1
    assert value(text, "synchook_sync_jobs", status="completed") == 2
    assert value(text, "synchook_sync_jobs", status="failed") == 0


async def test_http_requests_are_counted_by_route_template(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    await client.get("/healthz")
    await client.get("/v1/no/such/route/12345")
    after = await scrape(client)

    def delta(**labels: str) -> float:
        return (value(after, "synchook_http_requests_total", **labels) or 0) - (
            value(before, "synchook_http_requests_total", **labels) or 0
        )

    assert delta(method="GET", route="/healthz", status="200") == 1
    # Unmatched paths share one label value: a scanner cannot blow up the series count.
    assert delta(method="GET", route=metrics.UNMATCHED, status="404") == 1
    assert not any("12345" in line for line in after.splitlines())


async def test_route_template_keeps_path_parameters_as_placeholders() -> None:
    async def thing(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Mount("/v1", routes=[Route("/things/{id}", thing, methods=["GET"])])],
        middleware=[Middleware(metrics.MetricsMiddleware)],
    )
    labels = {"method": "GET", "route": "/v1/things/{id}", "status": "200"}
    before = value(root_metrics.render().decode(), "synchook_http_requests_total", **labels) or 0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.get("/v1/things/thing_secret_looking_id")).status_code == 200
    text = root_metrics.render().decode()
    assert value(text, "synchook_http_requests_total", **labels) == before + 1
    assert "thing_secret_looking_id" not in text


async def test_engine_api_counts_attempts_and_outcomes(client: httpx.AsyncClient, app_ctx: AppContext) -> None:
    await metrics_totals.flush_engine_totals(app_ctx.redis)  # what earlier tests of this process counted, not ours
    before = await scrape(client)
    metrics.record_attempt("succeeded", 0.2)
    metrics.record_attempt("timeout", 15.0)
    metrics.record_attempt("made-up", 1.0)
    metrics.record_delivery_outcome("dead")
    metrics.record_delivery_outcome("made-up")
    metrics.record_delivery_outcome("succeeded", 3)  # a recorder flush counts its outcomes at once
    # Counted in this process (a worker's, in production): the API shows the totals its workers flushed.
    dead = "synchook_deliveries_total"
    assert value(await scrape(client), dead, outcome="dead") == value(before, dead, outcome="dead")
    await metrics_totals.flush_engine_totals(app_ctx.redis)
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert delta("synchook_delivery_attempt_duration_seconds_count", outcome="succeeded") == 1
    assert delta("synchook_delivery_attempt_duration_seconds_sum", outcome="timeout") == pytest.approx(15.0)
    assert delta("synchook_delivery_attempt_duration_seconds_count", outcome="other") == 1
    assert delta("synchook_deliveries_total", outcome="dead") == 1
    assert delta("synchook_deliveries_total", outcome="other") == 1
    assert delta("synchook_deliveries_total", outcome="succeeded") == 3


def _total(totals: dict[str, float], outcome: str) -> float:
    return totals.get(f"synchook_deliveries_total|{outcome}|", 0.0)


async def test_each_count_reaches_the_cluster_totals_once(app_ctx: AppContext) -> None:
    redis = app_ctx.redis
    await metrics_totals.flush_engine_totals(redis)  # whatever earlier tests of this process counted
    start = _total(await metrics_totals.read_engine_totals(redis), "cancelled")
    metrics.record_delivery_outcome("cancelled", 2)
    await metrics_totals.flush_engine_totals(redis)
    await metrics_totals.flush_engine_totals(redis)  # nothing new: adds nothing
    metrics.record_delivery_outcome("cancelled")
    await asyncio.gather(*(metrics_totals.flush_engine_totals(redis) for _ in range(3)))
    assert _total(await metrics_totals.read_engine_totals(redis), "cancelled") == start + 3


async def test_counts_a_failed_flush_could_not_send_go_with_the_next(app_ctx: AppContext) -> None:
    from redis.asyncio import Redis

    from synchook.queue import free_port

    redis = app_ctx.redis
    await metrics_totals.flush_engine_totals(redis)
    start = _total(await metrics_totals.read_engine_totals(redis), "cancelled")
    metrics.record_delivery_outcome("cancelled", 5)
    unreachable = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    try:
        with pytest.raises(Exception):
            await metrics_totals.flush_engine_totals(unreachable)
    finally:
        await unreachable.aclose()
    assert _total(await metrics_totals.read_engine_totals(redis), "cancelled") == start
    await metrics_totals.flush_engine_totals(redis)
    assert _total(await metrics_totals.read_engine_totals(redis), "cancelled") == start + 5


async def test_scrape_answers_when_redis_is_unreachable(app_ctx: AppContext) -> None:
    cut_off = AppContext(settings=app_ctx.settings, db=app_ctx.db, box=app_ctx.box, redis=None)
    snapshot = await root_metrics.take_snapshot(cut_off)
    assert snapshot.sources == {"database": True, "redis": False}
    text = root_metrics.render(snapshot).decode()
    assert value(text, "synchook_metrics_source_up", source="redis") == 0
    assert value(text, "synchook_queue_depth") is None
    assert value(text, "synchook_open_deliveries", status="pending") == 0


# --- the database is read at most once per metrics_cache_seconds; the token --------------------------


@pytest.fixture
def figure_reads(app_ctx: AppContext) -> Iterator[list[str]]:
    """Every statement the real engine runs that reads sync_jobs: one per computation of the figures."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "sync_jobs" in statement:
            seen.append(statement)

    engine = app_ctx.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", record)


class TestCachedDatabaseFigures:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"metrics_cache_seconds": 3600}

    async def test_scrapes_in_a_row_read_the_database_once(
        self, client: httpx.AsyncClient, redis: ArqRedis, figure_reads: list[str]
    ) -> None:
        for _ in range(5):
            await scrape(client)
        assert len(figure_reads) == 1
        # The queue depth (one O(1) Redis call) stays live.
        await redis.enqueue_job("relay_events", ["evt_x"], _queue_name=QUEUE_NAME)
        assert value(await scrape(client), "synchook_queue_depth") == 1
        assert len(figure_reads) == 1

    async def test_concurrent_scrapes_share_one_read(self, client: httpx.AsyncClient, figure_reads: list[str]) -> None:
        texts = await asyncio.gather(*(scrape(client) for _ in range(8)))
        assert len(figure_reads) == 1
        assert all(value(text, "synchook_metrics_source_up", source="database") == 1 for text in texts)


async def test_figures_are_read_again_once_they_are_older_than_the_ttl(app_ctx: AppContext) -> None:
    reads: list[root_metrics.Snapshot] = []
    now = [1000.0]

    async def counted(ctx: AppContext) -> root_metrics.Snapshot:
        figures = await root_metrics.read_database_figures(ctx)  # the real reader, counted
        reads.append(figures)
        return figures

    cache = root_metrics.DatabaseFiguresCache(ttl=5.0, read=counted, clock=lambda: now[0])
    first = await cache.get(app_ctx)
    now[0] += 4.9
    assert await cache.get(app_ctx) is first
    now[0] += 0.2
    assert await cache.get(app_ctx) is not first
    assert len(reads) == 2


class TestMetricsToken:
    TOKEN = "metrics-scrape-token-7f3a"

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"metrics_token": self.TOKEN}

    @pytest.mark.parametrize(
        "authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x", b"Bearer \xe9"]
    )
    async def test_without_the_token_it_is_401(
        self, client: httpx.AsyncClient, authorization: str | bytes | None
    ) -> None:
        headers = {"Authorization": authorization} if authorization else {}
        response = await client.get("/metrics", headers=headers)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_key"
        assert self.TOKEN not in response.text
        assert "synchook_" not in response.text

    async def test_with_the_token_it_answers(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {self.TOKEN}"})
        assert response.status_code == 200
        assert "synchook_open_deliveries" in response.text

    async def test_the_token_is_a_secret(self, settings: Settings) -> None:
        assert self.TOKEN not in repr(settings)
        assert self.TOKEN not in str(settings.model_dump())


def test_an_empty_token_leaves_metrics_open() -> None:
    assert Settings(metrics_token="").metrics_token is None


def test_the_kernels_outcome_labels_are_the_statuses_a_delivery_leaves_pending_for() -> None:
    # Spelled out in the kernel (it imports no domain); this holds them to webhooks' own enum.
    from synchook.metrics import DELIVERY_OUTCOMES
    from webhooks.models import DeliveryStatus

    assert set(DELIVERY_OUTCOMES) == {status.value for status in DeliveryStatus} - {DeliveryStatus.PENDING.value}
