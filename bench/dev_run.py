"""Scenario (a-dev): `synchook dev`, the one command `make run` starts, as the only thing delivering.

`synchook dev` runs as its own OS process (the stack's workers are stopped), on the bench's database
and Redis (``SYNCHOOK_DATABASE_URL`` / ``SYNCHOOK_REDIS_URL``: the same SQLite file kind and the same
redis-server binary that its embedded defaults would start, but reachable by the bench to publish and
check). 100 subscriptions; bursts of 300 events (20 per committed transaction, as (a)), each burst
published once the previous one is received. The rate is taken over each burst from its first to its
last receipt; it is stopped with SIGINT, as Ctrl-C stops `make run`. Peak RSS covers dev and every
process it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.driver import check, make_tenant, publish, wait_recorded
from bench.stack import SYNCHOOK, cpu_seconds, peak_rss_mib
from synchook.queue import free_port

if TYPE_CHECKING:
    from bench.harness import Bench

__all__ = ["TARGET", "dev_throughput"]

TARGET = 0.4
_BURST = 300
_PER_TRANSACTION = 20
_SUBSCRIPTIONS = 100


def _tree(pid: int) -> list[int]:
    """``pid`` and every live process below it (the worker processes `synchook dev` may start)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = {pid}, {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return sorted(found)


def _start(bench: Bench, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    env = bench.stack.env()
    env.pop("SYNCHOOK_PORT", None)
    with (workdir / "dev.log").open("ab") as log:
        proc = subprocess.Popen(
            [SYNCHOOK, "dev", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a foreground job's own process group: Ctrl-C reaches all of it
        )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"synchook dev did not start (see {workdir}/dev.log)")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
            break
        time.sleep(0.1)
    time.sleep(1.0)  # its worker polls the queue shortly after the API answers
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> int:
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does to `make run`
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


async def dev_throughput(bench: Bench) -> None:
    bursts = bench.args.dev_bursts
    tenant = await make_tenant(bench.ctx, bench.stack.receiver_url, "dev", healthy=_SUBSCRIPTIONS)
    await bench.receiver.reset()
    proc, _port = _start(bench, bench.stack.run_dir / "dev")
    peaks: dict[int, float] = {}
    burst_of: dict[str, int] = {}
    try:
        started = time.time()
        for burst in range(bursts):
            for _ in range(0, _BURST, _PER_TRANSACTION):
                ids, _at = await publish(bench.ctx, tenant.workspace_id, _PER_TRANSACTION)
                burst_of.update(dict.fromkeys(ids, burst))
            expected = (burst + 1) * _BURST * _SUBSCRIPTIONS
            complete = await bench.receiver.wait_healthy(expected, timeout=max(120, _BURST * _SUBSCRIPTIONS / 200))
            for pid in _tree(proc.pid):
                peaks[pid] = max(peaks.get(pid, 0.0), peak_rss_mib(pid) or 0.0)
            if not complete:
                break
        rows = [r for r in await bench.receiver.rows() if r[1] in burst_of]
        spans: list[tuple[float, float]] = []
        for burst in range(bursts):
            times = [r[2] for r in rows if burst_of[r[1]] == burst]
            if times:
                spans.append((min(times), max(times)))
        expected = bursts * _BURST * _SUBSCRIPTIONS
        recorded_at = await wait_recorded(bench.ctx, [tenant.workspace_id], expected, timeout=60)
        checks = await check(bench.ctx, bench.receiver, [tenant], rows)
        cpu = sum(cpu_seconds(pid) for pid in _tree(proc.pid))
    finally:
        code = _stop(proc)
    rate = (len(rows) - len(spans)) / max(sum(last - first for first, last in spans), 1e-6)
    result: dict[str, Any] = {
        "deliveries": expected,
        "received": len(rows),
        "complete": len(rows) >= expected,
        "seconds_to_receipt": max((s[1] for s in spans), default=started) - started,
        "seconds_to_recorded": (recorded_at - started) if recorded_at else None,
        "rate": rate,
        "ratio": rate / bench.raw,
        "checks": checks,
        "processes": len(peaks),
        "peak_rss_mib": peaks,
        "worker_peak_rss_mib": [max(peaks.values(), default=0.0)],
        "exit_code": code,
        # Every process of dev's (API, worker, not Redis: here the bench's own): the whole of its cost.
        "worker_cpu_us_per_delivery": cpu / max(len(rows), 1) * 1e6,
    }
    bench.report["a_dev"] = result
    bench._print_delivery(
        "(a-dev) synchook dev",
        result,
        f"{bursts} bursts of {_BURST} events x {_SUBSCRIPTIONS} subscriptions, {len(peaks)} process(es), exit {code}",
    )
