"""Scenario (g): calendar change events at scale (issue 19), on the running bench stack.

A fake Google account (synchook/fakes, in a child process) holds a 10,000-event calendar. Sync jobs are
queued as the API queues them and run on the stack's `synchook worker` processes; a job's time is its
row's `completed_at - started_at`.

- Import: the first (full) sync of the calendar into a workspace with 10 subscriptions to
  `calendar.event.*`, against the **baseline**: the same import into a workspace without subscriptions, on
  as many baseline workers (bench/baseline_worker.py: no change rows, no outbox events; their own queue).
  The baseline still stores the normalised event with each index row and still tells created/updated/
  deleted apart, so it is the index as it was before change events, plus the §6.1 event. The baseline
  import runs before and after the measured one, and the ratio uses their mean (the machine's speed drifts).
- Deliveries: the 100,000 deliveries of that import (10,000 events x 10 subscriptions), from first to last
  receipt, as a ratio to the run's raw limit; every one recorded, a sample of signatures verified.
- Incremental: one event edited at the fake, then an incremental sync, alternating round by round between
  the baseline and the real workspace (with its 10 subscriptions); the ratio of the medians.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection as Pipe
from typing import TYPE_CHECKING, Any

import aiohttp
import sqlalchemy as sa
from arq.constants import job_key_prefix

from bench.baseline_worker import BASELINE_QUEUE
from bench.driver import Tenant, check, wait_recorded
from sync_trigger import connections
from sync_trigger import service as sync_service
from sync_trigger.models import SyncJob
from sync_trigger.schemas import OAuthConnectionBody, TriggerSyncBody
from synchook.auth.service import create_workspace
from synchook.context import AppContext
from synchook.queue import QUEUE_NAME
from tests.factories.webhooks import make_subscription

if TYPE_CHECKING:
    from bench.harness import Bench

SUBSCRIPTIONS = 10
TARGET_IMPORT = 2.0
TARGET_INCREMENTAL = 1.2
ACCOUNTS = ("base@example.com", "changes@example.com")
_jobs = SyncJob.__table__  # type: ignore[attr-defined]


# --- the fake provider (child process) -----------------------------------------------------------------


def _serve_fakes(pipe: Pipe, events: int) -> None:
    from synchook.fakes import FakeProviders

    fake = FakeProviders().start()
    # 30 minutes apart from 85 days back: 10,000 events stay inside the default window (now-90 d .. now+180 d).
    first = (datetime.now(UTC) - timedelta(days=85)).replace(minute=0, second=0, microsecond=0)
    ids: dict[str, list[str]] = {}
    for account in ACCOUNTS:
        fake.add_account("google", account)
        starts = [first + timedelta(minutes=30 * n) for n in range(events)]
        ids[account] = [
            fake.put_event("google", account, account, summary=f"Event {n}", start=at, end=at + timedelta(minutes=20))
            for n, at in enumerate(starts)
        ]
    pipe.send(
        {
            "env": fake.settings_env(),
            "base_url": fake.base_url,
            "tokens": {a: _tokens(fake.account("google", a)) for a in ACCOUNTS},
            "ids": {a: ids[a][:: max(1, events // 50)] for a in ACCOUNTS},
        }
    )
    pipe.recv()
    fake.stop()


def _tokens(account: Any) -> tuple[str, str]:
    return account.access_token, account.refresh_token


# --- workers -------------------------------------------------------------------------------------------


def _start_baseline_workers(bench: Bench) -> None:
    """The stack's worker count again, as baseline workers (bench/baseline_worker.py) on their own queue."""
    import redis

    client = redis.Redis.from_url(bench.stack.redis.url)
    health_key = BASELINE_QUEUE + ":health-check"
    client.delete(health_key)
    for _ in range(bench.stack.workers):
        bench.stack.worker_procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.baseline_worker"],
                env=bench.stack.env(),
                cwd=bench.stack.run_dir,
                stdout=bench.stack._log("worker"),
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + 30
    while not client.exists(health_key):
        if time.monotonic() > deadline or any(p.poll() is not None for p in bench.stack.worker_procs):
            raise RuntimeError(f"a baseline worker did not start (see {bench.stack.run_dir}/worker.log)")
        time.sleep(0.05)
    client.close()
    time.sleep(0.3)


# --- jobs ----------------------------------------------------------------------------------------------


async def _workspace(ctx: AppContext, name: str, account: str, tokens: tuple[str, str]) -> str:
    async with ctx.db.session() as session:
        workspace = await create_workspace(session, name=name)
        body = OAuthConnectionBody(
            provider="google",  # type: ignore[arg-type]
            account=account,
            access_token=tokens[0],
            refresh_token=tokens[1],
        )
        await connections.create_connection(session, box=ctx.box, workspace_id=workspace.id, body=body)
    return workspace.id


async def _sync(
    ctx: AppContext, workspace_id: str, *, baseline: bool, poll: float, timeout: float = 300
) -> tuple[float, dict[str, Any]]:
    """Queue an incremental sync as the API does (a baseline one on the baseline workers' queue), wait for it;
    (seconds from its start to its completion, its stats)."""

    accepted = await sync_service.trigger_sync(
        ctx.db,
        workspace_id=workspace_id,
        body=TriggerSyncBody(),
        cap=10**9,
        redis=ctx.redis,
        queue=BASELINE_QUEUE if baseline else QUEUE_NAME,
    )
    job_id = accepted.data["job_id"]
    # Watched in Redis (arq deletes the job's key once it has run), not by polling the row: on SQLite every
    # session is a write transaction, and polls would queue with the sync's own writes.
    assert ctx.redis is not None
    key = job_key_prefix + job_id
    deadline = time.monotonic() + timeout
    while await ctx.redis.exists(key):
        if time.monotonic() > deadline:
            raise RuntimeError(f"sync job {job_id} did not finish in {timeout:.0f}s")
        await asyncio.sleep(poll)
    async with ctx.db.session() as session:
        row = (
            await session.execute(
                sa.select(_jobs.c.status, _jobs.c.started_at, _jobs.c.completed_at, _jobs.c.stats, _jobs.c.error)
                .where(_jobs.c.id == job_id)
            )
        ).one()  # fmt: skip
    status, started, completed, stats, error = row
    if status != "completed":
        raise RuntimeError(f"sync job {job_id} ended {status}: {error}")
    return (completed - started).total_seconds(), dict(stats or {})


async def _edit(http: aiohttp.ClientSession, base_url: str, account: str, event_id: str, summary: str) -> None:
    url = f"{base_url}/_ctl/google/calendars/{account}/events/{event_id}"
    async with http.post(url, json={"summary": summary}) as response:
        response.raise_for_status()


async def _incremental_rounds(
    bench: Bench, http: aiohttp.ClientSession, fakes: dict[str, Any], base: str, chg: str, delivered: list[int]
) -> tuple[list[float], list[float]]:
    """Alternating rounds, baseline then real: one event edited at the fake, then an incremental sync. A real
    round's 10 deliveries are awaited before the next round, so no sync runs beside the previous one's
    deliveries. Returns the seconds of each (baseline, real)."""
    times: tuple[list[float], list[float]] = ([], [])
    for index in range(bench.args.changes_rounds * 2):
        baseline = index % 2 == 0
        account = ACCOUNTS[0] if baseline else ACCOUNTS[1]
        event_id = fakes["ids"][account][(index // 2) % len(fakes["ids"][account])]
        await _edit(http, fakes["base_url"], account, event_id, f"Edited {index}")
        seconds, stats = await _sync(bench.ctx, base if baseline else chg, baseline=baseline, poll=0.005)
        if (stats.get("events_created"), stats.get("events_updated"), stats.get("events_deleted")) != (0, 1, 0):
            raise RuntimeError(f"an incremental sync of one edit wrote {stats}")
        times[0 if baseline else 1].append(seconds)
        if not baseline:
            delivered[0] += SUBSCRIPTIONS
            if not await bench.receiver.wait_healthy(delivered[0], timeout=60):
                raise RuntimeError("an incremental sync's deliveries did not arrive")
            await wait_recorded(bench.ctx, [chg], delivered[0], timeout=60)
    return times


# --- the scenario --------------------------------------------------------------------------------------


async def scenario(bench: Bench) -> None:
    args = bench.args
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_serve_fakes, args=(theirs, args.changes_events), daemon=True)
    child.start()
    saved_env = dict(bench.stack.extra_env)
    try:
        fakes = await asyncio.get_running_loop().run_in_executor(None, ours.recv)
        bench.stack.extra_env.update(fakes["env"])
        # A connection per control call: a kept-alive one the fake's server had closed failed an edit once.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            result = await _run(bench, http, fakes)
        bench.report["g_changes"] = result
    finally:
        bench.stack.extra_env.clear()
        bench.stack.extra_env.update(saved_env)
        ours.send("stop")
        child.join(timeout=10)
        if child.is_alive():
            child.terminate()


async def _run(bench: Bench, http: aiohttp.ClientSession, fakes: dict[str, Any]) -> dict[str, Any]:
    ctx, events = bench.ctx, bench.args.changes_events
    began = time.perf_counter()
    base_account, chg_account = ACCOUNTS
    base = await _workspace(ctx, "changes-base", base_account, fakes["tokens"][base_account])
    base2 = await _workspace(ctx, "changes-base2", base_account, fakes["tokens"][base_account])
    chg = await _workspace(ctx, "changes", chg_account, fakes["tokens"][chg_account])
    tenant = Tenant(chg)
    for index in range(SUBSCRIPTIONS):
        path = f"/ok/changes/{index}"
        sub = await make_subscription(ctx, chg, url=bench.stack.receiver_url + path, event_types=("calendar.event.*",))
        tenant.paths[sub.id] = path
        tenant.secrets[path] = sub.secret

    def expect_import(stats: dict[str, Any]) -> None:
        if stats.get("events_created") != events:
            raise RuntimeError(f"the import created {stats.get('events_created')} of {events} events")

    # The baseline's import before and after the real one (the machine's speed drifts), each kind of worker
    # alone; then both kinds, each on its own queue, for incremental rounds alternating one by one.
    _start_baseline_workers(bench)
    base_import, stats = await _sync(ctx, base, baseline=True, poll=0.05)
    expect_import(stats)
    bench._stop_workers("g")
    await bench.receiver.reset()
    bench.stack.start_workers()
    started = time.time()
    chg_import, stats = await _sync(ctx, chg, baseline=False, poll=0.05)
    expect_import(stats)
    expected = events * SUBSCRIPTIONS
    complete = await bench.receiver.wait_healthy(expected, timeout=max(180, expected / 200))
    rows = await bench.receiver.rows()
    first = min((r[2] for r in rows), default=started)
    last = max((r[2] for r in rows), default=started)
    rate = (len(rows) - 1) / max(last - first, 1e-6)
    recorded_at = await wait_recorded(ctx, [chg], expected, timeout=60)
    checks = await check(ctx, bench.receiver, [tenant], rows)
    _start_baseline_workers(bench)
    base_import2, stats = await _sync(ctx, base2, baseline=True, poll=0.05)
    expect_import(stats)
    base_inc, chg_inc = await _incremental_rounds(bench, http, fakes, base, chg, [expected])
    peaks = bench._stop_workers("g")

    baseline_import = statistics.mean([base_import, base_import2])
    result = {
        "events": events,
        "subscriptions": SUBSCRIPTIONS,
        "import": {
            "baseline_seconds": [base_import, base_import2],
            "seconds": chg_import,
            "ratio": chg_import / baseline_import,
        },
        "deliveries": {
            "deliveries": expected,
            "received": len(rows),
            "complete": complete,
            "seconds_to_receipt": last - started,
            "seconds_to_recorded": (recorded_at - started) if recorded_at else None,
            "rate": rate,
            "ratio": rate / bench.raw,
            "checks": checks,
        },
        "incremental": {
            "baseline_ms": [t * 1000 for t in base_inc],
            "ms": [t * 1000 for t in chg_inc],
            "ratio": statistics.median(chg_inc) / statistics.median(base_inc),
            "ratio_of_lower_quartiles": _quartile(chg_inc) / _quartile(base_inc),
        },
        "worker_peak_rss_mib": peaks,
        "seconds": time.perf_counter() - began,
    }
    _print(bench, result)
    return result


def _quartile(values: list[float]) -> float:
    return statistics.quantiles(values, n=4)[0] if len(values) >= 2 else values[0]


def _print(bench: Bench, r: dict[str, Any]) -> None:
    imp, dl, inc, c = r["import"], r["deliveries"], r["incremental"], r["deliveries"]["checks"]
    bench.line(
        f"(g) import of {r['events']:,} events  {imp['seconds']:.2f} s with change events and {r['subscriptions']} "
        f"subscriptions vs {statistics.mean(imp['baseline_seconds']):.2f} s baseline "
        f"({' / '.join(f'{s:.2f}' for s in imp['baseline_seconds'])}) = {imp['ratio']:.2f} x"
    )
    bench.line(
        f"(g) its deliveries  {dl['rate']:8.0f} deliveries/s = {dl['ratio']:.2f} x raw  [{dl['received']}/"
        f"{dl['deliveries']} received, recorded {dl['seconds_to_recorded'] or float('nan'):.1f}s after the job "
        f"was queued; {c['signatures_verified']} signatures verified, {c['unrecorded']} unrecorded, "
        f"{c['duplicates']} duplicates: {'OK' if c['ok'] and dl['complete'] else 'FAILED'}]"
    )
    bench.line(
        f"(g) incremental, 1 change of {r['events']:,}  median {statistics.median(inc['ms']):.1f} ms vs "
        f"{statistics.median(inc['baseline_ms']):.1f} ms baseline = {inc['ratio']:.2f} x  "
        f"(lower quartiles: {inc['ratio_of_lower_quartiles']:.2f} x)  [{len(inc['ms'])} rounds each, alternating]  "
        f"(g) took {r['seconds']:.0f} s"
    )


def verdict(r: dict[str, Any]) -> list[str]:
    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    imp, dl, inc = r["import"]["ratio"], r["deliveries"], r["incremental"]["ratio"]
    delivered = dl["ratio"] >= 0.5 and dl["checks"]["ok"] and dl["complete"]
    return [
        f"(g) import {imp:.2f} x baseline (target < {TARGET_IMPORT}): {mark(imp < TARGET_IMPORT)}",
        f"(g) deliveries {dl['ratio']:.2f} x raw, all recorded (target >= 0.5): {mark(delivered)}",
        f"(g) incremental {inc:.2f} x baseline (target <= {TARGET_INCREMENTAL}): {mark(inc <= TARGET_INCREMENTAL)}",
    ]
