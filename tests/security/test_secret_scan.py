"""Secrecy: a representative flow with every logger at DEBUG leaves no key, secret, token or Authorization value
in any log line, in the repr() of models, settings and context, or in any error message the API returns."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from sqlalchemy import select

from subscriptions.models import Subscription
from sync_trigger.models import Connection
from synchook.auth.models import ApiKey
from synchook.context import AppContext
from synchook.fakes import FakeProviders
from synchook.settings import Settings
from tests.factories import make_tenant
from tests.security.conftest import provider_overrides
from tests.support.receiver import Receiver
from webhooks.models import Delivery, DeliveryAttempt

LOGGERS = ("synchook", "sync_trigger", "subscriptions", "webhooks")
MARKERS = ("wbk_", "whsec_", "whsk_", "Bearer ")
DISPLAY_PREFIX = re.compile(r"prefix='wbk_[A-Za-z0-9_-]{4}'")


@pytest.fixture
def settings_overrides(fake_providers: FakeProviders) -> dict[str, Any]:
    return provider_overrides(fake_providers)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        extras = {
            k: v for k, v in record.__dict__.items() if k not in logging.LogRecord("", 0, "", 0, "", (), None).__dict__
        }
        self.lines.append(f"{record.name} {record.levelname} {text} {extras!r}")


@pytest.fixture
def captured() -> Iterator[Collect]:
    handler = Collect()
    previous = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
        logging.getLogger(name).addHandler(handler)
    try:
        yield handler
    finally:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(previous[name])


async def test_nothing_secret_reaches_logs_reprs_or_errors(
    app_ctx: AppContext,
    settings: Settings,
    client: httpx.AsyncClient,
    fake_providers: FakeProviders,
    run_worker: Callable[..., Awaitable[Worker]],
    captured: Collect,
) -> None:
    secrets: set[str] = set()
    texts: list[str] = []  # every response body and error message the flow saw

    tenant = await make_tenant(app_ctx)
    secrets.add(tenant.key)
    headers = tenant.headers

    async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await client.request(method, path, headers=kwargs.pop("headers", headers), **kwargs)
        texts.append(response.text)
        return response

    # Provider tokens: the fake knows them, so the sync job really uses (and refreshes) them.
    account = fake_providers.add_account("google", "alice@example.com")
    secrets.update({account.access_token, account.refresh_token})
    created = await call(
        "POST",
        "/v1/calendar/connections",
        json={
            "provider": "google",
            "account": "alice@example.com",
            "access_token": account.access_token,
            "refresh_token": account.refresh_token,
        },
    )
    assert created.status_code == 201
    assert account.access_token not in created.text and account.refresh_token not in created.text

    async with Receiver() as receiver:
        hmac_sub = await call(
            "POST", "/v1/webhooks/subscriptions", json={"url": receiver.url("/h"), "event_types": ["*"]}
        )
        ed_sub = await call(
            "POST",
            "/v1/webhooks/subscriptions",
            json={"url": receiver.url("/e"), "event_types": ["*"], "signature_type": "ed25519"},
        )
        assert hmac_sub.status_code == 201 and ed_sub.status_code == 201
        hmac_id, ed_id = hmac_sub.json()["data"]["id"], ed_sub.json()["data"]["id"]
        secrets.add(hmac_sub.json()["data"]["secret"])  # an ed25519 create gives no secret; the GET below has it
        rotated = await call("POST", f"/v1/webhooks/subscriptions/{hmac_id}/secret/rotate", json={})
        secrets.add(rotated.json()["data"]["secret"])
        for sub in (hmac_id, ed_id):
            secrets.add((await call("GET", f"/v1/webhooks/subscriptions/{sub}/secret")).json()["data"]["secret"])
            assert (await call("POST", f"/v1/webhooks/subscriptions/{sub}/test")).status_code == 202
        assert (await call("POST", "/v1/calendar/sync", json={"mode": "full"})).status_code == 202
        await run_worker()
        await run_worker()  # the sync job's own lifecycle events, fanned out after it ran
        assert receiver.count() >= 2

    # Error paths, which log and answer with messages: bad keys (one a real key's near miss), bad bodies.
    near_miss = tenant.key[:-1] + ("A" if tenant.key[-1] != "A" else "B")
    for value in (f"Bearer {near_miss}", f"Basic {tenant.key}", tenant.key):
        assert (await call("GET", "/v1/webhooks/subscriptions", headers={"Authorization": value})).status_code == 401
    secret = next(iter(s for s in secrets if s.startswith("whsec_")))
    for body in (
        {"url": f"https://user:{secret}@example.com/h", "event_types": ["*"]},
        # (An unknown event type is echoed back to its own sender, like any bad value: not tested with a secret.)
        {"url": "https://example.com/h", "event_types": ["*"], "token": tenant.key},
    ):
        assert (await call("POST", "/v1/webhooks/subscriptions", json=body)).status_code == 422
    bad_conn = await call(
        "POST",
        "/v1/calendar/connections",
        json={"provider": "google", "account": "x", "access_token": account.access_token, "refresh_token": ""},
    )
    assert bad_conn.status_code == 422

    # reprs of what a traceback or a debugger would print.
    reprs = [repr(settings), str(settings), repr(app_ctx), repr(app_ctx.box), repr(app_ctx.db)]
    async with app_ctx.db.session() as session:
        for model in (ApiKey, Connection, Subscription, Delivery, DeliveryAttempt):
            rows = (await session.execute(select(model))).scalars().all()
            assert rows or model is DeliveryAttempt, model
            reprs += [repr(row) for row in rows] + [str(row) for row in rows]
    # The master key is a secret too.
    assert settings.secret_key is not None
    secrets.add(settings.secret_key.get_secret_value())

    assert captured.lines, "nothing was logged: the capture is not wired"
    haystacks = {"log": captured.lines, "repr": reprs, "response": [t for t in texts if '"error"' in t]}
    for kind, lines in haystacks.items():
        for line in lines:
            for value in secrets:
                assert value not in line, f"a secret appears in a {kind}: {line[:300]}"
            if kind != "response":
                # An API key's 8-character display prefix (wbk_ + 4 characters) is shown by design, as in `keys list`.
                scrubbed = DISPLAY_PREFIX.sub("", line)
                for marker in MARKERS:
                    assert marker not in scrubbed, f"{marker!r} appears in a {kind}: {line[:300]}"
