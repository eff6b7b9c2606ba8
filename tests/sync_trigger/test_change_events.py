"""Change events against the fake providers (CONTRACT §6): what a real sync writes, per provider, and a
receiver that mirrors a calendar from calendar.event.* webhooks alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from sync_trigger.calendar_index.models import CalendarChange
from synchook.context import AppContext
from synchook.fakes import FakeProviders
from tests.factories import Tenant, make_tenant
from tests.factories.webhooks import make_subscription
from tests.support.receiver import Receiver
from tests.support.sync_harness import ALICE, SyncHarness, provider_settings, soon, stats

G, M = "google", "microsoft"
BOB = "bob@example.com"
TITLE = {G: "summary", M: "subject"}

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest.fixture
def settings_overrides(providers_server: FakeProviders) -> dict[str, Any]:
    return provider_settings(providers_server)


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


@pytest.fixture
async def h(app_ctx: AppContext, fake: FakeProviders, tenant: Tenant) -> SyncHarness:
    fake.add_account(G, ALICE)
    fake.add_account(M, ALICE)
    return SyncHarness(app_ctx, fake, tenant.workspace_id)


async def changes(h: SyncHarness, after: int = 0) -> list[CalendarChange]:
    async with h.ctx.db.session() as session:
        rows = await session.execute(
            select(CalendarChange)
            .where(col(CalendarChange.workspace_id) == h.workspace_id, col(CalendarChange.sequence) > after)
            .order_by(col(CalendarChange.sequence))
        )
        return list(rows.scalars())


async def last_sequence(h: SyncHarness) -> int:
    found = await changes(h)
    return found[-1].sequence if found else 0


def meeting(h: SyncHarness, provider: str, hours: float = 0) -> str:
    return h.fake.put_event(
        provider,
        ALICE,
        ALICE,
        summary="Planning",
        start=soon(hours),
        location="Room 1",
        organizer=(ALICE, "Alice"),
        attendees=[{"email": BOB, "name": "Bob", "response": "needs_action", "optional": False}],
    )


@pytest.mark.parametrize("provider", [G, M])
async def test_title_and_attendee_edits_are_updates_of_just_those_fields(h: SyncHarness, provider: str) -> None:
    event_id = meeting(h, provider)
    await h.connect(provider)
    assert await h.run() == stats(created=1)
    [created] = await changes(h)
    assert created.type == "created" and created.initial is True
    assert created.event["attendees"] == [{"email": BOB, "name": "Bob", "response": "needs_action", "optional": False}]
    assert created.event["organizer"] == {"email": ALICE, "name": "Alice"} and created.event["location"] == "Room 1"

    h.fake.edit_event(provider, ALICE, ALICE, event_id, {TITLE[provider]: "Planning (v2)"})
    assert await h.run() == stats(updated=1)
    [renamed] = await changes(h, after=1)
    assert renamed.type == "updated" and renamed.initial is False
    assert renamed.changed_fields == ["title"] and renamed.previous == {"title": "Planning"}

    h.fake.set_attendee_response(provider, ALICE, ALICE, event_id, BOB, "accepted")
    assert await h.run() == stats(updated=1)
    [answered] = await changes(h, after=2)
    assert answered.changed_fields == ["attendees"]
    assert answered.previous == {"attendees": created.event["attendees"]}
    assert answered.event["attendees"][0]["response"] == "accepted"

    # Nothing changed at the provider: nothing is written.
    assert await h.run() == stats()
    assert await last_sequence(h) == 3


async def test_graphs_duplicate_in_one_round_is_one_change(h: SyncHarness) -> None:
    ids = h.fake.add_events(M, ALICE, ALICE, 3, first=soon())
    await h.connect(M)
    await h.run()
    h.fake.put_event(M, ALICE, ALICE, ids[0], summary="Renamed")
    h.fake.duplicate_next_delta_changes(1)
    assert await h.run() == stats(updated=1)
    [renamed] = await changes(h, after=3)
    assert renamed.changed_fields == ["title"]


@pytest.mark.parametrize("provider", [G, M])
async def test_after_a_410_the_full_round_writes_only_real_differences(h: SyncHarness, provider: str) -> None:
    ids = h.fake.add_events(provider, ALICE, ALICE, 5, first=soon())
    await h.connect(provider)
    await h.run()
    h.fake.put_event(provider, ALICE, ALICE, ids[1], summary="Moved on")
    h.fake.delete_event(provider, ALICE, ALICE, ids[2])
    h.fake.invalidate_sync_tokens(provider, ALICE, ALICE)
    assert await h.run() == stats(updated=1, deleted=1)
    later = await changes(h, after=5)
    assert [(c.type, c.event["provider_event_id"], c.changed_fields) for c in later] == [
        ("updated", ids[1], ["title"]),
        ("deleted", ids[2], []),
    ]
    assert later[1].event["status"] == "cancelled" and later[1].event["title"] == "Event 2"


async def test_full_mode_sync_diffs_against_the_index(h: SyncHarness) -> None:
    ids = h.fake.add_events(G, ALICE, ALICE, 3, first=soon())
    await h.connect(G)
    await h.run()
    assert await h.run(mode="full") == stats()
    h.fake.delete_event(G, ALICE, ALICE, ids[0])
    assert await h.run(mode="full") == stats(deleted=1)
    assert [c.type for c in await changes(h)] == ["created"] * 3 + ["deleted"]


# --- A mirror from webhooks alone --------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def all_events(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/v1/calendar/events", headers=tenant.headers, params=params)).json()
        found.update({e["id"]: e for e in body["data"]})
        cursor = body["next_cursor"]
        if cursor is None:
            return found


def mirror_of(bodies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a receiver builds: apply calendar.event.* in sequence order (webhooks may arrive in any order)."""
    mirror: dict[str, dict[str, Any]] = {}
    for body in sorted(bodies, key=lambda b: b["data"]["sequence"]):
        event = body["data"]["event"]
        if body["type"] == "calendar.event.deleted":
            mirror.pop(event["id"], None)
        else:
            mirror[event["id"]] = event
    return mirror


async def test_a_receiver_mirrors_the_calendar_from_webhooks_alone(
    h: SyncHarness,
    tenant: Tenant,
    client: httpx.AsyncClient,
    receiver: Receiver,
    run_worker: Callable[..., Awaitable[Any]],
) -> None:
    await make_subscription(h.ctx, h.workspace_id, url=receiver.url("/mirror"), event_types=["calendar.event.*"])
    google = [meeting(h, G, hours=n) for n in range(4)]
    graph = [meeting(h, M, hours=n) for n in range(3)]
    await h.connect(G)
    await h.connect(M)

    async def sync_and_deliver() -> None:
        await h.run()
        await run_worker()

    await sync_and_deliver()
    # A mixed run: edits of several kinds, deletions, creations, a 410 with a full round.
    h.fake.edit_event(G, ALICE, ALICE, google[0], {"summary": "Renamed", "location": "Room 2"})
    h.fake.set_attendee_response(M, ALICE, ALICE, graph[0], BOB, "declined")
    h.fake.delete_event(G, ALICE, ALICE, google[1])
    added = h.fake.put_event(M, ALICE, ALICE, summary="Added", start=soon(30))
    await sync_and_deliver()
    h.fake.delete_event(M, ALICE, ALICE, added)
    h.fake.edit_event(M, ALICE, ALICE, graph[1], {"subject": "Graph renamed"})
    h.fake.invalidate_sync_tokens(G, ALICE, ALICE)
    h.fake.set_attendee_response(G, ALICE, ALICE, google[2], BOB, "tentative")
    await sync_and_deliver()

    await asyncio.sleep(0)
    bodies = [json.loads(r.body) for r in receiver.requests("/mirror")]
    assert all(b["type"].startswith("calendar.event.") for b in bodies)
    sequences = sorted(b["data"]["sequence"] for b in bodies)
    assert sequences == list(range(1, len(sequences) + 1)) == [c.sequence for c in await changes(h)]
    mirror = mirror_of(bodies)
    indexed = await all_events(client, tenant)
    assert mirror == indexed
    assert len(indexed) == 6 and {e["title"] for e in indexed.values()} >= {"Renamed", "Graph renamed"}
