"""An incremental CalDAV sync of a 1,000-event calendar with 1 change: time and requests made.

    python -m bench.bench_caldav [--events N]

A real Radicale (tests/support/radicale.py) holds the calendar; a fresh, migrated SQLite database
receives the index. Prints the full sync (time), then the incremental round after one edited event:
its time end to end (run_sync: requests and index writes) and the CalDAV requests it made.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from sync_trigger import connections
from sync_trigger.connectors import CalDAVConnector, CalDAVCredentials
from sync_trigger.schemas import CalDAVConnectionBody
from synchook.auth.service import create_workspace
from synchook.context import AppContext
from synchook.crypto import generate_master_key
from synchook.providers import Provider
from synchook.root import migrate
from synchook.settings import Settings
from tests.support.radicale import CalDAVAccount, RadicaleServer, vevent, vevent_block
from tests.support.sync_harness import SyncHarness


def _ical(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


async def _allow(url: str) -> str:
    return url  # Radicale on loopback: as with SYNCHOOK_ALLOW_PRIVATE_TARGETS=true


async def _bench(url: str, dav: CalDAVAccount, events: int) -> None:
    settings = Settings.model_validate(
        {"database_url": url, "secret_key": generate_master_key(), "allow_private_targets": True}
    )
    ctx = await AppContext.open(settings, connect_redis=False)
    try:
        async with ctx.db.session() as session:
            workspace = await create_workspace(session, name="bench")
        harness = SyncHarness(ctx, None, workspace.id)  # type: ignore[arg-type]
        body = CalDAVConnectionBody(
            provider=Provider.CALDAV, account=dav.username, server_url=dav.url, username=dav.username,
            password=dav.password,
        )  # fmt: skip
        async with ctx.db.session() as session:
            await connections.create_connection(session, box=ctx.box, workspace_id=workspace.id, body=body)
        started = time.perf_counter()
        stats = await harness.run()
        print(f"caldav: full sync of {stats.events_created} events in {time.perf_counter() - started:.2f} s")

        first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=7)
        dav.put_event("work", "e7", vevent("e7", "Event 7 (edited)", _ical(first), _ical(first + timedelta(hours=1))))
        # The protocol side alone first, from the stored cursor (nothing stored): its requests and time.
        calendar = next(iter((await harness.calendars()).values()))
        async with aiohttp.ClientSession() as http:
            connector = CalDAVConnector(http, CalDAVCredentials(dav.url, dav.username, dav.password), _allow)
            started = time.perf_counter()
            changed = [c async for page in connector.changes(calendar.calendar_id, cursor=calendar.sync_cursor)
                       for c in page.changes]  # fmt: skip
            protocol = time.perf_counter() - started
        # Then end to end (run_sync: the same requests plus the index write).
        started = time.perf_counter()
        stats = await harness.run()
        elapsed = time.perf_counter() - started
        if len(changed) != 1 or (stats.events_created, stats.events_updated, stats.events_deleted) != (0, 1, 0):
            raise SystemExit(f"caldav: expected one update, got {stats} / {len(changed)} changes")
        print(
            f"caldav: incremental sync of a {events}-event calendar with 1 change: {elapsed * 1000:.0f} ms end to end, "
            f"{protocol * 1000:.0f} ms of it CalDAV, {connector.requests} requests",
            flush=True,
        )
    finally:
        await ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RadicaleServer(Path(tmp) / "radicale") as server:
        dav = server.account("bench")
        first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        blocks = [
            vevent_block(
                f"e{n}", f"Event {n}", _ical(first + timedelta(hours=n)), _ical(first + timedelta(hours=n + 1))
            )
            for n in range(args.events)
        ]
        dav.put_calendar("work", blocks)
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        migrate.upgrade(url)
        asyncio.run(_bench(url, dav, args.events))


if __name__ == "__main__":
    main()
