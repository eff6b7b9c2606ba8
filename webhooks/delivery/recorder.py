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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from synchook.context import AppContext
from synchook.db import is_connection_error
from synchook.timeutil import utcnow
from webhooks.delivery.lease import Lease
from webhooks.delivery.record import all_succeeded, record_outcomes, record_successes, split_successes
from webhooks.delivery.schedule import schedule_recorded
from webhooks.delivery.stages import Recorded, Sent, Settled

__all__ = ["UNSTORABLE_ERROR", "Recorder"]

logger = logging.getLogger(__name__)

# Outcomes that finish within this long of each other share a transaction.
GATHER_FOR = 0.005
# Short: once the database is back, the outcome should land before anyone else takes the row over.
_RETRY_FIRST, _RETRY_MAX = 0.05, 0.25
# An attempt's error when what the receiver sent could not be stored even made storable (see _write).
UNSTORABLE_ERROR = "the receiver's response could not be stored"


@dataclass
class _Pending:
    outcomes: dict[Lease, list[Settled]] = field(default_factory=dict)
    waiters: list[asyncio.Future[Recorded]] = field(default_factory=list)

    def count(self) -> int:
        return sum(len(claimed) for claimed in self.outcomes.values())


class Recorder:
    """Writes outcomes for every batch of one worker, then schedules what they leave to do; ``submit``
    returns a future set (to what its flush recorded) once they are committed, or failed for good."""

    def __init__(self, app: AppContext) -> None:
        self._app = app
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(self, lease: Lease, settled: Sequence[Settled]) -> asyncio.Future[Recorded]:
        done: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        if not settled:
            done.set_result(Recorded({}, [], {}))
            return done
        self._pending.outcomes.setdefault(lease, []).extend(settled)
        self._pending.waiters.append(done)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="webhooks.recorder")
        return done

    async def close(self) -> None:
        """Finish writing what was handed in, then stop."""
        if self._task is not None and not self._task.done():
            await asyncio.gather(*self._pending.waiters, return_exceptions=True)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(GATHER_FOR)
            self._wake.clear()
            pending, self._pending = self._pending, _Pending()
            await self._flush(pending)

    async def _flush(self, pending: _Pending) -> None:
        try:
            recorded = await self._write(pending)
            await schedule_recorded(self._app, recorded)
        except Exception as exc:
            # Not written: the leases run out and the deliveries are sent again (a duplicate, never a loss).
            if is_connection_error(exc):
                logger.warning("gave up recording %d outcomes: %s", pending.count(), type(exc).__name__)
            else:
                logger.exception("could not record %d outcomes", pending.count())
            for waiter in pending.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for waiter in pending.waiters:
            if not waiter.done():
                waiter.set_result(recorded)

    async def _write(self, pending: _Pending) -> Recorded:
        """The flush's outcomes; on PostgreSQL its successes and the rest apart (``split_successes``), so that one
        failing endpoint does not take every other endpoint's successes off the one-statement record."""
        groups = list(pending.outcomes.items())
        units = split_successes(groups) if self._app.db.dialect == "postgresql" else (groups,)
        return Recorded.merge([await self._write_unit(unit) for unit in units if unit])

    async def _write_unit(self, groups: list[tuple[Lease, list[Settled]]]) -> Recorded:
        """One transaction for these outcomes; if the database refuses it (not unreachable: a value it cannot
        store), one per outcome, so a bad row fails only itself and never another tenant's outcomes."""
        try:
            return await self._write_groups(groups)
        except Exception as exc:
            if is_connection_error(exc):
                raise
            # Any other error: drivers do not agree on a class for "this value cannot be stored" (asyncpg gives a
            # bare DBAPIError with SQLSTATE 22xxx, sqlite3 a UnicodeEncodeError), and a rare error costs one
            # transaction per outcome, once.
            count = sum(len(settled) for _, settled in groups)
            logger.warning("recording %d outcomes failed (%s): one at a time", count, type(exc).__name__)
        return await self._write_one_by_one(groups)

    async def _write_one_by_one(self, groups: list[tuple[Lease, list[Settled]]]) -> Recorded:
        parts: list[Recorded] = []
        for lease, settled in groups:
            for one in settled:
                try:
                    part = await self._write_groups([(lease, [one])])
                except Exception as exc:
                    if is_connection_error(exc):
                        raise
                    part = await self._write_without_receiver_text(lease, one, exc)
                parts.append(part)
        return Recorded.merge(parts)

    async def _write_without_receiver_text(self, lease: Lease, settled: Settled, exc: Exception) -> Recorded:
        """The attempt, recorded without what the receiver sent: it counts (retries, dead letter, health), so a
        receiver whose answers cannot be stored is not sent the same delivery forever."""
        logger.error("delivery %s: its outcome could not be stored (%s)", settled.claimed.id, type(exc).__name__)
        if isinstance(settled, Sent):
            error = None if settled.outcome.ok else UNSTORABLE_ERROR
            settled = settled._replace(outcome=replace(settled.outcome, response_body=None, error=error))
        try:
            return await self._write_groups([(lease, [settled])])
        except Exception as again:
            if is_connection_error(again):
                raise
            # Nothing of the receiver's is left in the row: not this row's data. Left to its lease, as before.
            logger.exception("delivery %s: could not record its outcome", settled.claimed.id)
            return Recorded({}, [], {})

    async def _write_groups(self, groups: list[tuple[Lease, list[Settled]]]) -> Recorded:
        """One transaction, retried while the database is unreachable for as long as a lease lasts (twice)."""
        count = sum(len(settled) for _, settled in groups)
        patience = time.monotonic() + 2 * self._app.settings.delivery_lease_seconds
        delay = _RETRY_FIRST
        waited = False
        while True:
            try:
                recorded = await self._record(groups)
                for lease, settled in groups:
                    lease.recorded.update(s.claimed.id for s in settled)
                return recorded
            except Exception as exc:
                if not is_connection_error(exc) or time.monotonic() + delay > patience:
                    raise
                if not waited:
                    logger.warning("recording %d outcomes waits for the database: %s", count, type(exc).__name__)
                    waited = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)

    async def _record(self, groups: list[tuple[Lease, list[Settled]]]) -> Recorded:
        """One unit of work: on PostgreSQL one statement when every attempt succeeded (webhooks.delivery.record)."""
        db, settings = self._app.db, self._app.settings
        owned = [(settled, lease.owner) for lease, settled in groups]
        if db.dialect == "postgresql" and all_succeeded(owned):
            return await record_successes(db, owned, now=utcnow())
        async with db.session() as session:
            return await record_outcomes(
                session,
                owned,
                schedule=tuple(settings.retry_schedule),
                max_retry_after=settings.max_retry_after,
                disable_after=settings.disable_after,
                now=utcnow(),
            )
