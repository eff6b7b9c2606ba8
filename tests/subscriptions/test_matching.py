"""match_subscriptions: exact names, wildcards, providers, status, deletion, workspaces, targeted events."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from subscriptions import service
from subscriptions.matching import match_subscriptions
from subscriptions.schemas import CreateSubscription, UpdateSubscription
from synchook.context import AppContext
from tests.factories import Tenant, make_tenant
from webhooks.delivery.rows import cancel_open_deliveries

SYNC_TYPES = ["calendar.sync.queued", "calendar.sync.started", "calendar.sync.completed", "calendar.sync.failed"]


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


async def subscribe(ctx: AppContext, tenant: Tenant, event_types: list[str], **fields: Any) -> str:
    body = CreateSubscription.model_validate({"url": "https://r.example.com/", "event_types": event_types, **fields})
    async with ctx.db.session() as session:
        subscription, _ = await service.create_subscription(
            session, box=ctx.box, workspace_id=tenant.workspace_id, body=body, allow_private=True
        )
    return subscription.id


async def matches(
    ctx: AppContext,
    tenant: Tenant,
    event_type: str,
    provider: str | None = None,
    target: str | None = None,
) -> list[str]:
    async with ctx.db.session() as session:
        found = await match_subscriptions(
            session,
            workspace_id=tenant.workspace_id,
            event_type=event_type,
            provider=provider,
            target_subscription_id=target,
        )
    return [s.id for s in found]


async def test_exact_name_matches_only_that_type(app_ctx: AppContext, tenant: Tenant) -> None:
    sub = await subscribe(app_ctx, tenant, ["calendar.sync.completed"])
    assert await matches(app_ctx, tenant, "calendar.sync.completed", "google") == [sub]
    assert await matches(app_ctx, tenant, "calendar.sync.failed", "google") == []
    assert await matches(app_ctx, tenant, "webhook.test") == []


async def test_group_wildcard_matches_its_group(app_ctx: AppContext, tenant: Tenant) -> None:
    sub = await subscribe(app_ctx, tenant, ["calendar.sync.*"])
    for event_type in SYNC_TYPES:
        assert await matches(app_ctx, tenant, event_type, "microsoft") == [sub]
    assert await matches(app_ctx, tenant, "webhook.test") == []
    assert await matches(app_ctx, tenant, "webhook.subscription.disabled") == []


async def test_top_level_wildcard_matches_every_depth(app_ctx: AppContext, tenant: Tenant) -> None:
    calendar = await subscribe(app_ctx, tenant, ["calendar.*"])
    webhook = await subscribe(app_ctx, tenant, ["webhook.*"])
    assert await matches(app_ctx, tenant, "calendar.sync.started", "google") == [calendar]
    assert await matches(app_ctx, tenant, "webhook.test") == [webhook]
    assert await matches(app_ctx, tenant, "webhook.subscription.disabled") == [webhook]


async def test_star_matches_everything(app_ctx: AppContext, tenant: Tenant) -> None:
    sub = await subscribe(app_ctx, tenant, ["*"])
    for event_type in [*SYNC_TYPES, "webhook.test", "webhook.subscription.disabled"]:
        assert await matches(app_ctx, tenant, event_type, None) == [sub]


async def test_overlapping_patterns_give_one_match(app_ctx: AppContext, tenant: Tenant) -> None:
    sub = await subscribe(
        app_ctx,
        tenant,
        ["*", "calendar.*", "calendar.sync.*", "calendar.sync.completed"],
        providers=["google", "microsoft"],
    )
    assert await matches(app_ctx, tenant, "calendar.sync.completed", "google") == [sub]


async def test_provider_filter(app_ctx: AppContext, tenant: Tenant) -> None:
    google = await subscribe(app_ctx, tenant, ["calendar.sync.*"], providers=["google"])
    microsoft = await subscribe(app_ctx, tenant, ["calendar.sync.*"], providers=["microsoft"])
    both = await subscribe(app_ctx, tenant, ["calendar.sync.*"], providers=["google", "microsoft"])
    every = await subscribe(app_ctx, tenant, ["calendar.sync.*"])
    assert await matches(app_ctx, tenant, "calendar.sync.completed", "google") == [google, both, every]
    assert await matches(app_ctx, tenant, "calendar.sync.completed", "microsoft") == [microsoft, both, every]
    # No provider on the event: no provider condition.
    assert await matches(app_ctx, tenant, "calendar.sync.completed", None) == [google, microsoft, both, every]


async def test_results_are_ordered_by_id(app_ctx: AppContext, tenant: Tenant) -> None:
    ids = [await subscribe(app_ctx, tenant, [pattern]) for pattern in ("*", "calendar.sync.failed", "calendar.*")]
    assert await matches(app_ctx, tenant, "calendar.sync.failed", "google") == sorted(ids)


async def test_disabled_subscriptions_match_and_deleted_do_not(app_ctx: AppContext, tenant: Tenant) -> None:
    disabled = await subscribe(app_ctx, tenant, ["*"])
    deleted = await subscribe(app_ctx, tenant, ["*"])
    async with app_ctx.db.session() as session:
        await service.update_subscription(
            session,
            workspace_id=tenant.workspace_id,
            subscription_id=disabled,
            body=UpdateSubscription(status="disabled"),
            allow_private=True,
        )
        await service.delete_subscription(
            session,
            workspace_id=tenant.workspace_id,
            subscription_id=deleted,
            on_delete=cancel_open_deliveries,
        )
    async with app_ctx.db.session() as session:
        found = await match_subscriptions(
            session, workspace_id=tenant.workspace_id, event_type="calendar.sync.completed", provider="google"
        )
    assert [(s.id, s.status) for s in found] == [(disabled, "disabled")]


async def test_other_workspaces_never_match(app_ctx: AppContext, tenant: Tenant) -> None:
    other = await make_tenant(app_ctx)
    await subscribe(app_ctx, other, ["*"])
    mine = await subscribe(app_ctx, tenant, ["*"])
    assert await matches(app_ctx, tenant, "calendar.sync.completed", "google") == [mine]


async def test_patch_moves_the_subscription_to_its_new_filters(app_ctx: AppContext, tenant: Tenant) -> None:
    sub = await subscribe(app_ctx, tenant, ["calendar.sync.completed"], providers=["google"])
    async with app_ctx.db.session() as session:
        await service.update_subscription(
            session,
            workspace_id=tenant.workspace_id,
            subscription_id=sub,
            body=UpdateSubscription.model_validate({"event_types": ["webhook.*"], "providers": None}),
            allow_private=True,
        )
    assert await matches(app_ctx, tenant, "calendar.sync.completed", "google") == []
    assert await matches(app_ctx, tenant, "webhook.test", "microsoft") == [sub]


async def test_target_returns_that_subscription_whatever_its_filters(app_ctx: AppContext, tenant: Tenant) -> None:
    target = await subscribe(app_ctx, tenant, ["calendar.sync.completed"], providers=["google"])
    await subscribe(app_ctx, tenant, ["*"])
    assert await matches(app_ctx, tenant, "webhook.test", None, target=target) == [target]


async def test_target_of_another_workspace_or_deleted_matches_nothing(app_ctx: AppContext, tenant: Tenant) -> None:
    other = await make_tenant(app_ctx)
    theirs = await subscribe(app_ctx, other, ["*"])
    deleted = await subscribe(app_ctx, tenant, ["*"])
    async with app_ctx.db.session() as session:
        await service.delete_subscription(
            session,
            workspace_id=tenant.workspace_id,
            subscription_id=deleted,
            on_delete=cancel_open_deliveries,
        )
    assert await matches(app_ctx, tenant, "webhook.test", None, target=theirs) == []
    assert await matches(app_ctx, tenant, "webhook.test", None, target=deleted) == []
    assert await matches(app_ctx, tenant, "webhook.test", None, target="sub_unknown") == []


async def test_filter_rows_cover_every_pattern_and_provider(app_ctx: AppContext, tenant: Tenant) -> None:
    sub = await subscribe(
        app_ctx, tenant, ["calendar.sync.completed", "webhook.test"], providers=["google", "microsoft"]
    )
    every = await subscribe(app_ctx, tenant, ["calendar.sync.*"])
    async with app_ctx.db.session() as session:
        rows = (
            await session.execute(
                sa.text(
                    "SELECT subscription_id, workspace_id, event_pattern, provider FROM subscription_filters"
                    " ORDER BY subscription_id, event_pattern, provider"
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (sub, tenant.workspace_id, "calendar.sync.completed", "google"),
        (sub, tenant.workspace_id, "calendar.sync.completed", "microsoft"),
        (sub, tenant.workspace_id, "webhook.test", "google"),
        (sub, tenant.workspace_id, "webhook.test", "microsoft"),
        (every, tenant.workspace_id, "calendar.sync.*", "*"),
    ]


async def test_matching_uses_the_filter_index(app_ctx: AppContext, tenant: Tenant) -> None:
    await subscribe(app_ctx, tenant, ["*"])
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        captured.append((statement, parameters))

    engine = app_ctx.db.engine.sync_engine
    async with app_ctx.db.session() as session:
        sa.event.listen(engine, "before_cursor_execute", capture)
        try:
            await match_subscriptions(
                session, workspace_id=tenant.workspace_id, event_type="calendar.sync.completed", provider="google"
            )
        finally:
            sa.event.remove(engine, "before_cursor_execute", capture)
        selects = [(sql, params) for sql, params in captured if sql.lstrip().upper().startswith("SELECT")]
        assert len(selects) == 1  # one query, whatever the number of subscriptions
        if app_ctx.db.dialect != "sqlite":
            return
        connection = await session.connection()
        sql, params = selects[0]
        plan = (await connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)).all()
    assert "ix_subscription_filters_match" in " ".join(str(row) for row in plan)


async def _completed_syncs_page(session: Any, tenant: Tenant, *, after: str | None, limit: int) -> list[Any]:
    """A page of the tenant's subscriptions matching a completed Google sync, after ``after`` (match_page)."""
    from subscriptions.matching import match_page

    return list(
        await match_page(
            session,
            workspace_id=tenant.workspace_id,
            event_type="calendar.sync.completed",
            provider="google",
            target_subscription_id=None,
            after=after,
            limit=limit,
        )
    )


async def test_pages_of_matches_cover_the_same_subscriptions_in_id_order(app_ctx: AppContext, tenant: Tenant) -> None:

    kinds = [["*"], ["calendar.sync.*"], ["calendar.sync.failed"], ["calendar.sync.completed"]]
    for index in range(9):
        providers = {"providers": ["microsoft"]} if index % 4 == 3 else {}
        await subscribe(app_ctx, tenant, kinds[index % 4], **providers)
    other = await make_tenant(app_ctx)
    await subscribe(app_ctx, other, ["*"])
    everything = await matches(app_ctx, tenant, "calendar.sync.completed", "google")

    paged: list[str] = []
    after: str | None = None
    while True:
        async with app_ctx.db.session() as session:
            page = await _completed_syncs_page(session, tenant, after=after, limit=2)
        paged.extend(row.id for row in page)
        if len(page) < 2:
            break
        after = page[-1].id
    assert paged == everything and len(everything) == 5


async def test_several_workspaces_match_together_as_each_does_alone(app_ctx: AppContext, tenant: Tenant) -> None:
    from subscriptions.matching import match_workspaces

    kinds = [["*"], ["calendar.sync.*"], ["calendar.sync.failed"], ["calendar.sync.completed"]]
    others = [await make_tenant(app_ctx) for _ in range(2)]
    for index, owner in enumerate([tenant, *others] * 3):
        providers = {"providers": ["microsoft"]} if index % 4 == 3 else {}
        await subscribe(app_ctx, owner, kinds[index % 4], **providers)
    quiet = await make_tenant(app_ctx)  # subscribed to nothing this event selects
    await subscribe(app_ctx, quiet, ["webhook.*"])
    workspaces = [quiet, tenant, *others]
    alone = {t.workspace_id: await matches(app_ctx, t, "calendar.sync.completed", "google") for t in workspaces}
    async with app_ctx.db.session() as session:
        together = await match_workspaces(
            session,
            workspace_ids=[t.workspace_id for t in workspaces],
            event_type="calendar.sync.completed",
            provider="google",
            limit=sum(map(len, alone.values())),
        )
        # More matches than the limit: no partial answer (the caller matches each workspace with its own limit).
        over = await match_workspaces(
            session,
            workspace_ids=[t.workspace_id for t in workspaces],
            event_type="calendar.sync.completed",
            provider="google",
            limit=sum(map(len, alone.values())) - 1,
        )
    assert alone[quiet.workspace_id] == [] and all(alone[t.workspace_id] for t in [tenant, *others])
    assert together is not None and over is None
    assert {workspace: [row.id for row in rows] for workspace, rows in together.items()} == {
        workspace: ids for workspace, ids in alone.items() if ids
    }
    assert all(row.workspace_id == workspace for workspace, rows in together.items() for row in rows)


async def test_a_later_page_walks_the_subscriptions_in_id_order_whatever_the_statistics(
    app_ctx: AppContext, tenant: Tenant
) -> None:
    # Statistics taken while the workspace was empty, then 3,000 subscriptions: PostgreSQL believed one filter row
    # matched and hashed every match for each page (a bulk import before autovacuum's next ANALYZE).
    if app_ctx.db.dialect == "sqlite":
        pytest.skip("SQLite probes a correlated EXISTS per row; PostgreSQL's planner is the one that joined")
    from subscriptions.models import Subscription, SubscriptionFilter
    from synchook.ids import new_id
    from synchook.timeutil import utcnow

    now = utcnow()
    ids = sorted(new_id("sub") for _ in range(3_000))
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        captured.append((statement, parameters))

    engine = app_ctx.db.engine.sync_engine
    async with app_ctx.db.session() as session:
        await session.execute(sa.text("ANALYZE subscriptions, subscription_filters"))
        await session.execute(
            sa.insert(Subscription.__table__),  # type: ignore[attr-defined]
            [
                {
                    "id": i,
                    "workspace_id": tenant.workspace_id,
                    "url": "http://127.0.0.1:9/ok",
                    "event_types": ["*"],
                    "secret_sealed": "sealed",
                    "created_at": now,
                    "updated_at": now,
                }
                for i in ids
            ],
        )
        await session.execute(
            sa.insert(SubscriptionFilter.__table__),  # type: ignore[attr-defined]
            [
                {"subscription_id": i, "workspace_id": tenant.workspace_id, "event_pattern": "*", "provider": "*"}
                for i in ids
            ],
        )
        sa.event.listen(engine, "before_cursor_execute", capture)
        try:
            page = await _completed_syncs_page(session, tenant, after=ids[999], limit=1001)
        finally:
            sa.event.remove(engine, "before_cursor_execute", capture)
        [(sql, params)] = [(sql, params) for sql, params in captured if sql.startswith("SELECT")]  # not SET LOCAL
        connection = await session.connection()
        plan = "\n".join(str(r[0]) for r in await connection.exec_driver_sql(f"EXPLAIN {sql}", params))
        await session.rollback()
    assert [row.id for row in page] == ids[1000:2001]
    # In id order from the cursor, each subscription's filters probed by its id as it comes, to the page's end.
    assert "SubPlan" in plan and "Sort" not in plan and "Hash" not in plan, plan
    assert "ix_subscription_filters_subscription_id" in plan and "ix_subscription_filters_match" not in plan, plan
