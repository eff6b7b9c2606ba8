"""Google connector against the fake Google Calendar over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import aiohttp
import pytest

from sync_trigger.connectors import (
    CursorExpired,
    ProviderEndpoints,
    ProviderError,
    ProviderRateLimited,
    ReauthRequired,
    Tokens,
    build_connector,
)
from synchook.fakes import FakeProviders
from tests.support.connector_harness import ALICE, WINDOW, Harness, collect

G = "google"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def h(fake: FakeProviders, session: aiohttp.ClientSession) -> Harness:
    fake.add_account(G, ALICE)
    return Harness(fake, session, G)


async def test_full_sync_lists_window_and_returns_cursor_on_last_page_only(h: Harness) -> None:
    ids = h.fake.add_events(G, ALICE, ALICE, 5)
    h.fake.put_event(G, ALICE, ALICE, summary="Old", start=datetime(2023, 1, 1, tzinfo=UTC))

    pages = await collect(h.connector(page_size=2), None)

    assert [c.event_id for p in pages for c in p.changes] == ids
    assert [p.next_cursor is not None for p in pages] == [False, False, True]
    first = pages[0].changes[0]
    assert first.summary == "Event 0" and not first.deleted
    assert first.start == datetime(2024, 5, 1, tzinfo=UTC) and first.end == datetime(2024, 5, 1, 0, 30, tzinfo=UTC)
    query = h.fake.requests(G, "/events")[0].query
    assert query == {
        "timeMin": "2024-01-01T00:00:00Z",
        "timeMax": "2025-01-01T00:00:00Z",
        "singleEvents": "true",
        "showDeleted": "true",
        "maxResults": "2",
    }


async def test_incremental_reports_create_update_delete_with_sync_token_only(h: Harness) -> None:
    a, b = h.fake.add_events(G, ALICE, ALICE, 2)
    cursor = (await collect(h.connector(), None))[-1].next_cursor
    c = h.fake.put_event(G, ALICE, ALICE, summary="New")
    h.fake.put_event(G, ALICE, ALICE, a, summary="Renamed")
    h.fake.delete_event(G, ALICE, ALICE, b)

    pages = await collect(h.connector(), cursor)

    changes = {ch.event_id: ch for p in pages for ch in p.changes}
    assert set(changes) == {a, b, c}
    assert changes[a].summary == "Renamed" and changes[b].deleted and changes[c].summary == "New"
    assert changes[b].start is None
    assert pages[-1].next_cursor not in (None, cursor)
    assert h.fake.requests(G, "/events")[-1].query == {"syncToken": cursor}


async def test_empty_pages_with_next_page_token_do_not_end_the_round(h: Harness) -> None:
    ids = h.fake.add_events(G, ALICE, ALICE, 5)
    h.fake.inject_empty_pages(G, 3)

    pages = await collect(h.connector(page_size=2), None)

    assert [c.event_id for p in pages for c in p.changes] == ids
    assert sum(1 for p in pages if not p.changes) == 3
    assert pages[-1].next_cursor and all(p.next_cursor is None for p in pages[:-1])
    # Every follow-up repeats the first query plus pageToken (the fake rejects anything else).
    assert all(r.status == 200 for r in h.fake.requests(G))


async def test_gone_sync_token_raises_cursor_expired_and_full_sync_recovers(h: Harness) -> None:
    h.fake.add_events(G, ALICE, ALICE, 3)
    cursor = (await collect(h.connector(), None))[-1].next_cursor
    h.fake.invalidate_sync_tokens(G, ALICE, ALICE)

    with pytest.raises(CursorExpired) as caught:
        await collect(h.connector(), cursor)

    assert caught.value.code == "full_sync_required" and caught.value.status == 410
    assert len([c for p in await collect(h.connector(), None) for c in p.changes]) == 3


async def test_expired_access_token_is_refreshed_once_and_request_retried(h: Harness) -> None:
    h.fake.add_events(G, ALICE, ALICE, 1)
    old = h.fake.account(G)
    old_access, old_refresh = old.access_token, old.refresh_token
    h.fake.expire_access_tokens(G)
    connector = h.connector()

    pages = await collect(connector, None)

    assert len(pages[0].changes) == 1
    assert [r.status for r in h.fake.requests(G)] == [401, 200, 200]
    assert len(h.refreshed) == 1
    new = h.refreshed[0]
    assert new.access_token != old_access and new.refresh_token == old_refresh  # Google keeps the refresh token
    assert new.expires_at is not None and new.expires_at > datetime.now(UTC)
    assert connector.tokens == new


async def test_token_about_to_expire_is_refreshed_before_the_call(h: Harness) -> None:
    acc = h.fake.account(G)
    soon = datetime.now(UTC) + timedelta(seconds=30)

    await h.connector(Tokens(acc.access_token, acc.refresh_token, soon)).list_calendars()

    assert [r.path for r in h.fake.requests(G)] == ["/google/token", "/google/calendar/v3/users/me/calendarList"]
    assert len(h.refreshed) == 1


async def test_revoked_refresh_token_raises_reauth_required(h: Harness) -> None:
    h.fake.expire_access_tokens(G)
    h.fake.revoke_refresh_token(G)

    with pytest.raises(ReauthRequired) as caught:
        await h.connector().list_calendars()

    assert caught.value.code == "reauth_required"
    assert h.refreshed == []


async def test_missing_refresh_token_raises_reauth_required(h: Harness) -> None:
    h.fake.expire_access_tokens(G)
    with pytest.raises(ReauthRequired):
        await h.connector(Tokens(h.fake.account(G).access_token, None, None)).list_calendars()


@pytest.mark.parametrize("status", [403, 429, 500, 503])
async def test_throttling_and_server_errors_back_off_then_succeed(h: Harness, status: int) -> None:
    h.fake.add_events(G, ALICE, ALICE, 1)
    h.fake.fail_next(G, 2, status=status)

    pages = await collect(h.connector(), None)

    assert len(pages[0].changes) == 1
    assert len(h.sleeps) == 2 and h.sleeps[0] < h.sleeps[1] + 1  # exponential: ~1s, ~2s with jitter
    assert 0.5 <= h.sleeps[0] <= 1.0 and 1.0 <= h.sleeps[1] <= 2.0


async def test_throttling_that_never_clears_raises_provider_rate_limited(h: Harness) -> None:
    h.fake.fail_next(G, 1000, status=403)

    with pytest.raises(ProviderRateLimited) as caught:
        await h.connector(max_throttle_wait=20).list_calendars()

    assert caught.value.code == "provider_rate_limited"
    assert sum(h.sleeps) <= 20 and len(h.sleeps) >= 3


async def test_server_errors_that_never_clear_raise_provider_error(h: Harness) -> None:
    h.fake.fail_next(G, 1000, status=500)
    with pytest.raises(ProviderError) as caught:
        await h.connector(max_throttle_wait=10).list_calendars()
    assert caught.value.status == 500


async def test_empty_time_range_is_a_permanent_provider_error(h: Harness) -> None:
    connector = h.connector()
    with pytest.raises(ProviderError) as caught:
        _ = [p async for p in connector.changes(ALICE, cursor=None, window=(WINDOW[1], WINDOW[0]))]
    assert "timeRangeEmpty" in caught.value.message and h.sleeps == []


async def test_full_sync_needs_a_window(h: Harness) -> None:
    with pytest.raises(ValueError, match="window"):
        _ = [p async for p in h.connector().changes(ALICE, cursor=None, window=None)]


async def test_calendar_list_pages_and_odd_calendar_ids_are_quoted(h: Harness) -> None:
    holiday = h.fake.add_calendar(G, ALICE, "en.usa#holiday@group.v.calendar.google.com", name="Holidays")
    h.fake.add_calendar(G, ALICE, "team@group.calendar.google.com", name="Team")
    h.fake.put_event(G, ALICE, holiday, summary="New Year", start=date(2024, 12, 31), end=date(2025, 1, 1))
    connector = h.connector(page_size=1)

    calendars = await connector.list_calendars()
    pages = await collect(connector, None, calendar=holiday)

    assert [c.name for c in calendars] == ["Calendar 0", "Holidays", "Team"]
    change = pages[-1].changes[0]
    assert change.all_day and change.start == datetime(2024, 12, 31, tzinfo=UTC)
    assert change.end == datetime(2025, 1, 1, tzinfo=UTC) and change.calendar_id == holiday


async def test_five_thousand_events_stream_page_by_page(h: Harness) -> None:
    h.fake.add_events(G, ALICE, ALICE, 5000, first=datetime(2024, 1, 1, tzinfo=UTC))
    seen, pages = 0, 0
    async for page in h.connector(page_size=100).changes(ALICE, cursor=None, window=WINDOW):
        pages += 1
        seen += len(page.changes)
        # Nothing is fetched ahead: the consumer sees each page before the next request goes out.
        assert len(h.fake.requests(G, "/events")) == pages
        assert (page.next_cursor is not None) == (pages == 50)
    assert (seen, pages) == (5000, 50)


def test_tokens_repr_never_shows_secrets() -> None:
    tokens = Tokens("ya29.secret-access", "1//secret-refresh", None)
    assert "secret" not in repr(tokens) and "secret" not in str(tokens)
    endpoints = ProviderEndpoints(google_client_secret="client-secret-value")
    assert "client-secret-value" not in repr(endpoints)


def test_unknown_provider_is_refused() -> None:
    async def save(_: Tokens) -> None: ...

    with pytest.raises(ValueError, match="unknown"):
        build_connector("yahoo", None, ProviderEndpoints(), Tokens("a", "r"), save)  # type: ignore[arg-type]
