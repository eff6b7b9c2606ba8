"""Scenario (i): how a delivery's cost grows with the size of the data around it.

- fan-out: one workspace with 10, 1,000 and 100,000 subscriptions; events sized so that each run makes
  about ``--growth-deliveries`` deliveries (100,000 subscriptions: one event, 100,000 deliveries);
- workspaces: 1, 100 and 10,000 workspaces of 10 subscriptions each; the same number of events in each
  run, spread round-robin over the workspaces (with 10,000 workspaces every event is another workspace's,
  so no two events of a relay batch share a match), 20 events per committed transaction as in (a).

Workspaces, subscriptions and their filters are bulk-inserted (as ``make_subscription`` builds them:
sealed secrets, one filter row each); events go through the real path. Each run is checked like (a):
every receipt has a 2xx attempt row and a sample of signatures verifies. Verdict: the largest case's
rate within 20 % of the smallest's.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from bench.driver import Tenant, wait_recorded
from subscriptions.keys import generate_webhook_secret
from subscriptions.models import ANY, Subscription, SubscriptionFilter
from synchook.auth.models import Workspace
from synchook.bulk import insert_rows
from synchook.context import AppContext
from synchook.ids import new_id
from synchook.outbox import hand_off, record_event
from synchook.timeutil import utcnow
from tests.factories.webhooks import sync_data

if TYPE_CHECKING:
    from bench.harness import Bench

__all__ = ["FLAT_WITHIN", "growth"]

FLAT_WITHIN = 0.2
_PER_TRANSACTION = 20
_CHUNK = 5_000
_DATA = sync_data("ws_bench")
_PATTERN = "calendar.sync.*"


async def make_tenants(
    ctx: AppContext, receiver_url: str, name: str, *, workspaces: int, subscriptions: int
) -> list[Tenant]:
    """``workspaces`` workspaces of ``subscriptions`` subscriptions each, bulk-inserted. Workspace names and
    endpoint paths carry the workspace's id, so two cases of one size (``--growth-workspaces 100,100``) can run."""
    now = utcnow()
    tenants = [Tenant(new_id("ws")) for _ in range(workspaces)]
    workspace_rows = [{"id": t.workspace_id, "name": f"{name}-{t.workspace_id}", "created_at": now} for t in tenants]
    sub_rows: list[dict[str, Any]] = []
    filter_rows: list[dict[str, Any]] = []
    for tenant in tenants:
        for s in range(subscriptions):
            sub_id = new_id("sub")
            path = f"/ok/{name}/{tenant.workspace_id}/{s}"
            secret = generate_webhook_secret()
            tenant.paths[sub_id] = path
            tenant.secrets[path] = secret
            sub_rows.append(
                {
                    "id": sub_id,
                    "workspace_id": tenant.workspace_id,
                    "url": receiver_url + path,
                    "event_types": [_PATTERN],
                    "status": "enabled",
                    "signature_type": "hmac-sha256",
                    "secret_sealed": ctx.box.seal(secret, context=sub_id),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            filter_rows.append(
                {
                    "subscription_id": sub_id,
                    "workspace_id": tenant.workspace_id,
                    "event_pattern": _PATTERN,
                    "provider": ANY,
                }
            )
    for table, rows in (
        (Workspace.__table__, workspace_rows),  # type: ignore[attr-defined]
        (Subscription.__table__, sub_rows),  # type: ignore[attr-defined]
        (SubscriptionFilter.__table__, filter_rows),  # type: ignore[attr-defined]
    ):
        for start in range(0, len(rows), _CHUNK):
            async with ctx.db.session() as session:
                await insert_rows(session, table, rows[start : start + _CHUNK])
    return tenants


async def publish_round_robin(ctx: AppContext, workspace_ids: list[str], events: int) -> None:
    """``events`` lifecycle events over the workspaces in turn, 20 per committed transaction, each handed off."""
    for start in range(0, events, _PER_TRANSACTION):
        async with ctx.db.session() as session:
            made = [
                record_event(
                    session,
                    workspace_id=workspace_ids[index % len(workspace_ids)],
                    type="calendar.sync.completed",
                    provider="google",
                    data=_DATA,
                )
                for index in range(start, min(events, start + _PER_TRANSACTION))
            ]
        await hand_off(ctx.enqueue, [e.id for e in made])


async def _run(bench: Bench, label: str, tenants: list[Tenant], events: int) -> dict[str, Any]:
    per_event = len(tenants[0].paths)
    await bench.receiver.reset()
    cpu_before = bench.stack.worker_cpu()
    started = time.time()
    await publish_round_robin(bench.ctx, [t.workspace_id for t in tenants], events)
    expected = events * per_event
    result = await bench._finish(
        "i", tenants, expected, started, timeout=max(120, expected / 300), keep_workers=True, cpu_before=cpu_before
    )
    result["case"] = label
    bench._print_delivery(f"(i) {label}", result, f"{events} events x {per_event} subscriptions")
    return result


async def _warm_up(bench: Bench) -> None:
    """A few hundred deliveries first, unmeasured, so the first case does not also pay the workers' first
    connections and statements (the later cases would run warm)."""
    tenants = await make_tenants(bench.ctx, bench.stack.receiver_url, "warm", workspaces=1, subscriptions=10)
    await bench.receiver.reset()
    await publish_round_robin(bench.ctx, [tenants[0].workspace_id], 40)
    if not await bench.receiver.wait_healthy(400, timeout=120):
        raise RuntimeError("(i) the warm-up's deliveries did not arrive")
    await wait_recorded(bench.ctx, [tenants[0].workspace_id], 400, timeout=60)


async def growth(bench: Bench) -> None:
    deliveries = bench.args.growth_deliveries
    report: dict[str, Any] = {"fan_out": [], "workspaces": []}
    # One pair of workers for every case: a start cost 2 s (6 s on a loaded machine) each time, and its imports'
    # CPU, counted in a 12,000-delivery case, added ~160 us to that case's CPU per delivery but not to the
    # 100,000-subscription one's. Each case has its own tenants; the previous one's deliveries are all recorded.
    bench.stack.start_workers()
    await _warm_up(bench)
    for subs in bench.args.growth_fanout:
        tenants = await make_tenants(
            bench.ctx, bench.stack.receiver_url, f"fan{subs}", workspaces=1, subscriptions=subs
        )
        result = await _run(bench, f"{subs:,} subs", tenants, max(1, deliveries // subs))
        report["fan_out"].append({"subscriptions": subs, **result})
    for count in bench.args.growth_workspaces:
        tenants = await make_tenants(
            bench.ctx, bench.stack.receiver_url, f"wss{count}", workspaces=count, subscriptions=10
        )
        result = await _run(bench, f"{count:,} workspaces", tenants, max(1, deliveries // 10))
        report["workspaces"].append({"workspaces": count, **result})
    bench._stop_workers("i")
    for key, unit in (("fan_out", "subscriptions"), ("workspaces", "workspaces")):
        runs = report[key]
        if len(runs) < 2:
            continue
        change = runs[-1]["rate"] / runs[0]["rate"]
        report[f"{key}_largest_to_smallest"] = change
        rates = " / ".join(f"{r['rate']:.0f}" for r in runs)
        bench.line(
            f"(i) {key.replace('_', '-')}: {runs[-1][unit]:,} {unit} at {change:.2f} x the rate with "
            f"{runs[0][unit]:,} ({rates} deliveries/s)"
        )
    bench.report["i_growth"] = report
