"""POST /v1/webhooks/replays: matching, dry run, the background job in batches, past events to a new
subscription, no duplicate in-flight deliveries, progress, cancellation, audit, validation, scopes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from synchook.context import AppContext
from synchook.timeutil import isoformat, utcnow
from tests.factories import Tenant, add_key, make_tenant
from tests.factories.admin import count_rows, delivery, replay_row, seed_delivery, seed_event
from tests.factories.webhooks import deliveries, make_subscription
from tests.support.postgres import blocked_on_a_lock
from tests.support.receiver import Receiver
from webhooks.admin import replays
from webhooks.models import Delivery, Replay

Run = Callable[..., Awaitable[Any]]

pytestmark = pytest.mark.usefixtures("api_url")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


def ago(**delta: float) -> str:
    value = isoformat(utcnow() - timedelta(**delta))
    assert value is not None
    return value


async def start(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/webhooks/replays", json=body, headers=tenant.headers)
    assert response.status_code == 202, response.text
    return dict(response.json()["data"])


async def test_bulk_replay_sends_failed_and_dead_deliveries_again(
    client: httpx.AsyncClient, app_ctx: AppContext, receiver: Receiver, run_worker: Run, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/bulk"))
    now = utcnow()
    dead = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead", at=now - timedelta(hours=3))
    failed = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="failed", at=now - timedelta(hours=2))
    ok = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="succeeded", at=now - timedelta(hours=1))

    data = await start(client, tenant, since=ago(days=1))
    assert data["id"].startswith("rpl_")
    assert (data["matched"], data["status"]) == (2, "queued")
    await run_worker()

    progress = (await client.get(f"/v1/webhooks/replays/{data['id']}", headers=tenant.headers)).json()["data"]
    assert (progress["status"], progress["matched"], progress["replayed"], progress["skipped"]) == (
        "completed",
        2,
        2,
        0,
    )
    assert progress["completed_at"] is not None
    assert sorted(r.headers["webhook-id"] for r in receiver.requests("/bulk")) == sorted(
        [dead.event_id, failed.event_id]
    )
    assert (await delivery(app_ctx, dead.delivery_id)).status == "succeeded"
    assert (await delivery(app_ctx, ok.delivery_id)).replays == 0


async def test_dry_run_counts_without_creating_anything(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/x")
    for _ in range(3):
        await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    response = await client.post(
        "/v1/webhooks/replays", params={"dry_run": "true"}, json={"since": ago(days=1)}, headers=tenant.headers
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert (data["id"], data["status"], data["matched"], data["deliveries"]) == (None, "dry_run", 3, 3)
    assert await count_rows(app_ctx, Replay) == 0
    assert await count_rows(app_ctx, Delivery, status="dead") == 3


async def test_filters_select_what_is_replayed(client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant) -> None:
    a = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    b = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/b")
    now = utcnow()
    wanted = await seed_delivery(
        app_ctx, tenant.workspace_id, a.id, status="dead", type="calendar.sync.failed", at=now - timedelta(hours=5)
    )
    others = [
        await seed_delivery(app_ctx, tenant.workspace_id, b.id, status="dead", type="calendar.sync.failed"),
        await seed_delivery(app_ctx, tenant.workspace_id, a.id, status="dead", type="calendar.sync.completed"),
        await seed_delivery(app_ctx, tenant.workspace_id, a.id, status="failed", type="calendar.sync.failed"),
        await seed_delivery(
            app_ctx, tenant.workspace_id, a.id, status="dead", type="calendar.sync.failed", at=now - timedelta(days=3)
        ),
    ]
    data = await start(
        client,
        tenant,
        since=ago(days=2),
        until=ago(hours=1),
        subscription_id=a.id,
        event_types=["calendar.sync.failed"],
        status=["dead"],
    )
    assert data["matched"] == 1
    # The worker delivers to port 9 (refused), so look at the replay counters rather than the receiver.
    done = await replays.run_bulk_replay(app_ctx, data["id"])
    assert done is not None
    assert (done.status, done.replayed) == ("completed", 1)
    assert (await delivery(app_ctx, wanted.delivery_id)).replays == 1
    for other in others:
        assert (await delivery(app_ctx, other.delivery_id)).replays == 0


async def test_event_type_wildcards_are_expanded(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead", type="calendar.sync.failed")
    await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead", type="calendar.sync.completed")
    await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead", type="webhook.test")
    data = await start(client, tenant, since=ago(days=1), event_types=["calendar.sync.*"])
    assert data["matched"] == 2


async def test_runs_in_batches_recording_progress(app_ctx: AppContext, tenant: Tenant) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    now = utcnow()
    seeded = [
        await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead", at=now - timedelta(minutes=m))
        for m in range(5, 0, -1)
    ]
    from webhooks.admin.schemas import BulkReplayBody

    async with app_ctx.db.session() as session:
        replay, _ = await replays.create_bulk_replay(
            session,
            workspace_id=tenant.workspace_id,
            body=BulkReplayBody.model_validate({"since": ago(hours=1)}),
            requested_by=tenant.key_id,
            replay_max=100_000,
        )
    # One batch per transaction: stop after the first by cancelling from inside the schedule hook.
    seen: list[tuple[str | None, int]] = []
    original = replays.schedule_deliveries

    async def spy(app: AppContext, ids: list[str], **kwargs: Any) -> int:
        row = await replay_row(app_ctx, replay.id)
        seen.append((row.cursor, row.replayed))
        return await original(app, ids, **kwargs)

    replays.schedule_deliveries = spy  # type: ignore[assignment]
    try:
        done = await replays.run_bulk_replay(app_ctx, replay.id, batch_size=2)
    finally:
        replays.schedule_deliveries = original  # type: ignore[assignment]
    assert done is not None and (done.status, done.replayed) == ("completed", 5)
    ids = [s.delivery_id for s in seeded]
    assert seen == [(ids[1], 2), (ids[3], 4), (ids[4], 5)]


async def test_pending_and_in_flight_deliveries_are_never_doubled(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    sending = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="failed", lease_for=timedelta(minutes=1))
    await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="pending", attempts=[])
    dead = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    data = await start(client, tenant, since=ago(days=1), subscription_id=sub.id)
    assert data["matched"] == 2  # the pending one is not even a candidate
    done = await replays.run_bulk_replay(app_ctx, data["id"])
    assert done is not None
    assert (done.replayed, done.skipped) == (1, 1)
    assert (await delivery(app_ctx, sending.delivery_id)).replays == 0
    assert (await delivery(app_ctx, dead.delivery_id)).status == "pending"
    # Every event still has exactly one delivery to the subscription.
    rows = await deliveries(app_ctx, subscription_id=sub.id)
    assert len({r.event_id for r in rows}) == len(rows) == 3


async def test_past_events_are_sent_to_a_new_subscription(
    client: httpx.AsyncClient, app_ctx: AppContext, receiver: Receiver, run_worker: Run, tenant: Tenant
) -> None:
    now = utcnow()
    old = [
        await seed_event(app_ctx, tenant.workspace_id, at=now - timedelta(hours=h), type=t)
        for h, t in ((5, "calendar.sync.completed"), (4, "calendar.sync.failed"), (3, "calendar.sync.completed"))
    ]
    await seed_event(app_ctx, tenant.workspace_id, at=now - timedelta(days=3))  # outside the range
    await seed_event(app_ctx, tenant.workspace_id, at=now - timedelta(hours=2), provider="microsoft")
    created = await client.post(
        "/v1/webhooks/subscriptions",
        json={"url": receiver.url("/new"), "event_types": ["calendar.sync.*"], "providers": ["google"]},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    sub_id = created.json()["data"]["id"]

    data = await start(client, tenant, since=ago(days=1), subscription_id=sub_id)
    assert (data["matched"], data["deliveries"], data["undelivered_events"]) == (3, 0, 3)
    await run_worker()

    assert sorted(r.headers["webhook-id"] for r in receiver.requests("/new")) == sorted(old)
    rows = await deliveries(app_ctx, subscription_id=sub_id)
    assert sorted(r.event_id for r in rows) == sorted(old)
    assert {r.status for r in rows} == {"succeeded"}
    progress = (await client.get(f"/v1/webhooks/replays/{data['id']}", headers=tenant.headers)).json()["data"]
    assert (progress["status"], progress["replayed"]) == ("completed", 3)

    # Asked again: everything has its delivery now, so nothing new is created or sent.
    again = await start(client, tenant, since=ago(days=1), subscription_id=sub_id)
    assert again["matched"] == 0
    await run_worker()
    assert receiver.count("/new") == 3
    assert len(await deliveries(app_ctx, subscription_id=sub_id)) == 3


async def test_event_types_narrow_the_past_events_sent(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    await seed_event(app_ctx, tenant.workspace_id, type="calendar.sync.completed")
    failed = await seed_event(app_ctx, tenant.workspace_id, type="calendar.sync.failed")
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    data = await start(client, tenant, since=ago(days=1), subscription_id=sub.id, event_types=["calendar.sync.failed"])
    assert data["matched"] == 1
    await replays.run_bulk_replay(app_ctx, data["id"])
    assert [r.event_id for r in await deliveries(app_ctx, subscription_id=sub.id)] == [failed]


async def test_cancel_stops_a_queued_replay(client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    data = await start(client, tenant, since=ago(days=1))
    response = await client.post(f"/v1/webhooks/replays/{data['id']}/cancel", headers=tenant.headers)
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "cancelled"
    done = await replays.run_bulk_replay(app_ctx, data["id"])
    assert done is not None and (done.status, done.replayed) == ("cancelled", 0)
    assert (await delivery(app_ctx, seeded.delivery_id)).status == "dead"
    again = await client.post(f"/v1/webhooks/replays/{data['id']}/cancel", headers=tenant.headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "replay_finished"


async def test_cancel_between_batches_keeps_what_was_done(app_ctx: AppContext, tenant: Tenant) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    for _ in range(4):
        await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    from webhooks.admin.schemas import BulkReplayBody

    async with app_ctx.db.session() as session:
        replay, _ = await replays.create_bulk_replay(
            session,
            workspace_id=tenant.workspace_id,
            body=BulkReplayBody.model_validate({"since": ago(hours=1)}),
            requested_by="test",
            replay_max=100_000,
        )
    original = replays.schedule_deliveries

    async def cancel_after_first(app: AppContext, ids: list[str], **kwargs: Any) -> int:
        async with app_ctx.db.session() as session:
            await replays.cancel_replay(session, workspace_id=tenant.workspace_id, replay_id=replay.id)
        return await original(app, ids, **kwargs)

    replays.schedule_deliveries = cancel_after_first  # type: ignore[assignment]
    try:
        done = await replays.run_bulk_replay(app_ctx, replay.id, batch_size=2)
    finally:
        replays.schedule_deliveries = original  # type: ignore[assignment]
    assert done is not None and (done.status, done.replayed) == ("cancelled", 2)
    assert await count_rows(app_ctx, Delivery, status="pending") == 2


async def test_audit_trail_lists_who_when_and_what(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    other_admin = await add_key(app_ctx, tenant, scopes=["admin:webhooks"])
    first = await start(client, tenant, since=ago(days=1), status=["dead"])
    await client.post(f"/v1/webhooks/replays/{first['id']}/cancel", headers=tenant.headers)  # one active at a time
    second = await start(client, other_admin, since=ago(days=2), subscription_id=sub.id)
    trail = (await client.get("/v1/webhooks/replays", headers=tenant.headers)).json()
    assert [r["id"] for r in trail["data"]] == [second["id"], first["id"]]
    newest = trail["data"][0]
    assert newest["requested_by"] == other_admin.key_id
    assert newest["kind"] == "bulk"
    assert newest["criteria"]["subscription_id"] == sub.id
    assert newest["criteria"]["status"] == ["dead", "failed"]
    assert newest["criteria"]["until"] is not None  # an open range is closed at request time
    assert trail["data"][1]["criteria"]["status"] == ["dead"]
    page = (await client.get("/v1/webhooks/replays", params={"limit": 1}, headers=tenant.headers)).json()
    assert [r["id"] for r in page["data"]] == [second["id"]]
    rest = (
        await client.get("/v1/webhooks/replays", params={"cursor": page["next_cursor"]}, headers=tenant.headers)
    ).json()
    assert [r["id"] for r in rest["data"]] == [first["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "since"),
        ({"since": "not a date"}, "since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-02T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00Z", "confirm_count": "3"}, "confirm_count"),
        ({"since": "2026-01-01T00:00:00Z", "confirm_count": -1}, "confirm_count"),
        ({"since": "2026-01-01T00:00:00Z", "status": ["succeeded"]}, "status.0"),
        ({"since": "2026-01-01T00:00:00Z", "status": []}, "status"),
        ({"since": "2026-01-01T00:00:00Z", "event_types": []}, "event_types"),
        ({"since": "2026-01-01T00:00:00Z", "everything": True}, "everything"),
    ],
)
async def test_bad_bodies_are_422(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], field: str) -> None:
    response = await client.post("/v1/webhooks/replays", json=body, headers=tenant.headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T09:30"}, "until"),
    ],
)
async def test_a_time_without_a_time_zone_is_422_naming_it(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/webhooks/replays", json=body, headers=tenant.headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("validation_error", field)
    assert error["message"].startswith(f"{field}: date-time has no time zone")


async def test_until_before_since_says_so_without_pydantics_prefix(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    response = await client.post("/v1/webhooks/replays", json=body, headers=tenant.headers)
    message = response.json()["error"]["message"]
    assert message.endswith("must be after since") and "Value error" not in message


async def test_another_workspaces_subscription_is_404(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    other = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, other.workspace_id, url="http://127.0.0.1:9/a")
    body = {"since": ago(days=1), "subscription_id": sub.id}
    response = await client.post("/v1/webhooks/replays", json=body, headers=tenant.headers)
    assert response.status_code == 404


async def test_deleted_subscription_is_409(client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    await client.delete(f"/v1/webhooks/subscriptions/{sub.id}", headers=tenant.headers)
    body = {"since": ago(days=1), "subscription_id": sub.id}
    response = await client.post("/v1/webhooks/replays", json=body, headers=tenant.headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "subscription_deleted"


async def test_deliveries_to_deleted_subscriptions_are_not_matched(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    gone = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    await seed_delivery(app_ctx, tenant.workspace_id, gone.id, status="dead")
    await client.delete(f"/v1/webhooks/subscriptions/{gone.id}", headers=tenant.headers)
    assert (await start(client, tenant, since=ago(days=1)))["matched"] == 0


async def test_other_workspaces_replays_are_404_and_their_deliveries_untouched(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    other = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, other.workspace_id, url="http://127.0.0.1:9/a")
    theirs = await seed_delivery(app_ctx, other.workspace_id, sub.id, status="dead")
    mine = await start(client, tenant, since=ago(days=1))
    assert mine["matched"] == 0
    foreign = await start(client, other, since=ago(days=1))
    for path in (f"/v1/webhooks/replays/{foreign['id']}", f"/v1/webhooks/replays/{foreign['id']}/cancel"):
        method = client.get if not path.endswith("cancel") else client.post
        response = await method(path, headers=tenant.headers)
        assert response.status_code == 404
    await replays.run_bulk_replay(app_ctx, mine["id"])
    assert (await delivery(app_ctx, theirs.delivery_id)).replays == 0
    listed = (await client.get("/v1/webhooks/replays", headers=tenant.headers)).json()["data"]
    assert [r["id"] for r in listed] == [mine["id"]]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/webhooks/replays"),
        ("GET", "/v1/webhooks/replays"),
        ("GET", "/v1/webhooks/replays/rpl_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("POST", "/v1/webhooks/replays/rpl_01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel"),
    ],
)
async def test_replays_need_admin_webhooks(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant, method: str, path: str
) -> None:
    reader = await add_key(app_ctx, tenant, scopes=["read:webhooks", "write:webhooks"])
    response = await client.request(method, path, json={"since": ago(days=1)}, headers=reader.headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_permissions"


async def test_stalled_replays_are_enqueued_again(
    client: httpx.AsyncClient, app_ctx: AppContext, run_worker: Run, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    data = await start(client, tenant, since=ago(days=1))
    assert app_ctx.redis is not None
    await app_ctx.redis.flushall()  # the job is lost with Redis
    assert await replays.resume_stalled_replays(app_ctx, stalled_after=timedelta(0)) == 1
    await run_worker()
    assert (await replay_row(app_ctx, data["id"])).status == "completed"
    assert (await delivery(app_ctx, seeded.delivery_id)).replays == 1


# --- bounds: SYNCHOOK_REPLAY_MAX, one active bulk replay per workspace -----------------------------


class TestReplayMax:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"replay_max": 2}

    async def test_more_matches_than_replay_max_is_422_with_the_count(
        self, client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
    ) -> None:
        sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
        for _ in range(3):
            await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
        for body in ({"since": ago(days=1)}, {"since": ago(days=1), "confirm_count": 2}):
            response = await client.post("/v1/webhooks/replays", json=body, headers=tenant.headers)
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["code"] == "replay_too_large"
            assert "3" in error["message"] and "confirm_count" in error["message"]
        assert await count_rows(app_ctx, Replay) == 0
        # A dry run still tells the count, so a caller can confirm it.
        preview = await client.post(
            "/v1/webhooks/replays", params={"dry_run": "true"}, json={"since": ago(days=1)}, headers=tenant.headers
        )
        assert (preview.status_code, preview.json()["data"]["matched"]) == (200, 3)

    async def test_confirm_count_equal_to_the_count_is_accepted(
        self, client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
    ) -> None:
        sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
        for _ in range(3):
            await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
        data = await start(client, tenant, since=ago(days=1), confirm_count=3)
        assert (data["matched"], data["status"]) == (3, "queued")

    async def test_at_most_replay_max_needs_no_confirmation(
        self, client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
    ) -> None:
        sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
        for _ in range(2):
            await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
        assert (await start(client, tenant, since=ago(days=1)))["matched"] == 2


async def test_a_second_bulk_replay_while_one_is_active_is_409(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    first = await start(client, tenant, since=ago(days=1))
    again = await client.post("/v1/webhooks/replays", json={"since": ago(days=2)}, headers=tenant.headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "replay_in_progress"
    assert first["id"] in again.json()["error"]["message"]
    # Another workspace is not held up, and once the first is over the workspace may start another.
    other = await make_tenant(app_ctx)
    await start(client, other, since=ago(days=1))
    await client.post(f"/v1/webhooks/replays/{first['id']}/cancel", headers=tenant.headers)
    await start(client, tenant, since=ago(days=2))


async def test_concurrent_bulk_replays_accept_exactly_one(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    responses = await asyncio.gather(
        *(client.post("/v1/webhooks/replays", json={"since": ago(days=1)}, headers=tenant.headers) for _ in range(6))
    )
    assert sorted(r.status_code for r in responses) == [202] + [409] * 5
    assert await count_rows(app_ctx, Replay) == 1


async def test_a_concurrent_create_waits_for_the_first_and_is_refused(app_ctx: AppContext, tenant: Tenant) -> None:
    """The check and the insert are one step: a second request cannot pass the check before the first commits."""
    from webhooks.admin.schemas import BulkReplayBody

    body = BulkReplayBody.model_validate({"since": ago(days=1)})

    async def create() -> Replay:
        async with app_ctx.db.session() as session:
            replay, _ = await replays.create_bulk_replay(
                session, workspace_id=tenant.workspace_id, body=body, requested_by="test", replay_max=100_000
            )
        return replay

    async with app_ctx.db.session() as first:
        await replays.create_bulk_replay(
            first, workspace_id=tenant.workspace_id, body=body, requested_by="test", replay_max=100_000
        )
        second = asyncio.create_task(create())
        if not app_ctx.settings.is_sqlite:
            await blocked_on_a_lock(app_ctx.db.engine, waiting_for="the second create")
        else:
            await asyncio.sleep(0)  # SQLite: the second session waits for the write lock before it begins
        assert not second.done()
    with pytest.raises(replays.ReplayInProgress):
        await second
    assert await count_rows(app_ctx, Replay) == 1
