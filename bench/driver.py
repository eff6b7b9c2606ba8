"""What the bench process does against the running stack: set-up rows, publish events, watch the receiver, check.

Events go through the real path: `record_event` in a committed transaction, then `hand_off` to arq
(outbox → relay → fan-out → deliver jobs on the worker processes → signed POST → attempt row).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import sqlalchemy as sa

from synchook.auth.service import create_workspace
from synchook.context import AppContext
from synchook.db import among
from synchook.outbox import hand_off, record_event
from tests.factories.webhooks import make_subscription, sync_data
from webhooks import verify
from webhooks.models import Delivery, DeliveryAttempt

_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_attempts = DeliveryAttempt.__table__  # type: ignore[attr-defined]
_CHECK_CHUNK = 500  # events per check query


@dataclass
class Tenant:
    """A workspace and its subscriptions, each at its own receiver path."""

    workspace_id: str
    paths: dict[str, str] = field(default_factory=dict)  # subscription id -> receiver path
    secrets: dict[str, str] = field(default_factory=dict)  # receiver path -> whsec_

    @property
    def subscription_ids(self) -> list[str]:
        return list(self.paths)


async def make_tenant(ctx: AppContext, receiver_url: str, name: str, *, healthy: int, hanging: int = 0) -> Tenant:
    async with ctx.db.session() as session:
        workspace = await create_workspace(session, name=name)
    tenant = Tenant(workspace.id)
    for index in range(healthy + hanging):
        path = f"/{'hang' if index >= healthy else 'ok'}/{name}/{index}"
        sub = await make_subscription(ctx, workspace.id, url=receiver_url + path, event_types=("calendar.sync.*",))
        tenant.paths[sub.id] = path
        tenant.secrets[path] = sub.secret
    return tenant


async def publish(ctx: AppContext, workspace_id: str, count: int) -> tuple[list[str], float]:
    """Commit ``count`` lifecycle events in one transaction, then hand them off; returns ids and commit time."""
    async with ctx.db.session() as session:
        events = [
            record_event(
                session, workspace_id=workspace_id, type="calendar.sync.completed", provider="google", data=_DATA
            )
            for _ in range(count)
        ]
    committed = time.time()
    ids = [e.id for e in events]
    await hand_off(ctx.enqueue, ids)
    return ids, committed


_DATA = sync_data("ws_bench")


class ReceiverClient:
    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base = base_url + "/_ctl"

    async def reset(self) -> None:
        async with self.http.post(self.base + "/reset") as response:
            response.raise_for_status()

    async def stats(self) -> dict[str, int]:
        async with self.http.get(self.base + "/stats") as response:
            return dict(await response.json())

    async def rows(self) -> list[tuple[str, str, float]]:
        async with self.http.get(self.base + "/dump") as response:
            return [tuple(r) for r in (await response.json())["rows"]]

    async def sample(self) -> list[dict[str, Any]]:
        async with self.http.get(self.base + "/sample") as response:
            return list((await response.json())["sample"])

    async def wait_healthy(self, expected: int, *, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (await self.stats())["healthy"] >= expected:
                return True
            await asyncio.sleep(0.1)
        return False


async def recorded_count(ctx: AppContext, workspace_ids: list[str]) -> int:
    async with ctx.db.session() as session:
        return int(
            (
                await session.execute(
                    sa.select(sa.func.count())
                    .select_from(_deliveries)
                    .where(_deliveries.c.workspace_id.in_(workspace_ids), _deliveries.c.status == "succeeded")
                )
            ).scalar_one()
        )


async def wait_recorded(ctx: AppContext, workspace_ids: list[str], expected: int, *, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await recorded_count(ctx, workspace_ids) >= expected:
            return time.time()
        await asyncio.sleep(0.2)
    return None


async def check(
    ctx: AppContext, receiver: ReceiverClient, tenants: list[Tenant], rows: list[tuple[str, str, float]]
) -> dict[str, Any]:
    """Every healthy delivery the receiver counted (by path and webhook-id) has a 2xx attempt row; a sample verifies."""
    paths = {sub: path for t in tenants for sub, path in t.paths.items()}
    secrets = {path: secret for t in tenants for path, secret in t.secrets.items()}
    received = {(path, msg_id) for path, msg_id, _ in rows if path in secrets and not path.startswith("/hang/")}
    recorded: set[tuple[str, str]] = set()
    # Why a healthy endpoint saw a duplicate: an attempt it answered that the worker recorded as failed
    # (a timeout under CPU starvation) is retried, and the receiver counts the retry again.
    healthy_errors: dict[str, int] = {}
    # The attempts of the events received (the webhook-id is the event id), found through the deliveries'
    # (event, subscription) index: a query naming the run's workspaces and subscriptions instead took minutes
    # with 10,000 workspaces and 100,000 subscriptions, holding SQLite's one write lock while workers waited.
    event_ids = sorted({msg_id for _, msg_id in received})
    for start in range(0, len(event_ids), _CHECK_CHUNK):
        async with ctx.db.session() as session:
            result = await session.execute(
                sa.select(
                    _deliveries.c.subscription_id, _deliveries.c.event_id, _attempts.c.status_code, _attempts.c.error
                )
                .join(_attempts, _attempts.c.delivery_id == _deliveries.c.id)
                .where(among(_deliveries.c.event_id, event_ids[start : start + _CHECK_CHUNK]))
            )
            for sub_id, event_id, status_code, error in result:
                path = paths.get(sub_id)
                if path is None:
                    continue
                if status_code is not None and 200 <= status_code < 300:
                    recorded.add((path, event_id))
                if error is not None and not path.startswith("/hang/"):
                    key = str(error).split(":")[0][:40]
                    healthy_errors[key] = healthy_errors.get(key, 0) + 1
    unrecorded = len(received - recorded)
    verified = failed = 0
    for entry in await receiver.sample():
        secret = secrets.get(entry.get("path", ""))
        if secret is None or entry["path"].startswith("/hang/"):
            continue
        try:
            # At the receipt time: a check made after a drain longer than the 5-minute tolerance (1,000,000 rows on a
            # busy machine) failed the signatures of every delivery received before its last 5 minutes.
            verify(entry["body"], entry["headers"], secret, now=int(entry["at"]))
            verified += 1
        except Exception:
            failed += 1
    stats = await receiver.stats()
    return {
        "counted": len(received),
        "unrecorded": unrecorded,
        "signatures_verified": verified,
        "signatures_failed": failed,
        "duplicates": stats["requests"] - stats["unique"],
        "healthy_failed_attempts": healthy_errors,
        "ok": unrecorded == 0 and failed == 0 and verified >= min(1000, len(received)),
    }
