"""Subscription filters `connection_ids` and `calendar_ids` (CONTRACT §4.2): validated against the workspace,
matched at fan-out on the event's data."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from sync_trigger.calendar_index.models import Calendar
from synchook.context import AppContext
from synchook.ids import new_id
from synchook.outbox import record_event
from tests.factories import Tenant, make_tenant
from tests.sync_trigger.test_calendar_index import apply, change, connection_with_calendar
from webhooks.dispatch import dispatch_events
from webhooks.models import Delivery

URL = "https://r.example.com/hook"


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"allow_private_targets": True}


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx, scopes=["read:webhooks", "write:webhooks"])


@pytest.fixture
async def google(app_ctx: AppContext, tenant: Tenant) -> Calendar:
    return await connection_with_calendar(app_ctx, tenant, "google")


@pytest.fixture
async def graph(app_ctx: AppContext, tenant: Tenant) -> Calendar:
    return await connection_with_calendar(app_ctx, tenant, "microsoft")


async def create(client: httpx.AsyncClient, tenant: Tenant, **fields: object) -> httpx.Response:
    body = {"url": URL, "event_types": ["calendar.*"], **fields}
    return await client.post("/v1/webhooks/subscriptions", headers=tenant.headers, json=body)


async def test_filters_are_stored_shown_and_patched(
    client: httpx.AsyncClient, tenant: Tenant, google: Calendar, graph: Calendar
) -> None:
    created = await create(client, tenant, connection_ids=[graph.connection_id], calendar_ids=[google.id, google.id])
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert data["connection_ids"] == [graph.connection_id] and data["calendar_ids"] == [google.id]
    path = f"/v1/webhooks/subscriptions/{data['id']}"
    patched = await client.patch(path, headers=tenant.headers, json={"calendar_ids": None})
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"]["calendar_ids"] is None
    assert patched.json()["data"]["connection_ids"] == [graph.connection_id]
    shown = (await client.get(path, headers=tenant.headers)).json()["data"]
    assert shown["calendar_ids"] is None and shown["connection_ids"] == [graph.connection_id]
    unfiltered = (await create(client, tenant)).json()["data"]
    assert unfiltered["connection_ids"] is None and unfiltered["calendar_ids"] is None


@pytest.mark.parametrize("field", ["connection_ids", "calendar_ids"])
async def test_unknown_or_foreign_ids_are_422_naming_the_field(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, google: Calendar, field: str
) -> None:
    foreign = await connection_with_calendar(app_ctx, await make_tenant(app_ctx))
    theirs = foreign.connection_id if field == "connection_ids" else foreign.id
    made_up = new_id("conn") if field == "connection_ids" else new_id("cal")
    for ids in ([theirs], [made_up], ["junk"], []):
        response = await create(client, tenant, **{field: ids})
        assert response.status_code == 422, (ids, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error" and field in error["message"]
    ok = await create(client, tenant)
    path = f"/v1/webhooks/subscriptions/{ok.json()['data']['id']}"
    patched = await client.patch(path, headers=tenant.headers, json={field: [theirs]})
    assert patched.status_code == 422 and field in patched.json()["error"]["message"]


async def deliveries_by_subscription(ctx: AppContext, event_ids: list[str]) -> dict[str, set[str]]:
    async with ctx.db.session() as session:
        rows = await session.execute(
            sa.select(Delivery.subscription_id, Delivery.event_id).where(  # type: ignore[call-overload]
                Delivery.event_id.in_(event_ids)  # type: ignore[attr-defined]
            )
        )
    found: dict[str, set[str]] = {}
    for subscription_id, event_id in rows:
        found.setdefault(subscription_id, set()).add(event_id)
    return found


async def test_fan_out_matches_connection_and_calendar_filters(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, google: Calendar, graph: Calendar
) -> None:
    by_calendar = (await create(client, tenant, calendar_ids=[google.id])).json()["data"]["id"]
    by_connection = (await create(client, tenant, connection_ids=[graph.connection_id])).json()["data"]["id"]
    everything = (await create(client, tenant)).json()["data"]["id"]
    on_google = (await apply(app_ctx, google, change("g1"), change("g2"))).event_ids
    on_graph = (await apply(app_ctx, graph, change("m1"))).event_ids
    # Lifecycle events: a job of one provider, and one of every provider.
    async with app_ctx.db.session() as session:
        data = {"job_id": new_id("cal_sync"), "workspace_id": tenant.workspace_id}
        google_job = record_event(
            session, workspace_id=tenant.workspace_id, type="calendar.sync.completed", provider="google",
            data={**data, "provider": "google"},
        ).id  # fmt: skip
        any_job = record_event(
            session, workspace_id=tenant.workspace_id, type="calendar.sync.completed", data={**data, "provider": None}
        ).id
    ids = [*on_google, *on_graph, google_job, any_job]
    await dispatch_events(app_ctx, ids, worker=None)
    found = await deliveries_by_subscription(app_ctx, ids)
    assert found[by_calendar] == {*on_google, google_job, any_job}
    assert found[by_connection] == {*on_graph, any_job}
    assert found[everything] == set(ids)


async def test_lifecycle_events_of_scoped_jobs_match_the_connection_or_calendar_they_covered(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, google: Calendar, graph: Calendar
) -> None:
    other_google = await connection_with_calendar(app_ctx, tenant, "google")
    by_calendar = (await create(client, tenant, calendar_ids=[google.id])).json()["data"]["id"]
    by_connection = (await create(client, tenant, connection_ids=[graph.connection_id])).json()["data"]["id"]

    def job(provider: str, *, connection_id: str, calendar_id: str | None) -> dict[str, object]:
        return {
            "job_id": new_id("cal_sync"),
            "workspace_id": tenant.workspace_id,
            "provider": provider,
            "connection_id": connection_id,
            "calendar_id": calendar_id,
        }

    jobs = {
        # Push syncs name their calendar: only the listed one matches, not another calendar of the provider.
        "push_listed": job("google", connection_id=google.connection_id, calendar_id=google.id),
        "push_other": job("google", connection_id=other_google.connection_id, calendar_id=other_google.id),
        # Polls name their connection: exact for a connection filter.
        "poll_listed": job("microsoft", connection_id=graph.connection_id, calendar_id=None),
        "poll_other_google": job("google", connection_id=other_google.connection_id, calendar_id=None),
    }
    ids: dict[str, str] = {}
    async with app_ctx.db.session() as session:
        for name, data in jobs.items():
            ids[name] = record_event(
                session, workspace_id=tenant.workspace_id, type="calendar.sync.completed",
                provider=str(data["provider"]), data=data,
            ).id  # fmt: skip
    await dispatch_events(app_ctx, list(ids.values()), worker=None)
    found = await deliveries_by_subscription(app_ctx, list(ids.values()))
    # A calendar filter cannot tell which connection a poll covered: it falls back to the provider.
    assert found[by_calendar] == {ids["push_listed"], ids["poll_other_google"]}
    assert found[by_connection] == {ids["poll_listed"]}
