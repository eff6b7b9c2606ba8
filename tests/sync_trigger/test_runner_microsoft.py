"""run_sync against the fake Microsoft Graph over real loopback HTTP: delta rounds, rotation, throttling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sync_trigger import runner
from synchook.context import AppContext
from synchook.fakes import CLIENTS, FakeProviders
from tests.factories import make_tenant
from tests.support.sync_harness import ALICE, SyncHarness, provider_settings, soon, stats

M = "microsoft"


@pytest.fixture
def fake(fake: FakeProviders) -> FakeProviders:
    fake.add_account(M, ALICE)
    return fake


@pytest.fixture
def settings_overrides(providers_server: FakeProviders) -> dict[str, Any]:
    return provider_settings(providers_server)


@pytest.fixture
async def h(app_ctx: AppContext, fake: FakeProviders) -> SyncHarness:
    tenant = await make_tenant(app_ctx)
    return SyncHarness(app_ctx, fake, tenant.workspace_id)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_full_then_incremental_after_create_update_delete(h: SyncHarness) -> None:
    ids = h.fake.add_events(M, ALICE, ALICE, 4, first=soon())
    await h.connect(M)
    assert await h.run() == stats(created=4)
    cursor = (await h.calendars())[ALICE].sync_cursor
    assert cursor is not None and "$deltatoken=" in cursor
    added = h.fake.put_event(M, ALICE, ALICE, summary="Added", start=soon(40))
    h.fake.put_event(M, ALICE, ALICE, ids[0], summary="Renamed")
    h.fake.delete_event(M, ALICE, ALICE, ids[3])
    assert await h.run() == stats(created=1, updated=1, deleted=1)
    events = await h.events()
    assert set(events) == {ids[0], ids[1], ids[2], added}
    assert events[ids[0]].summary == "Renamed" and events[added].start == soon(40)
    # The whole stored deltaLink was followed unchanged.
    last = h.fake.requests(M, "/calendarView/delta")[-1]
    assert "$deltatoken" in last.query and "startDateTime" not in last.query
    assert await h.run() == stats()


async def test_duplicated_delta_changes_count_once(h: SyncHarness) -> None:
    ids = h.fake.add_events(M, ALICE, ALICE, 3, first=soon())
    await h.connect(M)
    h.fake.duplicate_next_delta_changes(2)
    assert await h.run() == stats(created=3)
    h.fake.put_event(M, ALICE, ALICE, ids[1], summary="Changed")
    h.fake.delete_event(M, ALICE, ALICE, ids[2])
    h.fake.duplicate_next_delta_changes(2)
    assert await h.run() == stats(updated=1, deleted=1)


async def test_paging_with_empty_pages_and_a_window_edge(h: SyncHarness) -> None:
    h.fake.add_events(M, ALICE, ALICE, 25, first=soon())
    h.fake.put_event(M, ALICE, ALICE, summary="Beyond the window", start=soon(24 * 400))
    h.fake.inject_empty_pages(M, 3)
    await h.connect(M)
    assert await h.run() == stats(created=25)
    # /me/calendars once; delta pages of 10: three full, plus three empty ones.
    assert len(h.fake.requests(M)) == 1 + 3 + 3


@pytest.mark.parametrize("code", ["SyncStateNotFound", "resyncRequired", "invaliddeltatoken"])
async def test_gone_delta_link_drops_local_items_and_resyncs(h: SyncHarness, code: str) -> None:
    ids = h.fake.add_events(M, ALICE, ALICE, 3, first=soon())
    await h.connect(M)
    await h.run()
    h.fake.delete_event(M, ALICE, ALICE, ids[1])
    h.fake.put_event(M, ALICE, ALICE, ids[2], summary="Edited")
    h.fake.invalidate_sync_tokens(M, ALICE, ALICE, graph_code=code)
    assert await h.run() == stats(updated=1, deleted=1)
    assert set(await h.events()) == {ids[0], ids[2]}
    assert [r.status for r in h.fake.requests(M, "/calendarView/delta")[-2:]] == [410, 200]
    assert await h.run() == stats()


async def test_rotated_refresh_token_is_sealed_in_the_database(h: SyncHarness, http: aiohttp.ClientSession) -> None:
    h.fake.add_events(M, ALICE, ALICE, 2, first=soon())
    connection = await h.connect(M)
    old_refresh = h.fake.account(M).refresh_token
    h.fake.expire_access_tokens(M)
    assert await h.run() == stats(created=2)
    stored = await h.connection(connection.id)
    new_refresh = h.fake.account(M).refresh_token
    assert new_refresh != old_refresh
    assert new_refresh not in stored.refresh_token_sealed
    assert h.ctx.box.open(stored.refresh_token_sealed, context=connection.id) == new_refresh
    assert h.ctx.box.open(stored.access_token_sealed, context=connection.id) == h.fake.account(M).access_token
    # The old refresh token is dead at the provider: keeping it would have lost the connection.
    form = {"grant_type": "refresh_token", "refresh_token": old_refresh, "client_id": CLIENTS[M][0],
            "client_secret": CLIENTS[M][1]}  # fmt: skip
    async with http.post(f"{h.fake.base_url}/microsoft/token", data=form) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_grant"
    # And the next sync, after another expiry, refreshes with the stored (rotated) token.
    h.fake.expire_access_tokens(M)
    assert await h.run() == stats()
    assert (await h.connection(connection.id)).status == "active"


async def test_429_with_fractional_retry_after_then_success(h: SyncHarness) -> None:
    h.fake.add_events(M, ALICE, ALICE, 3, first=soon())
    await h.connect(M)
    h.fake.fail_next(M, 2, status=429, retry_after=0.15)
    assert await h.run() == stats(created=3)
    assert [r.status for r in h.fake.requests(M)][:3] == [429, 429, 200]


async def test_invalid_grant_fails_and_marks_reauth_required(h: SyncHarness) -> None:
    connection = await h.connect(M)
    h.fake.expire_access_tokens(M)
    h.fake.revoke_refresh_token(M)
    with pytest.raises(runner.SyncFailure) as failed:
        await h.run()
    assert failed.value.code == "reauth_required"
    assert failed.value.stats == stats(calendars=0)
    assert (await h.connection(connection.id)).status == "reauth_required"
    # A connection needing reauth is no longer picked for syncs.
    assert await h.active_connections() == []


async def test_one_failing_connection_does_not_stop_the_other(h: SyncHarness) -> None:
    h.fake.add_account("google", ALICE)
    h.fake.add_events("google", ALICE, ALICE, 2, first=soon())
    h.fake.add_events(M, ALICE, ALICE, 1, first=soon())
    await h.connect("google")
    await h.connect(M)
    h.fake.expire_access_tokens(M)
    h.fake.revoke_refresh_token(M)
    with pytest.raises(runner.SyncFailure) as failed:
        await h.run()
    assert failed.value.code == "reauth_required"
    # Google's calendar was synced all the same, and the failure's stats say so.
    assert failed.value.stats == stats(created=2)
    assert len(await h.events()) == 2
