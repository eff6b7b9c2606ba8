"""The /admin console's bulk replay past SYNCHOOK_REPLAY_MAX: the count the admin confirmed goes with the request."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from synchook.context import AppContext
from tests.browser.test_console import CHROMIUM, CHROMIUM_ARGS
from tests.factories import make_tenant
from tests.factories.admin import count_rows, seed_delivery
from tests.factories.webhooks import make_subscription
from webhooks.models import Replay

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} missing (apt-get install chromium)"),
]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"replay_max": 2}


@pytest.fixture
async def browser_page(tmp_path: Path) -> AsyncIterator[Any]:
    async_api = pytest.importorskip("playwright.async_api")
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser.pages[0] if browser.pages else await browser.new_page()
        finally:
            await browser.close()


async def test_console_confirms_a_bulk_replay_larger_than_replay_max(
    api_url: str, app_ctx: AppContext, browser_page: Any
) -> None:
    page = browser_page
    tenant = await make_tenant(app_ctx, name="bounded")
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/never")
    for _ in range(3):
        await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")

    await page.goto(api_url + "/admin")
    await page.fill("#api-key", tenant.key)
    await page.click("#sign-in")
    await page.wait_for_selector("#deliveries tbody tr")
    await page.click("#bulk-preview")
    await page.wait_for_selector("#bulk-confirm-box:not([hidden])")
    assert (await page.text_content("#bulk-confirm-text") or "").startswith("3 deliveries will be sent")
    await page.click("#bulk-confirm")
    await page.wait_for_selector("#bulk-progress-box:not([hidden]), #bulk-error:not([hidden])")
    assert await page.is_hidden("#bulk-error"), await page.text_content("#bulk-error")
    assert await count_rows(app_ctx, Replay) == 1
