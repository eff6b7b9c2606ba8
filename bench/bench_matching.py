"""How long match_subscriptions takes with 100,000 subscriptions in the table.

    python -m bench.bench_matching [--subscriptions N] [--workspaces N] [--calls N]

Then a relay batch's matching: 20 workspaces matched one by one against ``match_workspaces`` once, CPU
per batch of each (the fan-out of (i)'s 10,000 workspaces).

Builds a fresh, migrated SQLite database (and a fresh PostgreSQL database on the server of
SYNCHOOK_TEST_POSTGRES_URL when that is set, dropped afterwards), bulk-inserts the subscriptions and
their filter rows spread over the workspaces, then times match_subscriptions over random
(workspace, event type, provider) triples and prints one summary line per database.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from subscriptions.catalogue import CATALOGUE
from subscriptions.matching import match_subscriptions, match_workspaces
from subscriptions.models import ANY, SignatureType, Subscription, SubscriptionFilter, SubscriptionStatus
from synchook.auth.models import Workspace
from synchook.crypto import SecretBox, generate_master_key
from synchook.db import Database
from synchook.ids import ulid
from synchook.providers import Provider
from synchook.root import migrate
from synchook.settings import parse_secret_keys
from synchook.timeutil import utcnow

PATTERN_CHOICES: list[list[str]] = [
    ["*"],
    ["calendar.sync.*"],
    ["calendar.*"],
    ["calendar.sync.completed"],
    ["calendar.sync.completed", "calendar.sync.failed"],
    ["calendar.sync.queued", "calendar.sync.started", "calendar.sync.completed", "calendar.sync.failed"],
    ["webhook.*"],
]
PROVIDER_CHOICES: list[list[str] | None] = [None, None, *([p.value] for p in Provider), [p.value for p in Provider]]
EVENT_TYPES = [t.name for t in CATALOGUE if t.name.startswith("calendar.")]
CHUNK = 5_000


def _rows(
    subscriptions: int, workspaces: list[str], rng: random.Random
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    box = SecretBox(parse_secret_keys(generate_master_key()))
    created = utcnow()
    subs: list[dict[str, Any]] = []
    filters: list[dict[str, Any]] = []
    base_ms = int(time.time() * 1000) - subscriptions
    for n in range(subscriptions):
        sub_id = f"sub_{ulid(base_ms + n)}"
        workspace_id = workspaces[n % len(workspaces)]
        patterns = rng.choice(PATTERN_CHOICES)
        providers = rng.choice(PROVIDER_CHOICES)
        deleted = rng.random() < 0.05
        subs.append(
            {
                "id": sub_id,
                "workspace_id": workspace_id,
                "url": f"https://hooks{n % 97}.example.com/{n}",
                "description": None,
                "event_types": patterns,
                "providers": providers,
                "status": SubscriptionStatus.DISABLED if rng.random() < 0.05 else SubscriptionStatus.ENABLED,
                "disabled_reason": None,
                "signature_type": SignatureType.HMAC_SHA256,
                "secret_sealed": box.seal("whsec_" + "A" * 43 + "=", context=sub_id),
                "public_key": None,
                "previous_secret_sealed": None,
                "previous_secret_expires_at": None,
                "rate_limit_per_second": None,
                "failing_since": None,
                "created_at": created,
                "updated_at": created,
                "deleted_at": created if deleted else None,
            }
        )
        if deleted:
            continue  # deleted subscriptions keep no filter rows, as in the service
        for pattern in patterns:
            for provider in providers or [ANY]:
                filters.append(
                    {
                        "subscription_id": sub_id,
                        "workspace_id": workspace_id,
                        "event_pattern": pattern,
                        "provider": provider,
                    }
                )
    return subs, filters


async def _populate(
    db: Database, *, subscriptions: int, workspace_count: int, rng: random.Random
) -> tuple[list[str], int, float]:
    started = time.perf_counter()
    workspaces = [f"ws_{ulid()}" for _ in range(workspace_count)]
    subs, filters = _rows(subscriptions, workspaces, rng)
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.insert(Workspace.__table__),  # type: ignore[attr-defined]
            [{"id": w, "name": f"bench-{i}", "created_at": utcnow()} for i, w in enumerate(workspaces)],
        )
        for i in range(0, len(subs), CHUNK):
            await conn.execute(sa.insert(Subscription.__table__), subs[i : i + CHUNK])  # type: ignore[attr-defined]
        for i in range(0, len(filters), CHUNK):
            await conn.execute(sa.insert(SubscriptionFilter.__table__), filters[i : i + CHUNK])  # type: ignore[attr-defined]
    async with db.engine.connect() as conn:
        await conn.execute(sa.text("ANALYZE"))
        await conn.commit()
    return workspaces, len(filters), time.perf_counter() - started


async def _time_matches(
    db: Database, workspaces: list[str], *, calls: int, rng: random.Random
) -> tuple[list[float], float]:
    timings: list[float] = []
    matched = 0
    async with db.sessions() as session:
        for _ in range(20):  # warm-up: connection, statement cache, page cache
            await match_subscriptions(
                session, workspace_id=workspaces[0], event_type=EVENT_TYPES[0], provider=Provider.GOOGLE
            )
        for _ in range(calls):
            workspace_id = rng.choice(workspaces)
            event_type = rng.choice(EVENT_TYPES)
            provider = rng.choice(list(Provider))
            started = time.perf_counter()
            found = await match_subscriptions(
                session, workspace_id=workspace_id, event_type=event_type, provider=provider
            )
            timings.append(time.perf_counter() - started)
            matched += len(found)
            session.expunge_all()
        await session.rollback()
    return timings, matched / calls


async def _time_batches(db: Database, workspaces: list[str], *, batches: int, rng: random.Random) -> str:
    """CPU per relay batch of 20 workspaces (one event type and provider): one statement each, or one in all."""
    cpu = {"one by one": 0.0, "match_workspaces": 0.0}
    async with db.sessions() as session:
        for _ in range(batches):
            batch = rng.sample(workspaces, min(20, len(workspaces)))
            event_type, provider = rng.choice(EVENT_TYPES), rng.choice(list(Provider))
            started = time.process_time()
            for workspace_id in batch:
                await match_subscriptions(
                    session, workspace_id=workspace_id, event_type=event_type, provider=provider, limit=1_001
                )
            cpu["one by one"] += time.process_time() - started
            started = time.process_time()
            await match_workspaces(session, workspace_ids=batch, event_type=event_type, provider=provider, limit=6_000)
            cpu["match_workspaces"] += time.process_time() - started
        await session.rollback()
    return ", ".join(f"{name} {seconds / batches * 1000:.2f} ms" for name, seconds in cpu.items())


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_one(name: str, url: str, *, subscriptions: int, workspaces: int, calls: int, seed: int) -> str:
    rng = random.Random(seed)
    await asyncio.to_thread(migrate.upgrade, url)  # alembic runs its own event loop
    db = Database(url)
    try:
        workspace_ids, filter_rows, load_seconds = await _populate(
            db, subscriptions=subscriptions, workspace_count=workspaces, rng=rng
        )
        timings, mean_matched = await _time_matches(db, workspace_ids, calls=calls, rng=rng)
        batches = await _time_batches(db, workspace_ids, batches=max(1, calls // 20), rng=rng)
    finally:
        await db.close()
    return (
        f"{name}: {subscriptions:,} subscriptions ({filter_rows:,} filter rows, {workspaces:,} workspaces, "
        f"loaded in {load_seconds:.1f}s); match_subscriptions x{calls}: "
        f"p50 {_percentile(timings, 0.50) * 1000:.3f} ms, p99 {_percentile(timings, 0.99) * 1000:.3f} ms, "
        f"mean {statistics.fmean(timings) * 1000:.3f} ms, {mean_matched:.1f} matches/call; "
        f"CPU per relay batch of 20 workspaces: {batches}"
    )


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--workspaces", type=int, default=1_000)
    parser.add_argument("--calls", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)
    options = {
        "subscriptions": args.subscriptions,
        "workspaces": args.workspaces,
        "calls": args.calls,
        "seed": args.seed,
    }

    with tempfile.TemporaryDirectory(prefix="synchook-bench-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        print(await run_one("sqlite", url, **options), flush=True)

    from tests.support.postgres import create_database, drop_database, postgres_url, unique_name

    base = postgres_url()
    if base is None:
        print("postgresql: skipped (set SYNCHOOK_TEST_POSTGRES_URL to include it)")
        return
    name = unique_name("synchook_bench")
    url = await create_database(base, name)
    try:
        print(await run_one("postgresql", url, **options), flush=True)
    finally:
        await drop_database(base, name)


if __name__ == "__main__":
    asyncio.run(main())
