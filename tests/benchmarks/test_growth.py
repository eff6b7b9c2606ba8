"""(i)'s tenants: two cases of one size can run in one bench (`--growth-workspaces 100,100`)."""

from __future__ import annotations

import sqlalchemy as sa

from bench.growth import make_tenants
from synchook.auth.models import Workspace
from synchook.context import AppContext


async def test_two_cases_of_one_size_make_distinct_workspaces_and_endpoints(app_ctx: AppContext) -> None:
    first = await make_tenants(app_ctx, "http://127.0.0.1:9", "wss2", workspaces=2, subscriptions=2)
    second = await make_tenants(app_ctx, "http://127.0.0.1:9", "wss2", workspaces=2, subscriptions=2)
    tenants = [*first, *second]
    async with app_ctx.db.session() as session:
        names = (await session.execute(sa.select(Workspace.name))).scalars().all()
    assert len([n for n in names if n.startswith("wss2-")]) == 4
    paths = [path for tenant in tenants for path in tenant.paths.values()]
    assert len(paths) == len(set(paths)) == 8
