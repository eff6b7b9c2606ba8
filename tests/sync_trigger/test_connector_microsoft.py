"""Microsoft Graph connector against the fake Graph over real loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest

from sync_trigger.connectors import (
    ChangePage,
    CursorExpired,
    ProviderError,
    ProviderRateLimited,
    ReauthRequired,
    Tokens,
)
from sync_trigger.connectors.throttle import parse_retry_after
from synchook.fakes import FakeProviders
from tests.support.connector_harness import ALICE, WINDOW, Harness, collect

MS = "microsoft"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def h(fake: FakeProviders, session: aiohttp.ClientSession) -> Harness:
    fake.add_account(MS, ALICE)
    return Harness(fake, session, MS)


def ids(pages: list[ChangePage]) -> list[str]:
    return [c.event_id for p in pages for c in p.changes]


async def test_full_round_sends_window_once_then_follows_links_unchanged(h: Harness) -> None:
    created = h.fake.add_events(MS, ALICE, ALICE, 5)
    h.fake.put_event(MS, ALICE, ALICE, summary="Old", start=datetime(2023, 1, 1, tzinfo=UTC))

    pages = await collect(h.connector(page_size=2), None)

    assert ids(pages) == created
    assert [p.next_cursor is not None for p in pages] == [False, False, True]
    assert pages[-1].next_cursor and "$deltatoken=" in pages[-1].next_cursor
    first = pages[0].changes[0]
    assert (first.start, first.end) == (datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 1, 0, 30, tzinfo=UTC))
    seen = h.fake.requests(MS, "/calendarView/delta")
    assert seen[0].query == {"startDateTime": "2024-01-01T00:00:00Z", "endDateTime": "2025-01-01T00:00:00Z"}
    assert all(set(r.query) == {"$skiptoken"} for r in seen[1:])
    assert all("odata.maxpagesize=2" in r.headers["prefer"] for r in seen)


async def test_delta_link_reports_create_update_delete_and_moves_out_of_window(h: Harness) -> None:
    a, b, c = h.fake.add_events(MS, ALICE, ALICE, 3)
    cursor = (await collect(h.connector(), None))[-1].next_cursor
    new = h.fake.put_event(MS, ALICE, ALICE, summary="New")
    h.fake.put_event(MS, ALICE, ALICE, a, summary="Renamed")
    h.fake.delete_event(MS, ALICE, ALICE, b)
    h.fake.put_event(MS, ALICE, ALICE, c, start=datetime(2026, 1, 1, tzinfo=UTC))  # leaves the window

    pages = await collect(h.connector(), cursor)

    changes = {ch.event_id: ch for p in pages for ch in p.changes}
    assert changes[a].summary == "Renamed" and changes[new].summary == "New"
    assert changes[b].deleted and changes[c].deleted and not changes[a].deleted
    assert h.fake.requests(MS, "/calendarView/delta")[-1].query == {"$deltatoken": cursor.split("=")[-1]}  # type: ignore[union-attr]


async def test_empty_pages_with_next_link_do_not_end_the_round(h: Harness) -> None:
    created = h.fake.add_events(MS, ALICE, ALICE, 4)
    h.fake.inject_empty_pages(MS, 2)

    pages = await collect(h.connector(page_size=3), None)

    assert ids(pages) == created and sum(1 for p in pages if not p.changes) == 2
    assert pages[-1].next_cursor and all(p.next_cursor is None for p in pages[:-1])


@pytest.mark.parametrize("code", ["SyncStateNotFound", "resyncRequired", "InvalidDeltaToken", "syncstatenotfound"])
async def test_gone_delta_link_raises_cursor_expired(h: Harness, code: str) -> None:
    h.fake.add_events(MS, ALICE, ALICE, 2)
    cursor = (await collect(h.connector(), None))[-1].next_cursor
    h.fake.invalidate_sync_tokens(MS, ALICE, ALICE, graph_code=code)

    with pytest.raises(CursorExpired) as caught:
        await collect(h.connector(), cursor)

    assert caught.value.code == "full_sync_required"
    assert len(ids(await collect(h.connector(), None))) == 2


async def test_refresh_rotates_refresh_token_and_reports_it(h: Harness) -> None:
    h.fake.add_events(MS, ALICE, ALICE, 1)
    old_refresh = h.fake.account(MS).refresh_token
    h.fake.expire_access_tokens(MS)
    connector = h.connector()

    assert len(ids(await collect(connector, None))) == 1

    assert len(h.refreshed) == 1
    new = h.refreshed[0]
    assert new.refresh_token != old_refresh and new.refresh_token == h.fake.account(MS).refresh_token
    assert connector.tokens == new
    # The old refresh token is dead now: anyone still holding it must reconnect.
    h.fake.expire_access_tokens(MS)
    with pytest.raises(ReauthRequired):
        await h.connector(Tokens("stale", old_refresh, None)).list_calendars()


async def test_retry_after_is_honoured_then_request_succeeds(h: Harness) -> None:
    h.fake.add_events(MS, ALICE, ALICE, 1)
    h.fake.fail_next(MS, 2, status=429, retry_after=0.05)
    connector = h.connector(sleep=asyncio.sleep)  # really wait: 2 x 50 ms
    started = asyncio.get_running_loop().time()

    assert len(ids(await collect(connector, None))) == 1

    assert asyncio.get_running_loop().time() - started >= 0.1
    assert [r.status for r in h.fake.requests(MS)] == [429, 429, 200]


async def test_fractional_retry_after_is_used_as_is(h: Harness) -> None:
    h.fake.fail_next(MS, 1, status=503, retry_after=2.128)
    await h.connector().list_calendars()
    assert h.sleeps == [2.128]


async def test_throttling_that_never_clears_raises_provider_rate_limited(h: Harness) -> None:
    h.fake.fail_next(MS, 1000, status=429, retry_after=10)

    with pytest.raises(ProviderRateLimited):
        await collect(h.connector(max_throttle_wait=25), None)

    assert h.sleeps == [10, 10]  # a third wait would pass the bound, so it is not even started


async def test_invalid_grant_raises_reauth_required(h: Harness) -> None:
    h.fake.expire_access_tokens(MS)
    h.fake.revoke_refresh_token(MS)
    with pytest.raises(ReauthRequired):
        await h.connector().list_calendars()


async def test_repeated_changes_are_passed_on_for_the_caller_to_dedupe(h: Harness) -> None:
    created = h.fake.add_events(MS, ALICE, ALICE, 5)
    h.fake.duplicate_next_delta_changes(2)

    pages = await collect(h.connector(page_size=2), None)

    assert len(ids(pages)) == 7 and set(ids(pages)) == set(created)


async def test_at_most_four_requests_in_flight_per_mailbox(h: Harness) -> None:
    calendars = [h.fake.add_calendar(MS, ALICE, f"c{n}") for n in range(10)]
    for cal in calendars:
        h.fake.add_events(MS, ALICE, cal, 3)
    h.fake.latency = 0.05
    connector = h.connector(page_size=1)

    rounds = await asyncio.gather(*(collect(connector, None, calendar=cal) for cal in calendars))

    assert all(len(ids(pages)) == 3 for pages in rounds)
    assert h.fake.max_in_flight(MS) == 4


async def test_links_outside_the_graph_url_are_refused(h: Harness) -> None:
    with pytest.raises(ProviderError, match="outside"):
        await collect(h.connector(), "https://attacker.example/v1.0/me/calendarView/delta?$deltatoken=x")
    assert h.fake.requests(MS) == []


async def test_calendars_follow_next_link(h: Harness) -> None:
    h.fake.add_calendar(MS, ALICE, "AAMkAGI2TGuLAAA=", name="Work")
    h.fake.page_size[MS] = 1
    calendars = await h.connector().list_calendars()
    assert [(c.id, c.name) for c in calendars] == [(ALICE, "Calendar 0"), ("AAMkAGI2TGuLAAA=", "Work")]


async def test_five_thousand_events_stream_page_by_page(h: Harness) -> None:
    h.fake.add_events(MS, ALICE, ALICE, 5000, first=datetime(2024, 1, 1, tzinfo=UTC))
    seen, pages = 0, 0
    async for page in h.connector(page_size=100).changes(ALICE, cursor=None, window=WINDOW):
        pages += 1
        seen += len(page.changes)
        assert len(h.fake.requests(MS, "/calendarView/delta")) == pages
    assert (seen, pages) == (5000, 50)


def test_retry_after_parsing() -> None:
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_retry_after("2.128") == 2.128
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("nan") is None


async def test_concurrent_401s_refresh_only_once(h: Harness) -> None:
    calendars = [h.fake.add_calendar(MS, ALICE, f"c{n}") for n in range(6)]
    h.fake.expire_access_tokens(MS)
    h.fake.latency = 0.02
    connector = h.connector()

    await asyncio.gather(*(collect(connector, None, calendar=cal) for cal in calendars))

    assert len(h.fake.requests(MS, "/microsoft/token")) == 1 and len(h.refreshed) == 1
