"""What a delivery costs to write: its claim a HOT update on PostgreSQL, and the due index kept to open rows.

Each delivery is written three times (fan-out, claim, record). An update that changes no indexed column and finds
room on its row's page is a HOT update (no entry added to any index); the claim is one if the page has room, which
the table's fill factor leaves. The due index holds only the statuses its readers ask for (the sweeper, the metrics'
count), so the record of a success adds no entry there; the readers must state the index's terms to use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from synchook.bulk import insert_rows
from synchook.context import AppContext
from synchook.root.metrics import Snapshot, _read_database
from synchook.timeutil import utcnow
from tests.factories import make_tenant
from tests.factories.webhooks import make_events, make_subscription
from tests.support.statements import Statement, statements_run
from webhooks.delivery.claim import claim_rows
from webhooks.delivery.lease import Lease
from webhooks.delivery.rows import new_delivery
from webhooks.models import Delivery
from webhooks.sweeper import sweep_deliveries

_deliveries = Delivery.__table__  # type: ignore[attr-defined]


@pytest.fixture
def selects_of_deliveries() -> Iterator[list[Statement]]:
    """Every SELECT from deliveries that any engine of this process runs, with its parameters."""
    with statements_run(lambda sql: sql.startswith("SELECT") and "FROM deliveries" in sql) as seen:
        yield seen


async def _pending_rows(app_ctx: AppContext, count: int) -> list[str]:
    """``count`` pending deliveries of one event, written as fan-out writes them (one insert, committed)."""
    tenant = await make_tenant(app_ctx)
    subscription = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/ok")
    [event_id] = await make_events(app_ctx, tenant.workspace_id, hand_off_now=False)
    now = utcnow()
    rows = [
        new_delivery(
            workspace_id=tenant.workspace_id,
            event_id=event_id,
            event_type="calendar.sync.completed",
            subscription_id=subscription.id,
            now=now,
        )
        for _ in range(count)
    ]
    async with app_ctx.db.session() as session:
        await insert_rows(session, _deliveries, rows)
    return [row["id"] for row in rows]


async def _pages(app_ctx: AppContext, ids: list[str]) -> dict[str, int]:
    async with app_ctx.db.session() as session:
        found = await session.execute(
            sa.text("SELECT id, (ctid::text::point)[0]::int FROM deliveries WHERE id = ANY(:ids)"), {"ids": ids}
        )
        return {row[0]: row[1] for row in found}


async def test_on_postgresql_most_claims_leave_the_row_on_its_page(app_ctx: AppContext) -> None:
    if app_ctx.settings.is_sqlite:
        pytest.skip("PostgreSQL's HOT updates; SQLite updates rows in place")
    ids = await _pending_rows(app_ctx, 400)  # a dozen pages, each filled as far as the fill factor lets inserts
    before = await _pages(app_ctx, ids)
    now = utcnow()
    async with app_ctx.db.session() as session:
        for start in range(0, len(ids), 100):
            claimed = await claim_rows(session, ids[start : start + 100], now=now, lease=Lease(now, []))
            assert len(claimed) == 100
    after = await _pages(app_ctx, ids)
    stayed = sum(after[i] == before[i] for i in ids)
    # With full pages (fill factor 100) every claim but those on the last page moves its row, and adds an entry to
    # each of the table's indexes; with room left most stay, and PostgreSQL writes them as HOT updates.
    assert stayed >= len(ids) // 2, (stayed, len(ids))


async def _plans(app_ctx: AppContext, statements: list[tuple[str, Any]]) -> list[str]:
    """Each statement's plan; on PostgreSQL its generic plan (a prepared statement's after its fifth run, made
    once for any parameters), with sequential scans off and only the due index and the primary key left (the others
    dropped in this transaction, rolled back): whether it *can* read the due index, not whether it is the cheapest
    here (the metrics' count read a bitmap of the workspace-status index in CI, whose database holds other tests'
    rows)."""
    plans = []
    async with app_ctx.db.session() as session:
        connection = await session.connection()
        if not app_ctx.settings.is_sqlite:
            await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            await connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            for index in _deliveries.indexes:
                if index.name != "ix_deliveries_due":
                    await connection.exec_driver_sql(f"DROP INDEX {index.name}")
        for number, (sql, params) in enumerate(statements):
            if app_ctx.settings.is_sqlite:
                rows = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
                plans.append("\n".join(str(row[-1]) for row in rows))
                continue
            await connection.exec_driver_sql(f"PREPARE planned_{number} AS {sql}")
            arguments = f"({', '.join(repr(str(p)) for p in params)})" if params else ""
            rows = await connection.exec_driver_sql(f"EXPLAIN EXECUTE planned_{number}{arguments}")
            plans.append("\n".join(str(row[0]) for row in rows))
        await session.rollback()
    return plans


async def test_the_sweeper_and_the_metrics_count_read_the_due_index(
    app_ctx: AppContext, selects_of_deliveries: list[tuple[str, Any]]
) -> None:
    ids = await _pending_rows(app_ctx, 3)
    async with app_ctx.db.session() as session:
        await session.execute(
            sa.update(_deliveries)
            .where(_deliveries.c.id.in_(ids))
            .values(next_attempt_at=utcnow() - timedelta(minutes=5))
        )
    assert await sweep_deliveries(app_ctx) == 3
    snapshot = Snapshot()
    await _read_database(app_ctx, snapshot)
    assert snapshot.deliveries == {"pending": 3, "failed": 0, "dead": 0}

    # The sweeper's query for each open status, then the metrics' count: all of them on the partial index (a
    # query that does not state its terms cannot use it: SQLite's planner, PostgreSQL's generic plans).
    plans = await _plans(app_ctx, selects_of_deliveries)
    assert len(plans) == 3, selects_of_deliveries
    assert all("ix_deliveries_due" in plan for plan in plans), plans


async def test_the_due_index_holds_open_and_dead_rows_only(app_ctx: AppContext) -> None:
    # As the database has it (migrations on PostgreSQL and SQLite alike): the record of a success, the most
    # frequent write, then adds no entry to it.
    if app_ctx.settings.is_sqlite:
        query = "SELECT sql FROM sqlite_master WHERE name = 'ix_deliveries_due'"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_deliveries_due'"
    async with app_ctx.db.session() as session:
        definition = " ".join(str(await session.scalar(sa.text(query))).split()).replace("::text", "")
    assert "WHERE" in definition and "succeeded" not in definition and "cancelled" not in definition, definition
    for status in ("pending", "failed", "dead"):
        assert f"'{status}'" in definition, definition
