"""One-row GETs answer from a row read through `Database.read_rows()`: no ORM session, no object (issue 22 (e)).

A GET of one subscription or one sync job spent about a third of its CPU in the ORM session around its one SELECT.
Counted, not timed: the ORM objects loaded and the statements run during one request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import greenlet
import httpx
import pytest
from sqlalchemy import event, text

from subscriptions import service as subscriptions_service
from subscriptions.models import Subscription
from subscriptions.schemas import SubscriptionView
from sync_trigger.models import SyncJob
from sync_trigger.schemas import SyncJobView
from synchook.context import AppContext
from tests.factories import make_tenant
from tests.factories.webhooks import make_subscription
from tests.sync_trigger.test_sync_api import connect


@pytest.fixture
def loaded() -> Iterator[list[str]]:
    """The ORM objects of subscriptions and sync jobs loaded from rows while the test runs."""
    seen: list[str] = []

    def record(target: Any, _context: Any) -> None:
        seen.append(type(target).__name__)

    for model in (Subscription, SyncJob):
        event.listen(model, "load", record)
    yield seen
    for model in (Subscription, SyncJob):
        event.remove(model, "load", record)


@pytest.fixture
def statements(app_ctx: AppContext) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engines = [app_ctx.db.engine.sync_engine]
    if app_ctx.db.dialect == "sqlite" and app_ctx.db._reader is not app_ctx.db.engine:
        engines.append(app_ctx.db._reader.sync_engine)  # SQLite's readers are an engine of their own
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    yield seen
    for engine in engines:
        event.remove(engine, "before_cursor_execute", record)


async def test_a_subscription_is_answered_from_a_row_without_its_secrets(
    app_ctx: AppContext, client: httpx.AsyncClient, loaded: list[str], statements: list[str]
) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(
        app_ctx,
        tenant.workspace_id,
        url="https://example.com/hook",
        event_types=("calendar.sync.*", "webhook.test"),
        providers=("google",),
        rate_limit_per_second=5,
    )
    path = f"/v1/webhooks/subscriptions/{sub.id}"
    assert (await client.get(path, headers=tenant.headers)).status_code == 200  # the key looked up
    statements.clear()
    response = await client.get(path, headers=tenant.headers)
    assert response.status_code == 200
    assert loaded == [], loaded  # before: a Subscription loaded by the ORM, secrets and all
    (statement,) = statements
    assert "secret" not in statement, statement
    async with app_ctx.db.session() as session:  # what the ORM object shows: the same answer
        orm = await subscriptions_service.get_subscription(
            session, workspace_id=tenant.workspace_id, subscription_id=sub.id
        )
        assert response.json()["data"] == SubscriptionView.of(orm).model_dump(mode="json", by_alias=True)


async def test_a_sync_job_is_answered_from_a_row(
    app_ctx: AppContext, client: httpx.AsyncClient, loaded: list[str]
) -> None:
    tenant = await make_tenant(app_ctx)
    await connect(client, tenant, "google")
    accepted = await client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "incremental"})
    job_id = accepted.json()["data"]["job_id"]
    loaded.clear()
    response = await client.get(f"/v1/calendar/sync/{job_id}", headers=tenant.headers)
    assert response.status_code == 200
    assert loaded == [], loaded  # before: a SyncJob loaded by the ORM
    async with app_ctx.db.session() as session:  # what the ORM object shows: the same answer
        orm = await session.get(SyncJob, job_id)
        assert orm is not None
        assert response.json()["data"] == SyncJobView.of(orm).model_dump(mode="json", by_alias=True)
    assert response.json()["data"]["queued_at"] == accepted.json()["data"]["queued_at"]


async def test_a_key_is_looked_up_from_a_row(
    app_ctx: AppContext, client: httpx.AsyncClient, orm_executes: list[str], statements: list[str]
) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    orm_executes.clear()
    statements.clear()
    # The key's first request: the key cache's miss, a lookup, then the subscription's row.
    response = await client.get(f"/v1/webhooks/subscriptions/{sub.id}", headers=tenant.headers)
    assert response.status_code == 200
    assert len(statements) == 2 and "api_keys" in statements[0], statements
    assert orm_executes == [], orm_executes  # before: the lookup ran in an ORM session


async def test_a_one_row_get_crosses_to_sqlalchemys_sync_side_once(
    app_ctx: AppContext, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    path = f"/v1/webhooks/subscriptions/{sub.id}"
    assert (await client.get(path, headers=tenant.headers)).status_code == 200  # the key looked up and cached
    crossings: dict[int, None] = {}

    def trace(event_name: str, args: Any) -> None:
        if event_name in ("switch", "throw") and args[1].parent is not None:
            crossings.setdefault(id(args[1]))

    previous = greenlet.settrace(trace)
    try:
        response = await client.get(path, headers=tenant.headers)
    finally:
        greenlet.settrace(previous)
    assert response.status_code == 200
    # Connect, execute and close in one greenlet (Database.first_row); main: three, one for each.
    assert len(crossings) == 1, crossings


async def test_a_one_row_read_is_its_own_transaction_and_leaves_its_connection_transactional(
    app_ctx: AppContext,
) -> None:
    if app_ctx.db.dialect != "postgresql":
        pytest.skip("PostgreSQL's autocommit")
    db = app_ctx.db
    for _ in range(3):  # the pool hands the same connection out again
        row = await db.first_row(text("SELECT txid_current()"), {})
        assert row is not None
        async with db.session() as session:
            # Committed as soon as it ran: no BEGIN before it, no ROLLBACK at the connection's return.
            status = (await session.execute(text("SELECT txid_status(:id)"), {"id": row[0]})).scalar()
            assert status == "committed"
            # The next unit of work on the pool's connections is one transaction, as before the read.
            first = (await session.execute(text("SELECT txid_current()"))).scalar()
            second = (await session.execute(text("SELECT txid_current()"))).scalar()
            assert first == second
