"""Matching on PostgreSQL is planned for the workspaces it names, so a plan made while the tables were small is not
run again after they grew (a fresh install, a tenant's import, the bench's bulk loads).

What is counted is the rows a match reads (``pg_stat_xact_user_tables``, before and after it), not its time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from subscriptions.matching import Matched, Scoped, match_page, match_subscriptions, match_workspaces
from synchook.context import AppContext
from synchook.db import plan_for_values
from tests.factories import make_tenant
from tests.factories.webhooks import make_subscription

_TABLES = ("subscriptions", "subscription_filters")
_GROWN_BY = 20_000


@pytest.fixture
async def postgres_ctx(app_ctx: AppContext) -> AsyncIterator[AppContext]:
    """The PostgreSQL context with autovacuum off on the matching tables: statistics stay what the test made them."""
    if app_ctx.db.dialect != "postgresql":
        pytest.skip("generic plans are PostgreSQL's")
    await _each_table(app_ctx, "ALTER TABLE {} SET (autovacuum_enabled = false)")
    try:
        yield app_ctx
    finally:
        await _each_table(app_ctx, "ALTER TABLE {} RESET (autovacuum_enabled)")
        await _each_table(app_ctx, "ANALYZE {}")  # the small tables the next test expects


async def _each_table(ctx: AppContext, sql: str) -> None:
    async with ctx.db.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        for table in _TABLES:
            await connection.execute(sa.text(sql.format(table)))


async def _grow(ctx: AppContext, workspace_id: str) -> None:
    """``_GROWN_BY`` subscriptions of one workspace, with ids before every other (the primary key's first rows)."""
    async with ctx.db.session() as session:
        await session.execute(
            sa.text(
                "INSERT INTO subscriptions (id, workspace_id, url, event_types, status, signature_type, secret_sealed,"
                " created_at, updated_at) SELECT 'sub_0' || lpad(n::text, 25, '0'), :ws, 'https://r.example.com/',"
                " '[\"*\"]', 'enabled', 'hmac-sha256', 'sealed', now(), now() FROM generate_series(1, :n) AS n"
            ),
            {"ws": workspace_id, "n": _GROWN_BY},
        )
        await session.execute(
            sa.text(
                "INSERT INTO subscription_filters (subscription_id, workspace_id, event_pattern, provider)"
                " SELECT 'sub_0' || lpad(n::text, 25, '0'), :ws, '*', '*' FROM generate_series(1, :n) AS n"
            ),
            {"ws": workspace_id, "n": _GROWN_BY},
        )


async def _rows_read(session: AsyncSession) -> int:
    """Rows this backend has read from the matching tables by sequential scans and index fetches, counted since it
    last reported to the statistics collector: only a difference of two calls in one transaction means anything."""
    read = await session.scalar(
        sa.text(
            "SELECT sum(seq_tup_read + coalesce(idx_tup_fetch, 0)) FROM pg_stat_xact_user_tables"
            " WHERE relname IN ('subscriptions', 'subscription_filters')"
        )
    )
    return int(read or 0)


async def test_matches_after_the_tables_grew_read_only_their_workspaces(postgres_ctx: AppContext) -> None:
    ctx = postgres_ctx
    small = [await make_tenant(ctx) for _ in range(2)]
    wanted = {
        t.workspace_id: [(await make_subscription(ctx, t.workspace_id, url="https://r.example.com/")).id] for t in small
    }
    big = await make_tenant(ctx)
    await _each_table(ctx, "ANALYZE {}")
    ids = [t.workspace_id for t in small]
    # Enough calls on one pooled connection (the pool hands back the one returned last) for PostgreSQL to cache a
    # generic plan of each statement, costed for tables of three rows.
    for _ in range(8):
        async with ctx.db.session() as session:
            await _several(session, ids)
            await _one(session, ids[0])
            await _page(session, ids[0])

    await _grow(ctx, big.workspace_id)  # no ANALYZE: the statistics still say three rows

    async with ctx.db.session() as session:
        before = await _rows_read(session)
        found = await _several(session, ids)
        assert await _rows_read(session) - before < 50
    assert found is not None and {w: [m.id for m in rows] for w, rows in found.items()} == wanted
    for match in (_one, _page):
        async with ctx.db.session() as session:
            before = await _rows_read(session)
            matched = await match(session, ids[0])
            assert await _rows_read(session) - before < 50, match.__name__
        assert [m.id for m in matched] == wanted[ids[0]]


_EVENT = {"event_type": "calendar.sync.completed", "provider": "google"}


async def _several(session: AsyncSession, workspace_ids: list[str]) -> dict[str, list[Matched]] | None:
    return await match_workspaces(session, workspace_ids=workspace_ids, limit=100, **_EVENT)


async def _one(session: AsyncSession, workspace_id: str) -> list[Matched]:
    return await match_subscriptions(session, workspace_id=workspace_id, limit=100, **_EVENT)


async def _page(session: AsyncSession, workspace_id: str) -> list[Scoped]:
    return await match_page(
        session, workspace_id=workspace_id, target_subscription_id=None, after="sub_", limit=100, **_EVENT
    )


async def test_plan_for_values_holds_for_its_transaction_only(app_ctx: AppContext) -> None:
    said: list[str] = []

    def record(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        said.append(statement)

    sa.event.listen(app_ctx.db.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with app_ctx.db.session() as session:
            await plan_for_values(session)
            await plan_for_values(session)
            inside = await _plan_cache_mode(session)
        async with app_ctx.db.session() as session:
            after = await _plan_cache_mode(session)
    finally:
        sa.event.remove(app_ctx.db.engine.sync_engine, "before_cursor_execute", record)
    settings = [s for s in said if "plan_cache_mode = " in s]
    if app_ctx.db.dialect == "postgresql":
        assert (inside, after) == ("force_custom_plan", "auto")
        assert len(settings) == 1  # once per transaction
    else:
        assert settings == []  # SQLite plans each statement anew: nothing to say


async def _plan_cache_mode(session: AsyncSession) -> str | None:
    if (await session.connection()).dialect.name != "postgresql":
        return None
    return str(await session.scalar(sa.text("SHOW plan_cache_mode")))
