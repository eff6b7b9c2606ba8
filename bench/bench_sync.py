"""How long a full sync of a 5,000-event calendar (50 pages) takes, and how much memory it needs.

    python -m bench.bench_sync [--events N] [--page-size N] [--providers google,microsoft]

The fake Google and Graph servers (synchook/fakes/) run in a child process, so the figures
are the syncing process's alone. A fresh, migrated SQLite database receives the index. Prints one
line per provider with the time of its first (full) sync, the time of a no-change incremental
round, then one line with the peak RSS of this process (resource.getrusage).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from synchook import migrate
from synchook.auth.service import create_workspace
from synchook.context import AppContext
from synchook.crypto import generate_master_key
from synchook.fakes import FakeProviders
from synchook.settings import Settings
from tests.support.sync_harness import ALICE, SyncHarness


def _serve_fakes(pipe: Pipe, providers: list[str], events: int, page_size: int) -> None:
    fake = FakeProviders().start()
    # Start 80 days back, an hour apart: 5,000 events stay inside the default window (now-90 d .. now+180 d).
    first = (datetime.now(UTC) - timedelta(days=80)).replace(minute=0, second=0, microsecond=0)
    for provider in providers:
        fake.page_size[provider] = page_size
        fake.add_account(provider, ALICE)
        fake.add_events(provider, ALICE, ALICE, events, first=first)
    pipe.send({"endpoints": fake.endpoint_kwargs(), "accounts": {p: vars(fake.account(p)) for p in providers}})
    pipe.recv()
    pipe.send({p: len(fake.requests(p, "/events" if p == "google" else "/delta")) for p in providers})
    fake.stop()


class _FakeView:
    """Just enough of FakeProviders for SyncHarness.connect: the tokens of each account."""

    def __init__(self, accounts: dict[str, dict[str, Any]]) -> None:
        self._accounts = accounts

    def account(self, provider: str, account: str = ALICE) -> Any:
        return argparse.Namespace(**self._accounts[provider])


def _rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


async def _bench(url: str, endpoints: dict[str, str], accounts: dict[str, dict[str, Any]], events: int) -> None:
    settings = Settings.model_validate({"database_url": url, "secret_key": generate_master_key(), **endpoints})
    ctx = await AppContext.open(settings, connect_redis=False)
    try:
        async with ctx.db.session() as session:
            workspace = await create_workspace(session, name="bench")
        for provider in accounts:
            harness = SyncHarness(ctx, _FakeView(accounts), workspace.id)  # type: ignore[arg-type]
            await harness.connect(provider)
            started = time.perf_counter()
            stats = await harness.run(provider=provider)
            full = time.perf_counter() - started
            if stats.events_created != events:
                raise SystemExit(f"{provider}: expected {events} events, got {stats}")
            started = time.perf_counter()
            again = await harness.run(provider=provider)
            incremental = time.perf_counter() - started
            if again.events_created or again.events_updated or again.events_deleted:
                raise SystemExit(f"{provider}: a no-change round changed things: {again}")
            print(
                f"{provider}: full sync of {events} events in {full:.2f} s "
                f"({events / full:,.0f} events/s); no-change incremental in {incremental * 1000:.0f} ms",
                flush=True,
            )
    finally:
        await ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--providers", default="google,microsoft")
    args = parser.parse_args()
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_serve_fakes, args=(theirs, providers, args.events, args.page_size), daemon=True)
    child.start()
    try:
        ready = ours.recv()
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            migrate.upgrade(url)  # before the loop: alembic runs its own
            baseline = _rss_mib()
            asyncio.run(_bench(url, ready["endpoints"], ready["accounts"], args.events))
        ours.send("stop")
        pages = ours.recv()
        print(f"pages requested per provider: {pages}", flush=True)
        print(f"peak RSS: {_rss_mib():.1f} MiB (before syncing: {baseline:.1f} MiB)", flush=True)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.terminate()


if __name__ == "__main__":
    main()
