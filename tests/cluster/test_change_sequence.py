"""Gap-free change sequences with two `synchook worker` OS processes syncing one workspace at once (CONTRACT §6).

One workspace, a Google and a Microsoft connection: full syncs of each provider are accepted together (they do
not overlap) and run on the two workers in parallel, pages interleaving; then edits, deletions and a second
pair. The workspace's change sequences must be 1..N without gap or repeat, each with its outbox event, and
the feed must end equal to the index.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from synchook.crypto import generate_master_key
from synchook.fakes import FakeProviders
from synchook.queue import EmbeddedRedis
from tests.support.cluster import Cluster, base_env
from tests.support.postgres import asyncpg_dsn
from tests.support.sync_harness import soon

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300), pytest.mark.xdist_group("heavy")]

EVENTS = 300
ACCOUNT = "seq@example.com"


@pytest.fixture
def cluster(database: str, fake: FakeProviders, tmp_path: Path) -> Iterator[Cluster]:
    with EmbeddedRedis() as redis:
        env = base_env(
            SYNCHOOK_DATABASE_URL=database,
            SYNCHOOK_REDIS_URL=redis.url,
            SYNCHOOK_SECRET_KEY=generate_master_key(),
            SYNCHOOK_LOG_FORMAT="json",
            SYNCHOOK_BACKGROUND_SYNC_INTERVAL="0",
            SYNCHOOK_SYNC_JOB_TIMEOUT="120",
            **fake.settings_env(),
        )
        with Cluster(env, workdir=tmp_path / "cluster") as running:
            yield running


async def fetch(database: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(database))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def settle(database: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + 180
    while True:
        rows = await fetch(database, "SELECT count(*) AS n FROM sync_jobs WHERE status IN ('queued', 'running')")
        if rows[0]["n"] == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"sync jobs did not finish\n{cluster.logs()}")
        await asyncio.sleep(0.2)


async def test_two_workers_syncing_one_workspace_number_changes_without_gaps(
    cluster: Cluster, database: str, fake: FakeProviders
) -> None:
    cluster.cli("migrate")
    workspace_id = cluster.create_workspace("seq")
    headers = {"Authorization": f"Bearer {cluster.create_key('seq', 'read:calendar,write:calendar')}"}
    ids: dict[str, list[str]] = {}
    for provider in ("google", "microsoft"):
        fake.add_account(provider, ACCOUNT)
        ids[provider] = fake.add_events(provider, ACCOUNT, ACCOUNT, EVENTS, first=soon())
    api = cluster.start_api("api-1")
    cluster.start_worker("worker-1")
    cluster.start_worker("worker-2")
    # Idle connections expire before uvicorn's 5 s keep-alive timeout (a reused closing connection: ReadError).
    async with httpx.AsyncClient(base_url=api.url, timeout=30, limits=httpx.Limits(keepalive_expiry=2.0)) as http:
        for provider in ("google", "microsoft"):
            acc = fake.account(provider, ACCOUNT)
            body = {
                "provider": provider,
                "account": ACCOUNT,
                "access_token": acc.access_token,
                "refresh_token": acc.refresh_token,
            }
            assert (await http.post("/v1/calendar/connections", headers=headers, json=body)).status_code == 201

        async def sync_both(mode: str) -> None:
            accepted = await asyncio.gather(
                *(
                    http.post("/v1/calendar/sync", headers=headers, json={"mode": mode, "provider": p})
                    for p in ("google", "microsoft")
                )
            )
            assert [r.status_code for r in accepted] == [202, 202], [r.text for r in accepted]
            await settle(database, cluster)

        await sync_both("full")
        for provider, events in ids.items():
            for n, event_id in enumerate(events[:100]):
                if n % 3 == 0:
                    fake.delete_event(provider, ACCOUNT, ACCOUNT, event_id)
                else:
                    fake.put_event(provider, ACCOUNT, ACCOUNT, event_id, summary=f"Edited {n}")
        await sync_both("incremental")
        await sync_both("full")  # nothing changed since: no change at all

        jobs = await fetch(database, "SELECT status FROM sync_jobs WHERE workspace_id = $1", workspace_id)
        assert {r["status"] for r in jobs} == {"completed"}, [dict(r) for r in jobs]
        changes = await fetch(
            database,
            "SELECT sequence, type, event FROM calendar_changes WHERE workspace_id = $1 ORDER BY sequence",
            workspace_id,
        )
        deleted = 2 * 34
        assert len(changes) == 2 * EVENTS + 2 * 100  # created, then 66 updated + 34 deleted per provider
        assert [r["sequence"] for r in changes] == list(range(1, len(changes) + 1))
        assert sum(r["type"] == "deleted" for r in changes) == deleted
        outbox = await fetch(
            database,
            "SELECT (data->>'sequence')::bigint AS sequence FROM events"
            " WHERE workspace_id = $1 AND type LIKE 'calendar.event.%' ORDER BY 1",
            workspace_id,
        )
        assert [r["sequence"] for r in outbox] == list(range(1, len(changes) + 1))
        # The feed, read to its end, ends equal to the index.
        mirror: dict[str, dict[str, object]] = {}
        after = 0
        while True:
            body = (
                await http.get("/v1/calendar/changes", headers=headers, params={"after": after, "limit": 1000})
            ).json()
            for change in body["data"]:
                if change["type"] == "deleted":
                    mirror.pop(change["event"]["id"], None)
                else:
                    mirror[change["event"]["id"]] = change["event"]
            after = body["next_after"]
            if not body["has_more"]:
                break
        indexed: dict[str, dict[str, object]] = {}
        cursor: str | None = None
        while True:
            params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/v1/calendar/events", headers=headers, params=params)).json()
            indexed.update({e["id"]: e for e in page["data"]})
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert mirror == indexed and len(indexed) == 2 * (EVENTS - 34)
