"""Scenario (g): calendar change events at scale (issue 19), on the running bench stack.

A fake Google account (synchook/fakes, in a child process) holds a 10,000-event calendar. Sync jobs are
queued as the API queues them and run on the stack's `synchook worker` processes; a job's time is its
row's `completed_at - started_at`.

- Import: the first (full) sync of the calendar into a workspace with 10 subscriptions to
  `calendar.event.*`, against the **baseline**: the same import into a workspace without subscriptions, on
  workers that write no change rows and no outbox events (`python -m bench.bench_changes baseline-worker`:
  `changes.write_changes` replaced by a count of the changes). The baseline still stores the normalised
  event with each index row and still tells created/updated/deleted apart, so it is the index as it was
  before change events, plus the §6.1 event. The baseline import runs before and after the measured one,
  and the ratio uses their mean (the machine's speed drifts).
- Deliveries: the 100,000 deliveries of that import (10,000 events x 10 subscriptions), from first to last
  receipt, as a ratio to the run's raw limit; every one recorded, a sample of signatures verified.
- Incremental: one event edited at the fake, then an incremental sync, in alternating blocks of rounds on
  baseline workers and on real workers (with the 10 subscriptions); the ratio of the medians.
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

from bench.driver import Tenant, check, wait_recorded
from sync_trigger import connections
from sync_trigger import service as sync_service
from sync_trigger.models import SyncJob
from sync_trigger.schemas import OAuthConnectionBody, TriggerSyncBody
from synchook.auth.service import create_workspace
from synchook.context import AppContext
from tests.factories.webhooks import make_subscription

if TYPE_CHECKING:
    from bench.harness import Bench

EVENTS = 10_000
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


# --- the baseline worker -------------------------------------------------------------------------------


def _baseline_worker() -> int:
    """`synchook worker` whose index writes no change rows and no outbox events (the scenario's baseline)."""
    from sync_trigger.calendar_index import changes
    from synchook.cli import main

    async def count_only(session: Any, *, pending: Any, **_: Any) -> changes.Written:
        written = changes.Written(event_ids=[])
        for change in pending:
            setattr(written, change.type, getattr(written, change.type) + 1)
        return written

    changes.write_changes = count_only
    return main(["worker"])


def _start_workers(bench: Bench, *, baseline: bool) -> None:
    if not baseline:
        bench.stack.start_workers()
        return
    # Stack.start_workers runs `synchook worker`; the baseline's differ only in their command.
    import redis

    from synchook.queue import QUEUE_NAME

    client = redis.Redis.from_url(bench.stack.redis.url)
    health_key = QUEUE_NAME + ":health-check"
    client.delete(health_key)
    for _ in range(bench.stack.workers):
        bench.stack.worker_procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.bench_changes", "baseline-worker"],
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
    ctx: AppContext, workspace_id: str, *, poll: float, timeout: float = 300
) -> tuple[float, dict[str, Any]]:
    """Queue an incremental sync as the API does, wait for it; (seconds from start to completion, stats)."""
    accepted = await sync_service.trigger_sync(
        ctx.db, workspace_id=workspace_id, body=TriggerSyncBody(), cap=10**9, enqueue=ctx.enqueue
    )
    job_id = accepted.data["job_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(poll)
        async with ctx.db.session() as session:
            row = (
                await session.execute(
                    sa.select(_jobs.c.status, _jobs.c.started_at, _jobs.c.completed_at, _jobs.c.stats, _jobs.c.error)
                    .where(_jobs.c.id == job_id)
                )
            ).one()  # fmt: skip
        status, started, completed, stats, error = row
        if status in ("completed", "failed"):
            if status == "failed":
                raise RuntimeError(f"sync job {job_id} failed: {error}")
            return (completed - started).total_seconds(), dict(stats or {})
    raise RuntimeError(f"sync job {job_id} did not finish in {timeout:.0f}s")


async def _edit(http: aiohttp.ClientSession, base_url: str, account: str, event_id: str, summary: str) -> None:
    url = f"{base_url}/_ctl/google/calendars/{account}/events/{event_id}"
    async with http.post(url, json={"summary": summary}) as response:
        response.raise_for_status()


async def _incremental_block(
    bench: Bench, http: aiohttp.ClientSession, fakes: dict[str, Any], workspace_id: str, account: str, rounds: int
) -> list[float]:
    times: list[float] = []
    for _ in range(rounds):
        event_id = fakes["ids"][account][len(times) % len(fakes["ids"][account])]
        await _edit(http, fakes["base_url"], account, event_id, f"Edited {time.time()}")
        seconds, stats = await _sync(bench.ctx, workspace_id, poll=0.02)
        if (stats.get("events_created"), stats.get("events_updated"), stats.get("events_deleted")) != (0, 1, 0):
            raise RuntimeError(f"an incremental sync of one edit wrote {stats}")
        times.append(seconds)
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
    ctx, events, rounds = bench.ctx, bench.args.changes_events, bench.args.changes_rounds
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

    # Baseline: import, then a block of incremental rounds.
    _start_workers(bench, baseline=True)
    base_import, stats = await _sync(ctx, base, poll=0.1)
    expect_import(stats)
    base_inc = await _incremental_block(bench, http, fakes, base, base_account, rounds)
    bench._stop_workers("g")

    # Change events with 10 subscriptions: import, its deliveries, then incremental rounds.
    await bench.receiver.reset()
    _start_workers(bench, baseline=False)
    started = time.time()
    chg_import, stats = await _sync(ctx, chg, poll=0.1)
    expect_import(stats)
    expected = events * SUBSCRIPTIONS
    complete = await bench.receiver.wait_healthy(expected, timeout=max(180, expected / 200))
    rows = await bench.receiver.rows()
    first = min((r[2] for r in rows), default=started)
    last = max((r[2] for r in rows), default=started)
    rate = (len(rows) - 1) / max(last - first, 1e-6)
    recorded_at = await wait_recorded(ctx, [chg], expected, timeout=60)
    checks = await check(ctx, bench.receiver, [tenant], rows)
    chg_inc = await _incremental_block(bench, http, fakes, chg, chg_account, rounds)
    bench._stop_workers("g")

    # Baseline again (the machine drifts): a second import, and a second block of rounds.
    _start_workers(bench, baseline=True)
    base_import2, stats = await _sync(ctx, base2, poll=0.1)
    expect_import(stats)
    base_inc += await _incremental_block(bench, http, fakes, base, base_account, rounds)
    bench._stop_workers("g")
    _start_workers(bench, baseline=False)
    chg_inc += await _incremental_block(bench, http, fakes, chg, chg_account, rounds)
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
        },
        "worker_peak_rss_mib": peaks,
    }
    _print(bench, result)
    return result


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
        f"[{len(inc['ms'])} rounds each, in alternating blocks]"
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


if __name__ == "__main__":
    if sys.argv[1:] == ["baseline-worker"]:
        sys.exit(_baseline_worker())
    sys.exit("usage: python -m bench.bench_changes baseline-worker (scenario (g) runs inside python -m bench)")
