"""Outcomes are written as each send finishes, not when its whole batch is done.

A worker killed (or a database lost) between a send and its record makes the receiver get that
delivery again: the fewer outcomes held only in memory, the fewer duplicates. One recorder per worker
process takes whatever outcomes have come in from all its batches and writes them in one transaction
(group commit), so a busy worker still writes few transactions; while the database is unreachable it
keeps retrying, and the outcomes land once it is back, unless another worker took the rows over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from synchook.context import AppContext
from synchook.db import is_connection_error
from synchook.timeutil import utcnow
from webhooks.attempts import Claimed, Plan, record_outcomes
from webhooks.sqlite_lock import write_lock

__all__ = ["Lease", "Recorder"]

logger = logging.getLogger(__name__)

# Outcomes that finish within this long of each other share a transaction.
GATHER_FOR = 0.005
_RETRY_FIRST, _RETRY_MAX = 0.1, 1.0


@dataclass
class Lease:
    """One claim on some deliveries: the row is ours while its ``lease_until`` is one of our ``tokens``.

    Every renewal adds a token before it is written, so a record racing a renewal matches either value.
    """

    tokens: list[datetime]
    ids: list[str]
    handed_in: set[str] = field(default_factory=set)  # outcome given to the recorder: no more renewals

    @property
    def current(self) -> datetime:
        return self.tokens[-1]

    def unrecorded(self) -> list[str]:
        return [i for i in self.ids if i not in self.handed_in]


@dataclass
class _Entry:
    lease: Lease
    claimed: list[Claimed]
    done: asyncio.Future[None]


class Recorder:
    """Writes outcomes for every batch of one worker; ``submit`` returns a future set once they are written."""

    def __init__(self, app: AppContext, after_commit: Callable[[Plan], Awaitable[None]]) -> None:
        self._app = app
        self._after_commit = after_commit
        self._entries: list[_Entry] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(self, lease: Lease, claimed: Sequence[Claimed]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not claimed:
            done.set_result(None)
            return done
        lease.handed_in.update(c.id for c in claimed)
        self._entries.append(_Entry(lease, list(claimed), done))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="webhooks.recorder")
        return done

    async def close(self) -> None:
        """Finish writing what was handed in, then stop."""
        pending = [entry.done for entry in self._entries]
        if self._task is not None and not self._task.done():
            await asyncio.gather(*pending, return_exceptions=True)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(GATHER_FOR)
            self._wake.clear()
            entries, self._entries = self._entries, []
            if entries:
                await self._flush(entries)

    async def _flush(self, entries: list[_Entry]) -> None:
        try:
            plan = await self._write(entries)
            await self._after_commit(plan)
        except Exception as exc:
            # Not written: the leases run out and the deliveries are sent again (a duplicate, never a loss).
            if is_connection_error(exc):
                logger.warning("gave up recording %d outcomes: %s", _count(entries), type(exc).__name__)
            else:
                logger.exception("could not record %d outcomes", _count(entries))
            for entry in entries:
                if not entry.done.done():
                    entry.done.set_exception(exc)
            return
        for entry in entries:
            if not entry.done.done():
                entry.done.set_result(None)

    async def _write(self, entries: list[_Entry]) -> Plan:
        """Record, retrying while the database is unreachable for as long as a lease lasts (twice over)."""
        settings = self._app.settings
        patience = time.monotonic() + 2 * settings.delivery_lease_seconds
        delay = _RETRY_FIRST
        waited = False
        while True:
            try:
                async with write_lock(self._app):
                    return await record_outcomes(
                        self._app.db,
                        [(entry.claimed, tuple(entry.lease.tokens)) for entry in entries],
                        schedule=tuple(settings.retry_schedule),
                        max_retry_after=settings.max_retry_after,
                        disable_after=settings.disable_after,
                        now=utcnow(),
                    )
            except Exception as exc:
                if not is_connection_error(exc) or time.monotonic() + delay > patience:
                    raise
                if not waited:
                    logger.warning(
                        "recording %d outcomes waits for the database: %s", _count(entries), type(exc).__name__
                    )
                    waited = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)


def _count(entries: list[_Entry]) -> int:
    return sum(len(entry.claimed) for entry in entries)
