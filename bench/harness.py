"""`make bench`: the real stack end to end, every throughput as a ratio to the machine's raw limit.

    python -m bench [--db sqlite|postgres] [--workers N] [--backlog N] [--only a,dev,b,c,d,g,i,e] [--label TEXT]

Starts redis-server, the bench receiver, `synchook api` and N x `synchook worker` as separate
processes on a fresh database (SQLite in a temporary directory, or a new database on the PostgreSQL
server of SYNCHOOK_BENCH_POSTGRES_URL / SYNCHOOK_TEST_POSTGRES_URL), then runs the scenarios:

  raw  an aiohttp client posting signed payloads to the receiver at concurrency 64 (start and end)
  (a)  sustained throughput: 100 subscriptions x many events
  (a-dev) the same through `synchook dev` alone (what `make run` starts): bench/dev_run.py
  (b)  commit -> receipt latency p50/p99 at steady offered loads (500 events/s is the target)
  (c)  backlog drain rate: a large pending backlog (bulk SQL) vs a 10k one (drained before and after)
  (d)  isolation: one hanging endpoint among healthy ones vs no failure (alternating rounds)
  (e)  API routes, requests/s and p99 over many workspaces, as a ratio to a bare starlette endpoint
  (f)  peak RSS (VmHWM) of every worker, in each scenario (workers restart per scenario)
  (g)  change events at scale: a 10,000-event first import with 10 subscriptions to calendar.event.*
       and its 100,000 deliveries, and a 1-change incremental sync, against a baseline (bench/bench_changes.py)
  (i)  cost growth with 10 / 1,000 / 100,000 subscriptions and 1 / 100 / 10,000 workspaces: bench/growth.py

Each delivery scenario checks that every delivery the receiver counted (by path and webhook-id) has
a 2xx attempt row and that a sample of >= 1,000 signatures verifies with webhooks.verify.
Prints one line per scenario and writes bench/results/<time>-<db>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa

from bench import api_load, bare_api, bench_changes, dev_run, growth, raw
from bench.backlog import insert_backlog
from bench.driver import ReceiverClient, Tenant, check, make_tenant, publish, wait_recorded
from bench.stack import Stack, bench_database, cpu_seconds, stop_on_sigterm_as_on_ctrl_c
from subscriptions.models import Subscription, SubscriptionStatus
from synchook.context import AppContext
from synchook.queue import free_port
from synchook.root import migrate
from synchook.settings import Settings
from webhooks.delivery.schedule import schedule_deliveries

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"throughput": 0.5, "latency_p99_ms": 50.0, "backlog": 0.9, "isolation": 0.9, "rss_mib": 200.0}
WHOLE_RUN_SECONDS = 600
ALL_SCENARIOS = ("a", "dev", "b", "c", "d", "g", "i", "e")
# Issue 22 raised (a): at least this much of the raw limit, by database.
THROUGHPUT_BY_DB = {"sqlite": 0.55, "postgres": 0.6}
# (b)'s loads with a p99 target: 500 events/s on both databases, 2,000/s on PostgreSQL (issue 22).
LATENCY_TARGET_LOADS = {"sqlite": (500,), "postgres": (500, 2000)}


def _why(checks: dict[str, Any]) -> str:
    errors = checks.get("healthy_failed_attempts") or {}
    return f" (healthy endpoints' failed attempts: {errors})" if errors else ""


def _postgres_cpu() -> float:
    """CPU seconds so far of this machine's PostgreSQL server processes (0 where there is none).

    A backend that exits between two readings takes its seconds with it: the pools keep theirs open, so the
    difference over a load point is close, and low rather than high."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            if stat.read_text().strip() == "postgres":
                total += cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return total


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class Bench:
    def __init__(self, args: argparse.Namespace, stack: Stack, ctx: AppContext, http: aiohttp.ClientSession) -> None:
        self.args = args
        self.stack = stack
        self.ctx = ctx
        self.receiver = ReceiverClient(http, stack.receiver_url)
        self.report: dict[str, Any] = {}
        self.raw_rates: list[float] = []
        self.engine_client_rates: list[float] = []  # beside the yardstick: see bench/raw.py
        self._latency_done = 0  # deliveries of the latency tenant recorded so far

    @property
    def raw(self) -> float:
        return statistics.mean(self.raw_rates)

    def _stop_workers(self, scenario: str) -> list[float]:
        peaks = self.stack.worker_peaks()
        self.stack.stop_workers()
        known = self.report.setdefault("worker_peaks", {}).setdefault(scenario, [])
        known.extend(peaks)
        return peaks

    def line(self, text: str) -> None:
        print(text, flush=True)

    # --- raw limit -----------------------------------------------------------------------------------

    async def raw_limit(self) -> None:
        rate = await raw.raw_limit(self.stack.receiver_url, requests=self.args.raw_requests)
        self.raw_rates.append(rate)
        engine = await raw.engine_client_limit(self.stack.receiver_url, requests=self.args.raw_requests)
        self.engine_client_rates.append(engine)
        self.line(
            f"raw    {rate:8.0f} signed POSTs/s (aiohttp client, concurrency 64, no queue, no DB); "
            f"{engine:.0f}/s from the engine's own client"
        )

    # --- (a) ------------------------------------------------------------------------------------------

    async def throughput(self) -> None:
        subs, events = 100, self.args.events
        tenant = await make_tenant(self.ctx, self.stack.receiver_url, "tput", healthy=subs)
        await self.receiver.reset()
        self.stack.start_workers()
        started = time.time()
        for _ in range(0, events, 20):
            await publish(self.ctx, tenant.workspace_id, 20)
        result = await self._finish("a", [tenant], events * subs, started, timeout=max(120, events * subs / 300))
        self.report["a_throughput"] = result
        self._print_delivery("(a) throughput", result, f"{events} events x {subs} subscriptions")

    async def _finish(
        self,
        scenario: str,
        tenants: list[Tenant],
        expected: int,
        started: float,
        *,
        timeout: float,
        keep_workers: bool = False,
        cpu_before: float = 0.0,
    ) -> dict[str, Any]:
        """Wait for the run's deliveries, check them, and measure it; the workers stop unless ``keep_workers``
        (then the CPU they used since ``cpu_before`` is the run's, and their peak RSS is so far)."""
        complete = await self.receiver.wait_healthy(expected, timeout=timeout)
        rows = [r for r in await self.receiver.rows() if not r[0].startswith("/hang/")]
        last = max((r[2] for r in rows), default=time.time())
        first = min((r[2] for r in rows), default=started)
        # Sustained rate: first to last receipt (the pipeline's fill time is in seconds_to_receipt).
        rate = (len(rows) - 1) / max(last - first, 1e-6)
        recorded_at = await wait_recorded(self.ctx, [t.workspace_id for t in tenants], expected, timeout=60)
        checks = await check(self.ctx, self.receiver, tenants, rows)
        cpu = self.stack.worker_cpu() - cpu_before
        peaks = self.stack.worker_peaks() if keep_workers else self._stop_workers(scenario)
        return {
            "deliveries": expected,
            "received": len(rows),
            "complete": complete,
            "seconds_to_receipt": last - started,
            "seconds_to_recorded": (recorded_at - started) if recorded_at else None,
            "rate": rate,
            "ratio": rate / self.raw,
            "checks": checks,
            "worker_peak_rss_mib": peaks,
            "worker_cpu_us_per_delivery": cpu / max(len(rows), 1) * 1e6,
        }

    def _print_delivery(self, name: str, r: dict[str, Any], what: str) -> None:
        c = r["checks"]
        self.line(
            f"{name:<16}{r['rate']:8.0f} deliveries/s = {r['ratio']:.2f} x raw  [{what}; "
            f"{r['received']}/{r['deliveries']} received, recorded in {r['seconds_to_recorded'] or float('nan'):.1f}s; "
            f"{c['signatures_verified']} signatures verified, {c['unrecorded']} unrecorded, "
            f"{c['duplicates']} duplicates{_why(c)}: {'OK' if c['ok'] and r['complete'] else 'FAILED'}]  "
            f"worker peak RSS {max(r['worker_peak_rss_mib'], default=0):.0f} MiB, "
            f"CPU {r.get('worker_cpu_us_per_delivery', float('nan')):.0f} us per delivery"
        )

    # --- (b) ------------------------------------------------------------------------------------------

    async def latency(self) -> None:
        tenant = await make_tenant(self.ctx, self.stack.receiver_url, "latency", healthy=1)
        self.stack.start_workers()
        points = []
        for load in self.args.loads:
            points.append(await self._latency_at(tenant, load, self.args.latency_seconds))
        peaks = self._stop_workers("b")
        self.report["b_latency"] = {"points": points, "worker_peak_rss_mib": peaks}
        for p in points:
            mark = " <- target" if p["offered"] == 500 else ""
            cpu = "  ".join(f"{k} {v:.0f}" for k, v in p["cpu_us_per_event"].items() if v)
            self.line(
                f"(b) latency @{p['offered']:>5}/s  p50 {p['p50_ms']:6.1f} ms  p99 {p['p99_ms']:6.1f} ms  "
                f"achieved {p['achieved']:6.0f}/s  [{p['received']}/{p['events']} received, "
                f"{'OK' if p['checks']['ok'] else 'FAILED'}; CPU us/event: {cpu}]{mark}"
            )
        self.line(f"(b) worker peak RSS {max(peaks, default=0):.0f} MiB")

    async def _latency_at(self, tenant: Tenant, load: int, seconds: float) -> dict[str, Any]:
        await self.receiver.reset()
        total = int(load * seconds)
        committed: dict[str, float] = {}
        sent = 0
        cpu_before = self._cpu_split()
        start = time.perf_counter()
        while sent < total:
            due = min(total, int((time.perf_counter() - start) * load) + 1)
            if due > sent:
                ids, at = await publish(self.ctx, tenant.workspace_id, due - sent)
                committed.update(dict.fromkeys(ids, at))
                sent = due
            await asyncio.sleep(0.005)
        await self.receiver.wait_healthy(total, timeout=60)
        cpu = {k: (v - cpu_before[k]) / total * 1e6 for k, v in self._cpu_split().items()}
        rows = await self.receiver.rows()
        latencies = [at - committed[msg_id] for _, msg_id, at in rows if msg_id in committed]
        first = min(committed.values())
        last = max((at for *_, at in rows), default=first)
        await wait_recorded(self.ctx, [tenant.workspace_id], self._latency_done + total, timeout=60)
        self._latency_done += total
        checks = await check(self.ctx, self.receiver, [tenant], rows)
        return {
            "offered": load,
            "events": total,
            "received": len(latencies),
            "achieved": len(latencies) / max(last - first, 1e-6),
            "p50_ms": _pct(latencies, 0.50) * 1000 if latencies else float("nan"),
            "p99_ms": _pct(latencies, 0.99) * 1000 if latencies else float("nan"),
            "max_ms": max(latencies) * 1000 if latencies else float("nan"),
            "checks": checks,
            "cpu_us_per_event": cpu,
        }

    def _cpu_split(self) -> dict[str, float]:
        """CPU seconds so far of the workers, the receiver, this process (the producer) and PostgreSQL."""
        return {
            "workers": self.stack.worker_cpu(),
            "receiver": self.stack.receiver_cpu(),
            "producer": time.process_time(),
            # On SQLite no PostgreSQL serves the bench: a server on the machine for something else is not counted.
            "postgres": _postgres_cpu() if self.args.db == "postgres" else 0.0,
        }

    # --- (c) ------------------------------------------------------------------------------------------

    async def backlog(self) -> None:
        # The 10k reference drain lasts ~2 s, so one burst of load elsewhere on the machine moves it a
        # lot: it is measured before and after the large drain, and the ratio uses their mean.
        small = await self._drain(10_000, "backlog10k")
        large = await self._drain(self.args.backlog, "backlogN")
        small_after = await self._drain(10_000, "backlog10k2")
        reference = statistics.mean([small["drain_rate"], small_after["drain_rate"]])
        ratio = large["drain_rate"] / reference
        self.report["c_backlog"] = {"small": small, "large": large, "small_after": small_after, "ratio_to_10k": ratio}
        for r in (small, large, small_after):
            c = r["checks"]
            self.line(
                f"(c) backlog {r['deliveries']:>8,}  {r['drain_rate']:8.0f} deliveries/s = {r['ratio']:.2f} x raw  "
                f"[insert {r['insert_seconds']:.1f}s, drained in {r['drain_seconds']:.1f}s; "
                f"{c['signatures_verified']} verified, {c['unrecorded']} unrecorded, {c['duplicates']} duplicates: "
                f"{'OK' if c['ok'] and r['complete'] else 'FAILED'}]  "
                f"worker peak RSS {max(r['worker_peak_rss_mib'], default=0):.0f} MiB"
            )
        self.line(f"(c) backlog {self.args.backlog:,} drains at {ratio:.2f} x the 10k rate")

    async def _drain(self, count: int, name: str) -> dict[str, Any]:
        subs = 100
        tenant = await make_tenant(self.ctx, self.stack.receiver_url, name, healthy=subs)
        started = time.perf_counter()
        ids = await insert_backlog(self.ctx, tenant, count)
        insert_seconds = time.perf_counter() - started
        await schedule_deliveries(self.ctx, ids)
        await self.receiver.reset()
        self.stack.start_workers()
        complete = await self.receiver.wait_healthy(count, timeout=max(120, count / 200))
        rows = await self.receiver.rows()
        first = min(r[2] for r in rows)
        last = max(r[2] for r in rows)
        await wait_recorded(self.ctx, [tenant.workspace_id], count, timeout=60)
        checks = await check(self.ctx, self.receiver, [tenant], rows)
        peaks = self._stop_workers("c")
        rate = (len(rows) - 1) / max(last - first, 1e-6)
        return {
            "deliveries": count,
            "received": len(rows),
            "complete": complete,
            "insert_seconds": insert_seconds,
            "drain_seconds": last - first,
            "drain_rate": rate,
            "ratio": rate / self.raw,
            "checks": checks,
            "worker_peak_rss_mib": peaks,
        }

    # --- (d) ------------------------------------------------------------------------------------------

    async def isolation(self) -> None:
        # The machine's speed drifts by up to 2x within a minute: the two cases alternate
        # (--isolation-rounds pairs, fresh tenants each) and the ratio compares means. Runs of 1,000
        # events (~2.5 s) gave pair ratios of 0.84 and 0.95 in one run; 2,500 events last ~7-8 s each.
        events = self.args.isolation_events
        results: dict[str, list[dict[str, Any]]] = {"no_failure": [], "one_hanging": []}
        for round_ in range(self.args.isolation_rounds):
            calm = await make_tenant(self.ctx, self.stack.receiver_url, f"calm{round_}", healthy=10)
            storm = await make_tenant(self.ctx, self.stack.receiver_url, f"storm{round_}", healthy=9, hanging=1)
            for name, tenant, expected in (("no_failure", calm, events * 10), ("one_hanging", storm, events * 9)):
                await self.receiver.reset()
                self.stack.start_workers()
                started = time.time()
                for _ in range(0, events, 20):
                    await publish(self.ctx, tenant.workspace_id, 20)
                result = await self._finish("d", [tenant], expected, started, timeout=max(120, expected / 100))
                results[name].append(result)
            await _disable_hanging(self.ctx, storm)
            self._print_delivery("(d) no failure", results["no_failure"][-1], f"{events} events x 10 healthy")
            self._print_delivery(
                "(d) one hanging", results["one_hanging"][-1], f"{events} events x 9 healthy + 1 hanging"
            )
        calm_rate = statistics.mean(r["rate"] for r in results["no_failure"])
        storm_rate = statistics.mean(r["rate"] for r in results["one_hanging"])
        ratio = storm_rate / calm_rate
        self.report["d_isolation"] = {**results, "healthy_ratio": ratio}
        self.line(
            f"(d) healthy endpoints keep {ratio:.2f} x their no-failure throughput "
            f"(means of {self.args.isolation_rounds} alternating rounds: {storm_rate:.0f} vs {calm_rate:.0f}/s)"
        )

    # --- (e) ------------------------------------------------------------------------------------------

    async def api(self) -> None:
        self.stack.start_workers()
        env = {**self.stack.env()}
        with bare_api.running(env, free_port(), self.stack.run_dir / "bare_api.log") as bare_url:
            result = await api_load.api_scenario(
                self.ctx, self.stack.api_url, bare_url, self.stack.receiver_url, seconds=self.args.api_seconds
            )
        result["worker_peak_rss_mib"] = self._stop_workers("e")
        self.report["e_api"] = result
        bare = result["bare"]
        self.line(
            f"(e) bare starlette + 1 SELECT {bare['rps']:7.0f} req/s  (first {bare['first']['rps']:.0f}, "
            f"last {bare['last']['rps']:.0f}; 1 uvicorn process, as `synchook api`)"
        )
        for key, (name, target) in api_load.ROUTES.items():
            r = result[key]
            self.line(
                f"(e) {name:<42}{r['rps']:7.0f} req/s = {r['ratio']:.2f} x bare (target >= {target})  "
                f"p50 {r['p50_ms'] or float('nan'):5.1f} ms  p99 {r['p99_ms'] or float('nan'):5.1f} ms  "
                f"[{result['workspaces']} workspaces, concurrency {result['concurrency']}, {r['errors']} errors]"
            )


async def _disable_hanging(ctx: AppContext, tenant: Tenant) -> None:
    """Stop the hanging endpoint's retries so they do not run on into later scenarios."""
    hanging = [sub for sub, path in tenant.paths.items() if path.startswith("/hang/")]
    async with ctx.db.session() as session:
        await session.execute(
            sa.update(Subscription.__table__)  # type: ignore[attr-defined]
            .where(Subscription.__table__.c.id.in_(hanging))  # type: ignore[attr-defined]
            .values(status=SubscriptionStatus.DISABLED, disabled_reason="bench: isolation scenario over")
        )


# --- the run -----------------------------------------------------------------------------------------


async def _run(args: argparse.Namespace, database_url: str, run_dir: Path) -> dict[str, Any]:
    stack = Stack(database_url=database_url, workers=args.workers, run_dir=run_dir)
    try:
        stack.start()  # inside: stopped while it starts, what had started is stopped
        os.environ.update({k: v for k, v in stack.env().items() if k.startswith("SYNCHOOK_")})
        settings = Settings()
        ctx = await AppContext.open(settings)
        try:
            async with aiohttp.ClientSession() as http:
                bench = Bench(args, stack, ctx, http)
                await bench.raw_limit()
                steps: dict[str, Callable[[], Awaitable[None]]] = {
                    "a": bench.throughput,
                    "dev": partial(dev_run.dev_throughput, bench),
                    "i": partial(growth.growth, bench),
                    "b": bench.latency,
                    "c": bench.backlog,
                    "d": bench.isolation,
                    "e": bench.api,
                    "g": lambda: bench_changes.scenario(bench),
                }
                for key in args.only:
                    began = time.perf_counter()
                    await steps[key]()
                    took = time.perf_counter() - began
                    bench.report.setdefault("seconds_per_scenario", {})[key] = took
                    bench.line(f"bench: ({key}) took {took:.0f}s")
                await bench.raw_limit()
                bench.report["raw"] = {
                    "rates": bench.raw_rates,
                    "mean": bench.raw,
                    "concurrency": 64,
                    "engine_client_rates": bench.engine_client_rates,
                }
                return bench.report
        finally:
            await ctx.close()
    finally:
        stack.stop()


def _verdict(report: dict[str, Any], *, db: str) -> list[str]:
    lines = []
    peaks = [max(p or [0]) for p in report.get("worker_peaks", {}).values()]

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    engine_client = statistics.mean(report.get("raw", {}).get("engine_client_rates") or [math.nan])

    def beside(rate: float) -> str:
        return f" [{rate / engine_client:.2f} x the engine-client raw]"

    if "a_throughput" in report:
        r = report["a_throughput"]["ratio"]
        target = THROUGHPUT_BY_DB.get(db, TARGETS["throughput"])
        lines.append(
            f"(a) {r:.2f} x raw (target >= {target} on {db}): {mark(r >= target)}"
            + beside(report["a_throughput"]["rate"])
        )
    if "a_dev" in report:
        r = report["a_dev"]["ratio"]
        lines.append(
            f"(a-dev) {r:.2f} x raw (target >= {dev_run.TARGET}): {mark(r >= dev_run.TARGET)}"
            + beside(report["a_dev"]["rate"])
        )
    if "b_latency" in report:
        for point in report["b_latency"]["points"]:
            if point["offered"] in LATENCY_TARGET_LOADS.get(db, (500,)):
                p99, load = point["p99_ms"], point["offered"]
                ok = p99 < TARGETS["latency_p99_ms"]
                bound = f"target < {TARGETS['latency_p99_ms']:.0f}"
                lines.append(f"(b) p99 {p99:.1f} ms at {load} events/s ({bound}): {mark(ok)}")
    if "c_backlog" in report:
        r = report["c_backlog"]["ratio_to_10k"]
        n = report["c_backlog"]["large"]["deliveries"]
        lines.append(f"(c) {n:,} backlog at {r:.2f} x the 10k rate (target >= {TARGETS['backlog']}): {mark(r >= 0.9)}")
    if "d_isolation" in report:
        r = report["d_isolation"]["healthy_ratio"]
        lines.append(f"(d) healthy {r:.2f} x no-failure (target >= {TARGETS['isolation']}): {mark(r >= 0.9)}")
    if "g_changes" in report:
        lines.extend(bench_changes.verdict(report["g_changes"]))
    if "e_api" in report:
        for key, (name, target) in api_load.ROUTES.items():
            r = report["e_api"][key]["ratio"]
            lines.append(f"(e) {name} {r:.2f} x bare (target >= {target}): {mark(r >= target)}")
    if "i_growth" in report:
        for key in ("fan_out", "workspaces"):
            change = report["i_growth"].get(f"{key}_largest_to_smallest")
            if change is not None:
                ok = change >= 1 - growth.FLAT_WITHIN
                lines.append(f"(i) {key}: largest at {change:.2f} x the smallest (target >= 0.8): {mark(ok)}")
    if peaks:
        lines.append(f"(f) worker peak RSS {max(peaks):.0f} MiB (target < 200): {mark(max(peaks) < 200)}")
    return lines


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default=os.environ.get("SYNCHOOK_BENCH_DB", "sqlite"))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("SYNCHOOK_BENCH_WORKERS", "2")))
    parser.add_argument("--events", type=int, default=400, help="(a): events, each to 100 subscriptions")
    parser.add_argument("--loads", type=lambda s: [int(x) for x in s.split(",")], default=[100, 500, 1000, 2000])
    parser.add_argument("--latency-seconds", type=float, default=4.0)
    parser.add_argument("--backlog", type=int, default=1_000_000, help="(c): pending deliveries of the large backlog")
    parser.add_argument("--isolation-events", type=int, default=2500)
    parser.add_argument("--isolation-rounds", type=int, default=2, help="(d): alternating pairs of runs")
    parser.add_argument("--api-seconds", type=float, default=4.0, help="(e): seconds per route")
    parser.add_argument("--dev-bursts", type=int, default=2, help="(a-dev): bursts of 300 events x 100 subscriptions")
    # (i) and (e) sized so that the whole `make bench` (1,000,000-row backlog included) stays under 10 minutes here.
    parser.add_argument("--growth-deliveries", type=int, default=12_000, help="(i): deliveries per case")
    parser.add_argument("--growth-fanout", type=_ints, default=[10, 1_000, 100_000], help="(i): subscriptions")
    parser.add_argument("--growth-workspaces", type=_ints, default=[1, 100, 10_000], help="(i): workspaces")
    parser.add_argument("--raw-requests", type=int, default=20_000)
    parser.add_argument("--changes-events", type=int, default=10_000, help="(g): events of the imported calendar")
    parser.add_argument("--changes-rounds", type=int, default=16, help="(g): incremental rounds of each kind")
    parser.add_argument(
        # (e) last: the sync jobs its POSTs queue held the workers' job slots for minutes after it (a run of (i)
        # after (e) received 1,138 of 20,000 deliveries in 120 s).
        "--only",
        type=lambda s: [x.strip() for x in s.split(",")],
        default=list(ALL_SCENARIOS),
    )
    parser.add_argument("--label", default="", help="stored in the JSON report (e.g. before/after)")
    args = parser.parse_args(argv)

    run_dir = Path(tempfile.mkdtemp(prefix="synchook-bench-"))
    stop_on_sigterm_as_on_ctrl_c()
    began = time.perf_counter()
    with bench_database(args.db, run_dir, "synchook_bench") as database_url:
        migrate.upgrade(database_url)
        print(
            f"bench: {args.db}, {args.workers} worker(s), {os.cpu_count()} CPUs, Python {platform.python_version()}",
            flush=True,
        )
        try:
            import uvloop

            report = uvloop.run(_run(args, database_url, run_dir))
        except ImportError:
            report = asyncio.run(_run(args, database_url, run_dir))
    elapsed = time.perf_counter() - began
    verdict = _verdict(report, db=args.db)
    for line in verdict:
        print(line)
    # The whole of `make bench` (every scenario, no --only) should take under 10 minutes (issues 7 and 22).
    verdict_of_length = "met" if elapsed < WHOLE_RUN_SECONDS else "MISSED"
    whole = f" (target < {WHOLE_RUN_SECONDS} s): {verdict_of_length}" if set(args.only) >= set(ALL_SCENARIOS) else ""
    print(f"bench: done in {elapsed:.0f}s{whole}")
    full = {
        "label": args.label,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "db": args.db,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.platform(),
        "seconds": elapsed,
        "args": {k: v for k, v in vars(args).items()},
        "verdict": verdict,
        **report,
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = RESULTS / f"{stamp}-{args.db}{'-' + args.label if args.label else ''}.json"
    out.write_text(json.dumps(full, indent=2, default=str))
    shutil.copyfile(out, RESULTS / "latest.json")
    print(f"bench: report {out.relative_to(RESULTS.parent.parent)}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
