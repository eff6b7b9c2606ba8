"""At least once: a worker killed with SIGKILL mid-batch, or Redis flushed mid-run, loses no event."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker

from synchook.context import AppContext
from synchook.settings import Settings
from tests.factories import make_tenant
from tests.factories.webhooks import deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from tests.support.workers import running, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


def delivered_ids(receiver: Receiver, path: str) -> set[str]:
    return {r.headers["webhook-id"] for r in receiver.requests(path)}


def worker_process(settings: Settings, **env: str) -> subprocess.Popen[bytes]:
    assert settings.secret_key is not None and settings.redis_url is not None
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SYNCHOOK_")},
        "SYNCHOOK_DATABASE_URL": settings.database_url,
        "SYNCHOOK_REDIS_URL": settings.redis_url,
        "SYNCHOOK_SECRET_KEY": settings.secret_key.get_secret_value(),
        "SYNCHOOK_ALLOW_PRIVATE_TARGETS": "true",
        "SYNCHOOK_LOG_FORMAT": "text",
        **env,
    }
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "synchook"), "worker"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("settings_overrides", [{"delivery_lease_seconds": 5}])
async def test_sigkill_mid_batch_then_another_worker_delivers_everything(
    app_ctx: AppContext, settings: Settings, receiver: Receiver, make_worker: Callable[..., Worker]
) -> None:
    receiver.program("/hold", statuses=[200], delay=3.0)  # holds the first requests while the worker dies
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hold"))
    events = await make_events(app_ctx, tenant.workspace_id, count=30)

    process = worker_process(
        settings,
        SYNCHOOK_DELIVERY_BATCH_SIZE="10",
        # At most 5 held requests at a time, so the kill lands mid-run even when this loaded machine is slow to
        # deliver it (with the default 16, a kill a few seconds late found all 30 sent).
        SYNCHOOK_PER_SUBSCRIPTION_CONCURRENCY="5",
        SYNCHOOK_DELIVERY_LEASE_SECONDS="5",
        SYNCHOOK_DELIVERY_TIMEOUT="10",
        SYNCHOOK_RELAY_GRACE_SECONDS="0",
    )
    try:
        await wait_until(lambda: receiver.count("/hold") >= 5, timeout=30)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    in_flight_when_killed = receiver.count("/hold")
    assert in_flight_when_killed < len(events)  # killed mid-run, not after
    receiver.program("/hold", statuses=[200])

    async with running(make_worker(burst=False, with_cron=True)):
        await wait_until(lambda: delivered_ids(receiver, "/hold") == set(events), timeout=40)
        await wait_until(lambda: receiver.count("/hold") >= len(events), timeout=5)

    rows = await deliveries(app_ctx)
    assert len(rows) == len(events)
    # Receipts the killed worker never recorded are sent again: duplicates, bounded by what was in flight.
    assert receiver.count("/hold") <= len(events) + in_flight_when_killed


async def test_redis_flushall_mid_run_loses_nothing(
    app_ctx: AppContext, redis: ArqRedis, receiver: Receiver, make_worker: Callable[..., Worker]
) -> None:
    receiver.program("/steady", statuses=[200], delay=0.02)
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/steady"))
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/flaky"))
    receiver.program("/flaky", statuses=[500, 200])
    events = await make_events(app_ctx, tenant.workspace_id, count=20)
    events += await make_events(app_ctx, tenant.workspace_id, count=20, hand_off_now=False)  # lost hand-offs

    async with running(make_worker(burst=False, max_jobs=2)):
        await wait_until(lambda: receiver.count("/steady") >= 3, timeout=20)
        await redis.flushall()  # the queued jobs, deferred retries and undispatched hand-offs are gone
    assert receiver.count("/steady") < 40

    # A fresh worker's crons (outbox sweeper, delivery sweeper) find everything in the database, including
    # retries whose deferred jobs went with the flush (due a moment later, so not a one-shot burst's work).
    async with running(make_worker(burst=False, with_cron=True)):
        await wait_until(
            lambda: (
                delivered_ids(receiver, "/steady") == set(events) and delivered_ids(receiver, "/flaky") == set(events)
            ),
            timeout=30,
        )
        async with asyncio.timeout(15):
            while {r.status for r in await deliveries(app_ctx)} != {"succeeded"}:
                await asyncio.sleep(0.1)

    rows = await deliveries(app_ctx)
    assert len(rows) == 80
    assert {r.status for r in rows} == {"succeeded"}
