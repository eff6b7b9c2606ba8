"""`synchook deliveries list` and `synchook replay` against the real database and Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis

from synchook import cli
from synchook.context import AppContext
from synchook.queue import QUEUE_NAME
from synchook.root.dev import DEV_REDIS_FILE
from synchook.settings import Settings
from synchook.timeutil import isoformat, utcnow
from tests.factories import Tenant, make_tenant
from tests.factories.admin import delivery, seed_delivery
from tests.factories.webhooks import make_subscription
from tests.support.receiver import Receiver
from webhooks.cli import RESUME_WITHIN
from webhooks.models import Replay
from webhooks.tasks import SWEEP_EVERY_S

Run = Callable[..., Awaitable[Any]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    assert settings.secret_key is not None
    monkeypatch.setenv("SYNCHOOK_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SYNCHOOK_REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("SYNCHOOK_SECRET_KEY", settings.secret_key.get_secret_value())


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


async def synchook(*argv: str) -> int:
    # The CLI runs its own event loop (asyncio.run): give it a thread of its own.
    return await asyncio.to_thread(cli.main, list(argv))


async def workspace_name(app: AppContext, tenant: Tenant) -> str:
    from synchook.auth.models import Workspace

    async with app.db.session() as session:
        workspace = await session.get(Workspace, tenant.workspace_id)
        assert workspace is not None
        return workspace.name


@pytest.mark.usefixtures("cli_env")
async def test_deliveries_list_prints_a_table_filtered_by_status_and_since(
    app_ctx: AppContext, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    now = utcnow()
    recent = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="failed", at=now - timedelta(hours=1))
    old = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="failed", at=now - timedelta(days=3))
    ok = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="succeeded", attempts=[200])
    name = await workspace_name(app_ctx, tenant)
    since = isoformat(now - timedelta(days=1))
    assert since is not None
    assert await synchook("deliveries", "list", "--workspace", name, "--status", "failed", "--since", since) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["id", "status", "event_type", "subscription", "attempts", "last", "created_at"]
    assert recent.delivery_id in out
    assert old.delivery_id not in out
    assert ok.delivery_id not in out
    assert lines[-1] == "1 deliveries"


@pytest.mark.usefixtures("cli_env")
async def test_deliveries_list_refuses_a_bad_status(tenant: Tenant, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        await synchook("deliveries", "list", "--workspace", tenant.workspace_id, "--status", "lost")


@pytest.mark.usefixtures("cli_env")
async def test_replay_one_delivery_is_sent_and_audited_as_cli(
    app_ctx: AppContext, tenant: Tenant, receiver: Receiver, run_worker: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/cli"))
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    assert await synchook("replay", seeded.delivery_id) == 0
    assert f"replaying {seeded.delivery_id}" in capsys.readouterr().out
    await run_worker()
    assert [r.headers["webhook-id"] for r in receiver.requests("/cli")] == [seeded.event_id]
    async with app_ctx.db.session() as session:
        replays = list((await session.execute(Replay.__table__.select())).all())  # type: ignore[attr-defined]
    assert [(r.kind, r.requested_by) for r in replays] == [("single", "cli")]


@pytest.mark.usefixtures("cli_env")
async def test_replay_unknown_delivery_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert await synchook("replay", "dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV") == 2
    assert "Delivery not found" in capsys.readouterr().err


@pytest.mark.usefixtures("cli_env")
async def test_bulk_replay_waits_with_a_progress_bar_until_done(
    app_ctx: AppContext,
    tenant: Tenant,
    receiver: Receiver,
    make_worker: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/bulk"))
    seeded = [await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead") for _ in range(3)]
    worker = make_worker(burst=False)
    running = asyncio.create_task(worker.async_run())
    try:
        since = isoformat(utcnow() - timedelta(days=1))
        assert since is not None
        code = await synchook("replay", "--workspace", tenant.workspace_id, "--since", since, "--subscription", sub.id)
        assert code == 0
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    out = capsys.readouterr().out
    assert "3 matched" in out
    assert out.strip().splitlines()[-1] == f"[{'#' * 30}] 3/3 (3 replayed, 0 skipped) completed"
    for s in seeded:
        assert (await delivery(app_ctx, s.delivery_id)).replays == 1


@pytest.mark.usefixtures("cli_env")
async def test_bulk_replay_dry_run_and_no_wait(
    app_ctx: AppContext, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    since = isoformat(utcnow() - timedelta(days=1))
    assert since is not None
    assert await synchook("replay", "--workspace", tenant.workspace_id, "--since", since, "--dry-run") == 0
    assert "1 would be sent" in capsys.readouterr().out
    assert await synchook("replay", "--workspace", tenant.workspace_id, "--since", since, "--no-wait") == 0
    out = capsys.readouterr().out
    assert "queued" in out
    assert (await delivery(app_ctx, seeded.delivery_id)).status == "dead"  # no worker ran
    async with app_ctx.db.session() as session:
        rows = list((await session.execute(Replay.__table__.select())).all())  # type: ignore[attr-defined]
    assert [(r.kind, r.requested_by, r.status) for r in rows] == [("bulk", "cli", "queued")]


@pytest.mark.usefixtures("cli_env")
async def test_bulk_replay_needs_since(tenant: Tenant, capsys: pytest.CaptureFixture[str]) -> None:
    assert await synchook("replay", "--workspace", tenant.workspace_id) == 2
    assert "--since" in capsys.readouterr().err


@pytest.fixture
def beside_dev(cli_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A shell in a directory of its own with no SYNCHOOK_REDIS_URL, as beside `make run`; returns ./.synchook."""
    monkeypatch.delenv("SYNCHOOK_REDIS_URL")
    monkeypatch.chdir(tmp_path)
    return tmp_path / ".synchook"


def announce_dev_redis(data_dir: Path, url: str) -> None:
    """What a running `synchook dev` writes (synchook.root.dev): its pid and its embedded Redis."""
    data_dir.mkdir()
    (data_dir / DEV_REDIS_FILE).write_text(json.dumps({"pid": os.getpid(), "url": url}))


async def test_replay_beside_a_running_dev_enqueues_on_its_redis(
    app_ctx: AppContext,
    tenant: Tenant,
    beside_dev: Path,
    redis: ArqRedis,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert settings.redis_url is not None
    announce_dev_redis(beside_dev, settings.redis_url)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    assert await synchook("replay", seeded.delivery_id) == 0
    captured = capsys.readouterr()
    assert f"replaying {seeded.delivery_id}" in captured.out
    assert "queued;" not in captured.out and "Redis" not in captured.out + captured.err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert await redis.zcard(QUEUE_NAME) == 1  # handed to dev's worker, not left for a sweep


async def test_replay_without_any_redis_says_a_worker_picks_it_up(
    app_ctx: AppContext,
    tenant: Tenant,
    beside_dev: Path,
    receiver: Receiver,
    run_worker: Run,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/swept"))
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    assert await synchook("replay", seeded.delivery_id) == 0
    captured = capsys.readouterr()
    assert f"queued; a running worker picks it up within {SWEEP_EVERY_S} s" in captured.out
    assert "SYNCHOOK_REDIS_URL is unset" in captured.out
    assert captured.err == ""
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text  # no "could not enqueue"
    await run_worker(with_cron=True)  # the sweeper (run at start-up) is what picks it up
    assert [r.headers["webhook-id"] for r in receiver.requests("/swept")] == [seeded.event_id]


async def test_bulk_replay_no_wait_without_any_redis_returns_and_leaves_it_queued(
    app_ctx: AppContext, tenant: Tenant, beside_dev: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    since = isoformat(utcnow() - timedelta(days=1))
    assert since is not None
    assert await synchook("replay", "--workspace", tenant.workspace_id, "--since", since, "--no-wait") == 0
    out = capsys.readouterr().out
    assert f"queued; a running worker starts it within {RESUME_WITHIN}" in out
    assert "#" not in out  # no progress bar: --no-wait does not follow, nor run it here
    assert (await delivery(app_ctx, seeded.delivery_id)).status == "dead"
    async with app_ctx.db.session() as session:
        rows = list((await session.execute(Replay.__table__.select())).all())  # type: ignore[attr-defined]
    assert [(r.kind, r.status) for r in rows] == [("bulk", "queued")]


@pytest.mark.usefixtures("cli_env")
async def test_bulk_replay_past_replay_max_prints_the_count_and_how_to_confirm(
    app_ctx: AppContext, tenant: Tenant, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNCHOOK_REPLAY_MAX", "1")
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    for _ in range(2):
        await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    since = isoformat(utcnow() - timedelta(days=1))
    assert since is not None
    assert await synchook("replay", "--workspace", tenant.workspace_id, "--since", since, "--no-wait") == 2
    assert "--confirm-count 2" in capsys.readouterr().err
    confirmed = ("--confirm-count", "2", "--no-wait")
    assert await synchook("replay", "--workspace", tenant.workspace_id, "--since", since, *confirmed) == 0
    assert "2 matched" in capsys.readouterr().out
