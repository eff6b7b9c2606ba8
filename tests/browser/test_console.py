"""The /admin console in headless Chromium (Debian's, driven by Playwright) against a real server and worker.

SYNCHOOK_UPDATE_SCREENSHOT=1 also refreshes docs/console.png from the finished run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from synchook.context import AppContext
from synchook.timeutil import utcnow
from tests.factories import Tenant, make_tenant
from tests.factories.admin import delivery, seed_delivery
from tests.factories.webhooks import make_subscription
from tests.support.receiver import Receiver

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} missing (apt-get install chromium)"),
]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


@pytest.fixture
async def worker(make_worker: Callable[..., Any]) -> AsyncIterator[None]:
    """A real worker in the background for the whole test (not burst): replays run as they would in production."""
    running = asyncio.create_task(make_worker(burst=False).async_run())
    yield
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    async_api = pytest.importorskip("playwright.async_api")
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900},
            timezone_id="UTC",
            bypass_csp=True,  # lets wait_for_function evaluate its predicates; the CSP itself is checked above
        )
        try:
            yield browser.pages[0] if browser.pages else await browser.new_page()
        finally:
            await browser.close()


async def seed(app: AppContext, tenant: Tenant, receiver: Receiver) -> dict[str, list[Any]]:
    sub = await make_subscription(app, tenant.workspace_id, url=receiver.url("/console"))
    now = utcnow()
    rows: dict[str, list[Any]] = {"failed": [], "dead": [], "succeeded": []}
    plan = [
        ("succeeded", "calendar.sync.completed", [200]),
        ("dead", "calendar.sync.failed", [500, 502, 503]),
        ("failed", "calendar.sync.completed", [500]),
        ("succeeded", "calendar.sync.started", [200]),
        ("dead", "calendar.sync.completed", [None, 500, 500]),
        ("failed", "calendar.sync.failed", [503]),
        ("succeeded", "calendar.sync.queued", [500, 200]),
    ]
    for minutes, (status, event_type, attempts) in enumerate(plan):
        seeded = await seed_delivery(
            app,
            tenant.workspace_id,
            sub.id,
            status=status,
            type=event_type,
            attempts=attempts,
            at=now - timedelta(minutes=30 - 3 * minutes),
        )
        rows[status].append(seeded)
    # History of an endpoint since disabled: nothing of it is replayable, so it stays as it is.
    paused = await make_subscription(
        app, tenant.workspace_id, url=receiver.url("/paused"), status="disabled", disabled_reason="failing for 5 days"
    )
    for minutes, (status, attempts) in enumerate([("dead", [500, 500, 500]), ("cancelled", [])]):
        await seed_delivery(
            app,
            tenant.workspace_id,
            paused.id,
            status=status,
            type="calendar.sync.completed",
            attempts=attempts,
            at=now - timedelta(minutes=28 - 6 * minutes),
        )
    return rows


@pytest.mark.usefixtures("worker")
async def test_console_sign_in_filter_open_replay_and_bulk_replay(
    api_url: str, app_ctx: AppContext, receiver: Receiver, page: Any, tmp_path: Path
) -> None:
    tenant = await make_tenant(app_ctx, name="acme")
    rows = await seed(app_ctx, tenant, receiver)

    async with httpx.AsyncClient() as http:
        served = await http.get(api_url + "/admin")
    assert served.status_code == 200
    assert "script-src 'sha256-" in served.headers["content-security-policy"]

    await page.goto(api_url + "/admin")
    await page.fill("#api-key", tenant.key)
    await page.click("#sign-in")
    await page.wait_for_selector("#deliveries tbody tr")
    assert tenant.key not in page.url
    assert await page.evaluate("sessionStorage.getItem('synchook.apiKey')") == tenant.key
    assert await page.input_value("#api-key") == ""  # the field does not keep it

    # Filter failed deliveries.
    await page.select_option("#status-filter", "failed")
    await page.click("#apply-filters")
    await page.wait_for_function("document.querySelectorAll('#deliveries tbody tr').length === 2")
    failed_ids = await page.eval_on_selector_all("#deliveries tbody tr", "rows => rows.map(r => r.dataset.id)")
    assert sorted(failed_ids) == sorted(s.delivery_id for s in rows["failed"])

    # Open the newest one: its attempts with the response excerpt.
    target = rows["failed"][-1]
    await page.click(f"#deliveries tbody tr[data-id='{target.delivery_id}']")
    await page.wait_for_selector("#detail:not([hidden])")
    assert await page.text_content("#detail-id") == target.delivery_id
    await page.wait_for_selector("#attempts tbody tr")
    assert "attempt 1 said 503" in (await page.text_content("#attempts tbody") or "")

    # Replay it: the receiver gets it, with the event id as webhook-id.
    await page.click("#replay-one")
    await page.wait_for_selector("#replay-result:not([hidden])")
    assert "Replay started" in (await page.text_content("#replay-result") or "")
    [received] = await receiver.wait_for(1, path="/console")
    assert received.headers["webhook-id"] == target.event_id
    for _ in range(100):
        if (await delivery(app_ctx, target.delivery_id)).status == "succeeded":
            break
        await asyncio.sleep(0.05)
    assert (await delivery(app_ctx, target.delivery_id)).status == "succeeded"

    # Bulk replay: preview with the count, confirm, progress to completion.
    await page.click("#bulk-preview")
    await page.wait_for_selector("#bulk-confirm-box:not([hidden])")
    assert (await page.text_content("#bulk-confirm-text") or "").startswith("3 deliveries will be sent")
    await page.click("#bulk-confirm")
    await page.wait_for_selector("#bulk-progress-box:not([hidden])")
    await page.wait_for_function("document.getElementById('bulk-status').textContent === 'completed'", timeout=20_000)
    assert await page.text_content("#bulk-counts") == "3 replayed, 0 skipped of 3 matched"
    assert await page.eval_on_selector("#bulk-progress", "p => p.value === p.max")
    await receiver.wait_for(4, path="/console")
    expected = {s.event_id for s in rows["dead"]} | {rows["failed"][0].event_id, target.event_id}
    assert {r.headers["webhook-id"] for r in receiver.requests("/console")} == expected

    # The audit trail shows both replays, by this key.
    await page.wait_for_function("document.querySelectorAll('#replays tbody tr').length === 2")
    trail = await page.text_content("#replays tbody") or ""
    assert trail.count(tenant.key_id) == 2

    # A picture for the README: the failed filter, one delivery open, the finished bulk replay.
    await page.select_option("#status-filter", "")
    await page.click("#apply-filters")
    await page.click(f"#deliveries tbody tr[data-id='{rows['dead'][0].delivery_id}']")
    await page.wait_for_function(
        f"document.getElementById('detail-id').textContent === '{rows['dead'][0].delivery_id}'"
    )
    await page.wait_for_selector("#attempts tbody tr")
    # Refreshing docs/console.png is opt-in, so a test run never dirties the work tree.
    target_png = SCREENSHOT if os.environ.get("SYNCHOOK_UPDATE_SCREENSHOT") else tmp_path / "console.png"
    await page.screenshot(path=str(target_png), full_page=True)
    assert target_png.stat().st_size > 10_000


def change_data(workspace_id: str, **fields: Any) -> dict[str, Any]:
    """A CONTRACT §6.2 change body; ``fields`` override ``initial``, ``changed_fields``, ``previous``, ``event``."""
    event = {"id": "cev_1", "calendar_id": "cal_team", "title": "New", "location": "Room 1", "status": "confirmed"}
    body: dict[str, Any] = {
        "sequence": 7,
        "workspace_id": workspace_id,
        "job_id": "cal_sync_1",
        "connection_id": "conn_1",
        "calendar_id": "cal_team",
        "provider": "google",
        "initial": False,
        "event": event,
        "changed_fields": [],
        "previous": None,
    }
    body.update(fields)
    return body


async def open_in_console(page: Any, delivery_id: str | None) -> dict[str, str]:
    """Opens one delivery and returns its diff as {field: "before → after"}."""
    await page.click(f"#deliveries tbody tr[data-id='{delivery_id}']")
    await page.wait_for_selector(f"#detail-id:text-is('{delivery_id}')")
    await page.wait_for_selector("#change:not([hidden])")
    rows = await page.eval_on_selector_all(
        "#change-diff tbody tr",
        "rows => rows.map(r => [r.dataset.field, Array.from(r.cells).slice(1).map(c => c.textContent).join(' ')])",
    )
    return dict(rows)


async def test_console_shows_calendar_change_events_and_their_diff(
    api_url: str, app_ctx: AppContext, receiver: Receiver
) -> None:
    tenant = await make_tenant(app_ctx, name="acme")
    sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/changes"))
    ws, now = tenant.workspace_id, utcnow()
    created = change_data(ws, initial=True, changed_fields=["title"], event={"title": "Standup"})
    updated = change_data(
        ws,
        changed_fields=["title", "location"],
        previous={"title": "Old", "location": "<b>Room 0</b>"},
    )
    deleted = change_data(ws, event={"title": "Retro", "status": "cancelled"})
    seeded = {}
    for minutes, (kind, data) in enumerate([("created", created), ("updated", updated), ("deleted", deleted)]):
        seeded[kind] = await seed_delivery(
            app_ctx,
            ws,
            sub.id,
            status="succeeded",
            type=f"calendar.event.{kind}",
            attempts=[200],
            data=data,
            at=now - timedelta(minutes=10 - minutes),
        )
    other = await seed_delivery(app_ctx, ws, sub.id, status="succeeded", attempts=[200], at=now - timedelta(minutes=1))

    # Unlike the `page` fixture, the CSP is enforced: the console's own script and style must still be allowed.
    async_api = pytest.importorskip("playwright.async_api")
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            refused: list[str] = []
            page.on("console", lambda message: refused.append(message.text) if message.type == "error" else None)
            failed: list[str] = []
            page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
            await page.goto(api_url + "/admin")
            await page.fill("#api-key", tenant.key)
            await page.click("#sign-in")
            await page.wait_for_selector("#deliveries tbody tr")

            # The event-type filter suggests the catalogue, the three change types among them.
            await page.wait_for_selector("#event-types option[value='calendar.event.updated']", state="attached")
            offered = await page.eval_on_selector_all("#event-types option", "nodes => nodes.map(n => n.value)")
            assert {"calendar.event.created", "calendar.event.updated", "calendar.event.deleted"} <= set(offered)

            diff = await open_in_console(page, seeded["updated"].delivery_id)
            assert diff["title"] == "Old → New"
            # Data is text, never markup.
            assert diff["location"] == "<b>Room 0</b> → Room 1"
            assert await page.query_selector("#change-diff b") is None
            facts = await page.text_content("#change-facts") or ""
            assert "New" in facts and "cal_team" in facts and "title, location" in facts
            assert await page.text_content("#change-kind") == "updated"

            diff = await open_in_console(page, seeded["created"].delivery_id)
            assert diff == {"title": "initial import → Standup"}

            diff = await open_in_console(page, seeded["deleted"].delivery_id)
            assert diff == {"event": "Retro → deleted"}

            # A delivery of another type shows no change section.
            await page.click(f"#deliveries tbody tr[data-id='{other.delivery_id}']")
            await page.wait_for_selector(f"#detail-id:text-is('{other.delivery_id}')")
            assert await page.is_hidden("#change")
            assert failed == []  # every API call answered (the browser's own /favicon.ico 404 is not one)
            assert not [text for text in refused if "Content Security Policy" in text], refused
        finally:
            await browser.close()


async def test_console_refuses_a_bad_key(api_url: str, page: Any) -> None:
    await page.goto(api_url + "/admin")
    await page.fill("#api-key", "wbk_not_a_real_key")
    await page.click("#sign-in")
    await page.wait_for_selector("#signin-error:not([hidden])")
    assert await page.is_hidden("#app")
    assert await page.evaluate("sessionStorage.getItem('synchook.apiKey')") is None


async def test_console_shows_the_session_bar_only_when_signed_in(api_url: str, app_ctx: AppContext, page: Any) -> None:
    # A CSS display rule once beat the hidden attribute: "Signed in with key" and "Sign out" showed on the sign-in page.
    tenant = await make_tenant(app_ctx, name="acme")
    await page.goto(api_url + "/admin")
    await page.wait_for_selector("#sign-in")
    assert await page.is_hidden("#session")
    assert await page.is_hidden("#sign-out")

    await page.fill("#api-key", tenant.key)
    await page.click("#sign-in")
    await page.wait_for_selector("#app:not([hidden])")
    assert await page.is_visible("#session")
    assert await page.is_visible("#sign-out")
    assert await page.is_hidden("#signin")

    await page.click("#sign-out")
    await page.wait_for_selector("#signin:not([hidden])")
    assert await page.is_hidden("#session")


async def test_docs_page_lists_the_operations_under_its_own_csp(api_url: str, tmp_path: Path) -> None:
    # /docs renders /openapi.json with its inlined script; unlike the `page` fixture, the CSP is enforced here.
    async_api = pytest.importorskip("playwright.async_api")
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            refused: list[str] = []
            page.on("console", lambda message: refused.append(message.text) if message.type == "error" else None)
            await page.goto(api_url + "/docs")
            await page.wait_for_selector("#ops details")
            summaries = await page.eval_on_selector_all("#ops summary", "nodes => nodes.map(n => n.textContent)")
            assert any("post/v1/calendar/sync" in text.replace(" ", "") for text in summaries), summaries
            assert any("/v1/webhooks/replays" in text for text in summaries)
            assert refused == []
        finally:
            await browser.close()
