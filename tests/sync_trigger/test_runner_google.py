"""run_sync against the fake Google Calendar over real loopback HTTP: the index and the stats, exactly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import jsonschema_rs
import pytest
from arq.worker import Worker
from sqlalchemy import select
from sqlmodel import col

from subscriptions.catalogue import CATALOGUE
from sync_trigger import runner, tasks
from sync_trigger.models import SyncJob
from synchook.context import AppContext
from synchook.fakes import FakeProviders
from synchook.outbox import RELAY_TASK, Event
from tests.factories import make_tenant
from tests.support.sync_harness import ALICE, SyncHarness, provider_settings, soon, stats

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

G = "google"


@pytest.fixture
def fake(fake: FakeProviders) -> FakeProviders:
    fake.add_account(G, ALICE)
    return fake


@pytest.fixture
def settings_overrides(providers_server: FakeProviders) -> dict[str, Any]:
    return provider_settings(providers_server)


@pytest.fixture
async def h(app_ctx: AppContext, fake: FakeProviders) -> SyncHarness:
    tenant = await make_tenant(app_ctx)
    return SyncHarness(app_ctx, fake, tenant.workspace_id)


async def test_first_incremental_sync_is_a_full_sync_of_the_default_window(h: SyncHarness) -> None:
    ids = h.fake.add_events(G, ALICE, ALICE, 5, first=soon())
    h.fake.put_event(G, ALICE, ALICE, summary="Long ago", start=soon(-24 * 200))
    await h.connect(G)
    assert await h.run() == stats(created=5)
    events = await h.events()
    assert set(events) == set(ids)
    first = events[ids[0]]
    assert first.summary == "Event 0" and first.start == soon() and first.end == soon() + timedelta(minutes=30)
    assert first.provider == G and first.calendar_id == ALICE and first.status == "confirmed"
    cursor = (await h.calendars())[ALICE].sync_cursor
    assert cursor
    sent = h.fake.requests(G, "/events")
    assert "timeMin" in sent[0].query and sent[0].query["singleEvents"] == "true"


async def test_incremental_after_create_update_delete_counts_each_once(h: SyncHarness) -> None:
    ids = h.fake.add_events(G, ALICE, ALICE, 4, first=soon())
    await h.connect(G)
    await h.run()
    h.fake.put_event(G, ALICE, ALICE, summary="New A", start=soon(48))
    h.fake.put_event(G, ALICE, ALICE, summary="New B", start=soon(50))
    h.fake.put_event(G, ALICE, ALICE, ids[1], summary="Renamed")
    h.fake.delete_event(G, ALICE, ALICE, ids[2])
    assert await h.run() == stats(created=2, updated=1, deleted=1)
    events = await h.events()
    assert len(events) == 5 and ids[2] not in events
    assert events[ids[1]].summary == "Renamed"
    incremental = h.fake.requests(G, "/events")[-1]
    assert "syncToken" in incremental.query and "timeMin" not in incremental.query
    # Nothing changed since: nothing counted.
    assert await h.run() == stats()


async def test_paging_with_empty_pages_syncs_everything(h: SyncHarness) -> None:
    h.fake.page_size[G] = 3
    h.fake.add_events(G, ALICE, ALICE, 10, first=soon())
    h.fake.inject_empty_pages(G, 2)
    await h.connect(G)
    assert await h.run() == stats(created=10)
    assert len(await h.events()) == 10
    # calendarList once, four event pages, and the two empty pages (which listing drew them does not matter).
    assert len(h.fake.requests(G, "/calendar/v3/")) == 1 + 4 + 2
    h.fake.inject_empty_pages(G, 1)
    h.fake.put_event(G, ALICE, ALICE, summary="Late", start=soon(30))
    assert await h.run() == stats(created=1)


async def test_expired_sync_token_drops_local_items_and_resyncs_once(h: SyncHarness) -> None:
    ids = h.fake.add_events(G, ALICE, ALICE, 3, first=soon())
    await h.connect(G)
    await h.run()
    h.fake.delete_event(G, ALICE, ALICE, ids[0])
    added = h.fake.put_event(G, ALICE, ALICE, summary="Added", start=soon(72))
    h.fake.invalidate_sync_tokens(G, ALICE, ALICE)
    assert await h.run() == stats(created=1, deleted=1)
    assert set(await h.events()) == {ids[1], ids[2], added}
    statuses = [r.status for r in h.fake.requests(G, "/events")[-2:]]
    assert statuses == [410, 200]
    assert await h.run() == stats()


async def test_expired_access_token_is_refreshed_and_persisted_sealed(h: SyncHarness) -> None:
    h.fake.add_events(G, ALICE, ALICE, 2, first=soon())
    connection = await h.connect(G)
    old_refresh = h.fake.account(G).refresh_token
    h.fake.expire_access_tokens(G)
    assert await h.run() == stats(created=2)
    stored = await h.connection(connection.id)
    new_access = h.fake.account(G).access_token
    assert new_access not in stored.access_token_sealed
    assert h.ctx.box.open(stored.access_token_sealed, context=connection.id) == new_access
    # Google sends no refresh_token on refresh: the old one is kept.
    assert h.ctx.box.open(stored.refresh_token_sealed, context=connection.id) == old_refresh
    assert stored.token_expires_at is not None and stored.token_expires_at > soon(-24)
    assert stored.last_synced_at is not None and stored.status == "active"
    assert [r.status for r in h.fake.requests(G, "/token")] == [200]


async def test_rate_limits_with_retry_after_are_waited_out(h: SyncHarness) -> None:
    h.fake.add_events(G, ALICE, ALICE, 3, first=soon())
    await h.connect(G)
    h.fake.fail_next(G, 1, status=429, retry_after=0.2)
    h.fake.fail_next(G, 1, status=403)
    assert await h.run() == stats(created=3)
    assert [r.status for r in h.fake.requests(G)][:3] == [429, 403, 200]


async def test_throttling_that_never_clears_fails_with_provider_rate_limited(h: SyncHarness) -> None:
    h.ctx.settings = h.ctx.settings.model_copy(update={"max_throttle_wait": 0.5})
    await h.connect(G)
    h.fake.fail_next(G, 20, status=429, retry_after=0.3)
    with pytest.raises(runner.SyncFailure) as failed:
        await h.run()
    assert failed.value.code == "provider_rate_limited"
    assert failed.value.stats == stats(calendars=0)


async def test_invalid_grant_fails_the_job_and_marks_the_connection(h: SyncHarness) -> None:
    connection = await h.connect(G)
    h.fake.expire_access_tokens(G)
    h.fake.revoke_refresh_token(G)
    with pytest.raises(runner.SyncFailure) as failed:
        await h.run()
    assert failed.value.code == "reauth_required"
    assert "reconnect" in failed.value.message
    assert (await h.connection(connection.id)).status == "reauth_required"


async def test_full_mode_rebuilds_only_inside_its_window(h: SyncHarness) -> None:
    inside = h.fake.add_events(G, ALICE, ALICE, 3, first=soon())
    outside = h.fake.put_event(G, ALICE, ALICE, summary="Next year", start=soon(24 * 150))
    await h.connect(G)
    assert await h.run() == stats(created=4)
    window = {"from_date": soon(-1), "to_date": soon(24 * 30)}
    # An unchanged calendar: a full rebuild changes nothing and counts nothing.
    assert await h.run(mode="full", **window) == stats()
    h.fake.delete_event(G, ALICE, ALICE, inside[0])
    h.fake.delete_event(G, ALICE, ALICE, outside)
    h.fake.put_event(G, ALICE, ALICE, inside[1], summary="Moved on")
    assert await h.run(mode="full", **window) == stats(updated=1, deleted=1)
    # The deletion outside the window is not this rebuild's business.
    assert set(await h.events()) == {inside[1], inside[2], outside}
    full = h.fake.requests(G, "/events")[-1]
    assert full.query["timeMin"].startswith(soon(-1).strftime("%Y-%m-%dT%H"))


async def test_calendars_removed_at_the_provider_leave_with_their_events(h: SyncHarness) -> None:
    h.fake.add_calendar(G, ALICE, "team@group.calendar.google.com", name="Team")
    h.fake.add_events(G, ALICE, ALICE, 2, first=soon())
    h.fake.add_events(G, ALICE, "team@group.calendar.google.com", 3, first=soon())
    await h.connect(G)
    assert await h.run() == stats(calendars=2, created=5)
    del h.fake.account(G).calendars["team@group.calendar.google.com"]
    assert await h.run() == stats(calendars=1, deleted=3)
    assert set(await h.calendars()) == {ALICE}


async def test_a_job_for_another_provider_leaves_google_alone(h: SyncHarness) -> None:
    h.fake.add_events(G, ALICE, ALICE, 2, first=soon())
    await h.connect(G)
    assert await h.run(provider="microsoft") == runner.SyncStats()
    assert h.fake.requests(G) == []


# --- End to end: the API, the worker, the lifecycle events ------------------------------------------


async def test_post_sync_runs_on_the_worker_and_completed_event_carries_the_stats(
    app_ctx: AppContext,
    fake: FakeProviders,
    client: httpx.AsyncClient,
    run_worker: Callable[..., Awaitable[Worker]],
) -> None:
    tenant = await make_tenant(app_ctx)
    fake.add_events(G, ALICE, ALICE, 7, first=soon())
    acc = fake.account(G)
    created = await client.post(
        "/v1/calendar/connections",
        headers=tenant.headers,
        json={"provider": G, "account": ALICE, "access_token": acc.access_token, "refresh_token": acc.refresh_token},
    )
    assert created.status_code == 201, created.text
    accepted = await client.post("/v1/calendar/sync", headers=tenant.headers, json={})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["data"]["job_id"]
    await run_worker()
    expected = {"calendars": 1, "events_created": 7, "events_updated": 0, "events_deleted": 0}
    job = (await client.get(f"/v1/calendar/sync/{job_id}", headers=tenant.headers)).json()["data"]
    assert job["status"] == "completed", job
    assert job["stats"] == expected and job["error"] is None
    async with app_ctx.db.session() as session:
        events = list((await session.execute(select(Event).order_by(col(Event.created_at), col(Event.id)))).scalars())
        stored = await session.get(SyncJob, job_id)
    mine = [e for e in events if e.data["job_id"] == job_id and e.type.startswith("calendar.sync.")]
    assert [e.type for e in mine] == ["calendar.sync.queued", "calendar.sync.started", "calendar.sync.completed"]
    assert mine[-1].data["stats"] == expected
    created = [e for e in events if e.type == "calendar.event.created"]
    assert len(created) == 7 and all(e.data["initial"] and e.data["job_id"] == job_id for e in created)
    through = max(e.data["sequence"] for e in created)
    assert mine[-1].data["changes"] == {"created": 7, "updated": 0, "deleted": 0, "through_sequence": through}
    completed = mine[-1]
    body = {"id": completed.id, "type": completed.type, "timestamp": "2026-01-01T00:00:00.000Z", "data": completed.data}
    schema = next(t for t in CATALOGUE if t.name == "calendar.sync.completed").schema()
    assert jsonschema_rs.validator_for(schema).is_valid(body)
    assert stored is not None and stored.trigger == "api"
    listed = (await client.get("/v1/calendar/events", headers=tenant.headers)).json()
    assert [e["title"] for e in listed["data"]] == [f"Event {n}" for n in range(7)]


async def test_change_events_go_to_the_queue_once_the_job_has_finished(
    app_ctx: AppContext, fake: FakeProviders, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Handed off page by page, their fan-out and deliveries ran beside the rest of the sync on the same workers
    # (and SQLite's one write lock): a 10,000-event import with 10 subscriptions took 20 x as long (bench (g)).
    tenant = await make_tenant(app_ctx)
    fake.add_events(G, ALICE, ALICE, 3, first=soon())
    fake.page_size[G] = 1  # three pages, each committing its change
    acc = fake.account(G)
    body = {"provider": G, "account": ALICE, "access_token": acc.access_token, "refresh_token": acc.refresh_token}
    assert (await client.post("/v1/calendar/connections", headers=tenant.headers, json=body)).status_code == 201
    job_id = (await client.post("/v1/calendar/sync", headers=tenant.headers, json={})).json()["data"]["job_id"]
    relayed: list[tuple[list[str], str]] = []  # (event ids, the job's status when they were enqueued)
    enqueue = app_ctx.enqueue

    async def watch(function: str, *args: Any, **kwargs: Any) -> Any:
        if function == RELAY_TASK:
            async with app_ctx.db.session() as session:
                job = await session.get(SyncJob, job_id)
            relayed.append((list(args[0]), job.status if job is not None else "missing"))
        return await enqueue(function, *args, **kwargs)

    monkeypatch.setattr(app_ctx, "enqueue", watch)
    monkeypatch.setattr(tasks, "RELAY_CHUNK", 2)  # a relay job per chunk: an import's fan-out shared by workers
    assert await tasks.run_sync_job({"app": app_ctx}, job_id) == "completed"
    async with app_ctx.db.session() as session:
        rows = await session.execute(select(Event).where(col(Event.type) == "calendar.event.created"))
        change_ids = {e.id for e in rows.scalars()}
    assert len(change_ids) == 3
    handed = [(ids, status) for ids, status in relayed if change_ids & set(ids)]
    assert [status for _, status in handed] == ["completed", "completed"]
    assert [len(ids) for ids, _ in handed] == [2, 1] and change_ids == {i for ids, _ in handed for i in ids}


async def test_nul_from_the_provider_is_stored_as_u_fffd(h: SyncHarness) -> None:
    # Anyone who can invite the account to a meeting writes its title; PostgreSQL text cannot hold NUL.
    h.fake.add_calendar(G, ALICE, "team", name="Team\x00room")
    [event_id] = h.fake.add_events(G, ALICE, ALICE, 1, first=soon())
    h.fake.put_event(G, ALICE, ALICE, event_id, summary="Stand\x00up")
    await h.connect(G)
    assert await h.run() == stats(calendars=2, created=1)
    event = (await h.events())[event_id]
    assert event.summary == event.raw["summary"] == "Stand\ufffdup"
    assert (await h.calendars())["team"].name == "Team\ufffdroom"
