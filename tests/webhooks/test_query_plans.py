"""The engine's claims find their rows by primary key, whatever else is waiting.

Without statistics SQLite preferred the status index (``status IN ('pending', 'failed')``) and the
outbox index (``dispatched_at IS NULL``) once a claim named more than a few ids, so every claim
scanned all open deliveries or all undispatched events: the cost of a batch grew with the backlog.
PostgreSQL did the same whenever its statistics predate the backlog (156 ms per claim of 200 ids
with 100k deliveries open, in the benchmark).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from arq.worker import Worker

from synchook.context import AppContext
from synchook.ids import new_id
from synchook.timeutil import utcnow
from tests.factories import make_tenant
from tests.factories.webhooks import deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from tests.support.statements import Statement, explain_prepared, statements_run
from webhooks.delivery.claim import claim_rows
from webhooks.delivery.lease import Lease
from webhooks.dispatch import dispatch_events
from webhooks.models import Delivery

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

CLAIMS = ("UPDATE deliveries SET lease_until", "UPDATE events SET dispatched_at")


@pytest.fixture
def claims() -> Iterator[list[Statement]]:
    """Every claim statement any engine in this process runs (the worker opens its own), with its parameters."""
    with statements_run(lambda sql: sql.startswith(CLAIMS)) as seen:
        yield seen


@pytest.mark.parametrize("settings_overrides", [{"delivery_batch_size": 20}])
async def test_claims_of_many_ids_plan_on_the_primary_key(
    app_ctx: AppContext, make_worker: Callable[..., Worker], claims: list[tuple[str, Any]]
) -> None:
    if not app_ctx.settings.is_sqlite:
        pytest.skip("PostgreSQL: see the test below, which makes its statistics stale")
    async with Receiver() as receiver:
        tenant = await make_tenant(app_ctx)
        await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/ok"))
        events = await make_events(app_ctx, tenant.workspace_id, count=60, hand_off_now=False)
        # Fanned out with no worker at hand (as the CLI does): every delivery goes through claims, of 20.
        await dispatch_events(app_ctx, events, worker=None)
        await asyncio.wait_for(make_worker().main(), timeout=30)
        assert {d.status for d in await deliveries(app_ctx)} == {"succeeded"}

    big = [(sql, params) for sql, params in claims if len(params) >= 12]
    assert {sql.split(" SET")[0] for sql, _ in big} == {"UPDATE deliveries", "UPDATE events"}
    async with app_ctx.db.session() as session:
        connection = await session.connection()
        for sql, params in big:
            plan = (await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)).all()
            claimed_table, *rest = [str(row[-1]) for row in plan]
            assert "sqlite_autoindex_" in claimed_table and "ix_" not in claimed_table, plan
            # The event claim's RETURNING asks, per event, whether it has deliveries: a probe of that index.
            assert all("SCAN" not in step for step in rest), plan


async def _delivery_row(app_ctx: AppContext, now: datetime, **values: Any) -> dict[str, Any]:
    """A delivery row's values (all but its id) for a new undispatched event of a new tenant's one subscription."""
    tenant = await make_tenant(app_ctx)
    subscription = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/ok")
    [event_id] = await make_events(app_ctx, tenant.workspace_id, hand_off_now=False)
    return {
        "workspace_id": tenant.workspace_id,
        "event_id": event_id,
        "event_type": "calendar.sync.completed",
        "subscription_id": subscription.id,
        "replays": 0,
        "created_at": now,
        "updated_at": now,
        **values,
    }


async def test_a_claim_uses_the_primary_key_when_statistics_predate_the_backlog(
    app_ctx: AppContext, claims: list[tuple[str, Any]]
) -> None:
    if app_ctx.settings.is_sqlite:
        pytest.skip("SQLite has no statistics: the test above covers it")
    now = utcnow()
    row = await _delivery_row(app_ctx, now, status="succeeded", attempt_count=1)
    table = Delivery.__table__  # type: ignore[attr-defined]
    ids = [new_id("dlv") for _ in range(20_000)]
    # One transaction, so no autovacuum can refresh the statistics: ANALYZE sees no open delivery,
    # then 20,000 turn due, as when a backlog builds up between two ANALYZEs.
    async with app_ctx.db.session() as session:
        await session.execute(sa.insert(table), [{**row, "id": i} for i in ids])
        await session.execute(sa.text("ANALYZE deliveries"))
        await session.execute(sa.update(table).values(status="pending", next_attempt_at=now))
        lease = Lease(now, [])
        claimed = await claim_rows(session, ids[:200], now=now, lease=lease)
        assert len(claimed) == 200
        [(sql, params)] = [c for c in claims if c[0].startswith("UPDATE deliveries")]
        connection = await session.connection()
        plan = "\n".join(str(r[0]) for r in await connection.exec_driver_sql(f"EXPLAIN {sql}", params))
        await session.rollback()
    assert "deliveries_pkey" in plan and "ix_deliveries_due" not in plan, plan


async def test_lookups_by_id_arrays_use_indexes_on_a_table_without_statistics(
    app_ctx: AppContext, claims: list[tuple[str, Any]]
) -> None:
    """Prepared statements over arrays of ids are planned once, for an array of unknown length (a generic plan).

    With PostgreSQL's default cost of a random page (4, for spinning disks) and no statistics yet, that plan
    was a sequential scan of ``deliveries`` for the relay's check of fan-outs already begun (now part of the
    claim) and for the outcome update: each compared every row with each id, 2-20 ms a batch at 2,000 events/s
    in the benchmark, growing with the table. The engine's sessions plan them as index probes.
    """
    if app_ctx.settings.is_sqlite:
        pytest.skip("SQLite has no generic plans; the claims above cover its index choice")
    from synchook.bulk import update_rows
    from webhooks.dispatch import _claim

    now = utcnow()
    row = await _delivery_row(app_ctx, now, status="sending", attempt_count=0, lease_owner="worker-1")
    event_id = row["event_id"]
    table = Delivery.__table__  # type: ignore[attr-defined]
    ids = [new_id("dlv") for _ in range(2_000)]  # the size at which the bench's plans went wrong
    # One transaction: no ANALYZE (autovacuum's included) sees these rows, as on a fresh install under load.
    async with app_ctx.db.session() as session:
        await session.execute(sa.insert(table), [{**row, "id": i} for i in ids])
        with statements_run(lambda _sql: True) as seen:
            claimed = await _claim(session, [event_id, *(new_id("evt") for _ in range(49))], now)
            assert [(event.id, event.begun) for event in claimed] == [(event_id, True)]
            outcomes = [{"id": i, "owner": "worker-1", "status": "succeeded"} for i in ids[:50]]
            assert len(await update_rows(session, table, outcomes, guard=("owner", "lease_owner"))) == 50
        connection = await session.connection()
        await connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        plans = []
        for number, statement in enumerate(seen):
            explained = await explain_prepared(connection, statement, name=f"lookup_{number}")
            plans.append("\n".join(str(r[0]) for r in explained))
        await session.rollback()
    assert len(plans) == 2
    for plan in plans:
        assert "Seq Scan on deliveries" not in plan, plan
