"""Master-key rotation under load: a reseal never overwrites a token refreshed meanwhile, and a worker the new key
has not reached yet fails its job without touching the connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from pydantic import SecretStr

from sync_trigger.models import Connection
from synchook.context import AppContext
from synchook.crypto import SecretBox, generate_master_key
from synchook.fakes import FakeProviders
from synchook.reseal import ResealCount, read_sealed, reseal_rows
from synchook.settings import Settings, parse_secret_keys
from tests.factories import make_tenant
from tests.support.sync_harness import ALICE, SyncHarness, provider_settings, soon, stats

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

G = "google"
TOKENS = ("access_token_sealed", "refresh_token_sealed")


@pytest.fixture
def fake(fake: FakeProviders) -> FakeProviders:
    fake.add_account(G, ALICE)
    return fake


@pytest.fixture
def settings_overrides(providers_server: FakeProviders) -> dict[str, Any]:
    return provider_settings(providers_server)


async def test_a_token_refreshed_between_reseal_read_and_write_survives_and_decrypts(
    app_ctx: AppContext, fake: FakeProviders
) -> None:
    h = SyncHarness(app_ctx, fake, (await make_tenant(app_ctx)).workspace_id)
    fake.add_events(G, ALICE, ALICE, 1, first=soon())
    connection = await h.connect(G)
    refresh = fake.account(G).refresh_token
    fake.expire_access_tokens(G)
    new_key = parse_secret_keys(generate_master_key())[0]
    rotated = SecretBox([new_key, *app_ctx.settings.secret_keys()])
    table = Connection.__table__  # type: ignore[attr-defined]

    rows = await read_sealed(app_ctx.db, table, TOKENS)  # `synchook secrets rotate` reads the tokens...
    assert await h.run() == stats(created=1)  # ...a worker (still on the old key) refreshes them meanwhile...
    fresh = fake.account(G).access_token
    # ...and the reseal's write loses the race, reads the refreshed row again and reseals that.
    assert await reseal_rows(app_ctx.db, rotated, table, TOKENS, rows) == ResealCount(changed=1)

    stored = await h.connection(connection.id)
    new_only = SecretBox([new_key])
    assert new_only.open(stored.access_token_sealed, context=connection.id) == fresh
    assert new_only.open(stored.refresh_token_sealed, context=connection.id) == refresh
    assert stored.status == "active"


async def test_a_worker_without_the_sealing_key_fails_the_job_and_leaves_the_connection_active(
    app_ctx: AppContext,
    settings: Settings,
    fake: FakeProviders,
    client: httpx.AsyncClient,
    run_worker: Callable[..., Awaitable[Worker]],
) -> None:
    tenant = await make_tenant(app_ctx)
    fake.add_events(G, ALICE, ALICE, 2, first=soon())
    acc = fake.account(G)
    body = {"provider": G, "account": ALICE, "access_token": acc.access_token, "refresh_token": acc.refresh_token}
    created = await client.post("/v1/calendar/connections", headers=tenant.headers, json=body)
    assert created.status_code == 201, created.text
    connection_id = created.json()["data"]["id"]
    job_id = (await client.post("/v1/calendar/sync", headers=tenant.headers, json={})).json()["data"]["job_id"]

    # The API seals under a key this worker has not been given yet.
    lagging_key = generate_master_key()
    await run_worker(settings=settings.model_copy(update={"secret_key": SecretStr(lagging_key)}))

    job = (await client.get(f"/v1/calendar/sync/{job_id}", headers=tenant.headers)).json()["data"]
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "secret_key_unavailable"
    assert settings.secret_key is not None
    for secret in (acc.access_token, acc.refresh_token, lagging_key, settings.secret_key.get_secret_value()):
        assert secret not in job["error"]["message"]
    connection = (await client.get(f"/v1/calendar/connections/{connection_id}", headers=tenant.headers)).json()
    assert connection["data"]["status"] == "active"
    assert fake.requests(G) == []  # nothing was sent to the provider

    # Once the key reaches the worker, the same connection syncs.
    job_id = (await client.post("/v1/calendar/sync", headers=tenant.headers, json={})).json()["data"]["job_id"]
    await run_worker()
    job = (await client.get(f"/v1/calendar/sync/{job_id}", headers=tenant.headers)).json()["data"]
    assert job["status"] == "completed", job
    assert job["stats"]["events_created"] == 2
