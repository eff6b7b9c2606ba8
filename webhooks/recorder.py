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
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from synchook.context import AppContext
from synchook.db import is_connection_error
from synchook.timeutil import utcnow
from webhooks.attempts import Claimed, Plan, record_outcomes

__all__ = ["UNSTORABLE_ERROR", "Lease", "Recorder"]

logger = logging.getLogger(__name__)

# Outcomes that finish within this long of each other share a transaction.
GATHER_FOR = 0.005
# Short: once the database is back, the outcome should land before anyone else takes the row over.
_RETRY_FIRST, _RETRY_MAX = 0.05, 0.25
# An attempt's error when what the receiver sent could not be stored even made storable (see _write).
UNSTORABLE_ERROR = "the receiver's response could not be stored"


@dataclass(eq=False)
class Lease:
    """One claim on some deliveries: a row is ours while its ``lease_owner`` is our ``owner``.

    Renewals move ``lease_until`` and never the owner, so a record never races a renewal.
    """

    until: datetime
    ids: list[str]
    owner: str = field(default_factory=lambda: secrets.token_hex(16))
    recorded: set[str] = field(default_factory=set)

    def unrecorded(self) -> list[str]:
        return [i for i in self.ids if i not in self.recorded]


@dataclass
class _Pending:
    outcomes: dict[Lease, list[Claimed]] = field(default_factory=dict)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def count(self) -> int:
        return sum(len(claimed) for claimed in self.outcomes.values())


class Recorder:
    """Writes outcomes for every batch of one worker; ``submit`` returns a future set once they are
    committed (or failed for good)."""

    def __init__(self, app: AppContext, after_commit: Callable[[Plan], Awaitable[None]]) -> None:
        self._app = app
        self._after_commit = after_commit
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(self, lease: Lease, claimed: Sequence[Claimed]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not claimed:
            done.set_result(None)
            return done
        self._pending.outcomes.setdefault(lease, []).extend(claimed)
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
            plan = await self._write(pending)
            await self._after_commit(plan)
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
                waiter.set_result(None)

    async def _write(self, pending: _Pending) -> Plan:
        """One transaction for the whole flush; if the database refuses it (not unreachable: a value it cannot
        store), one per outcome, so a bad row fails only itself and never another tenant's outcomes."""
        groups = list(pending.outcomes.items())
        try:
            return await self._write_groups(groups)
        except Exception as exc:
            if is_connection_error(exc):
                raise
            # Any other error: drivers do not agree on a class for "this value cannot be stored" (asyncpg gives a
            # bare DBAPIError with SQLSTATE 22xxx, sqlite3 a UnicodeEncodeError), and a rare error costs one
            # transaction per outcome, once.
            logger.warning("recording %d outcomes failed (%s): one at a time", pending.count(), type(exc).__name__)
        return await self._write_one_by_one(groups)

    async def _write_one_by_one(self, groups: list[tuple[Lease, list[Claimed]]]) -> Plan:
        plan = Plan()
        for lease, claimed in groups:
            for one in claimed:
                try:
                    part = await self._write_groups([(lease, [one])])
                except Exception as exc:
                    if is_connection_error(exc):
                        raise
                    part = await self._write_without_receiver_text(lease, one, exc)
                _merge(plan, part)
        return plan

    async def _write_without_receiver_text(self, lease: Lease, claimed: Claimed, exc: Exception) -> Plan:
        """The attempt, recorded without what the receiver sent: it counts (retries, dead letter, health), so a
        receiver whose answers cannot be stored is not sent the same delivery forever."""
        logger.error("delivery %s: its outcome could not be stored (%s)", claimed.id, type(exc).__name__)
        if claimed.outcome is not None:
            claimed.outcome = replace(
                claimed.outcome,
                response_body=None,
                error=None if claimed.outcome.ok else UNSTORABLE_ERROR,
            )
        try:
            return await self._write_groups([(lease, [claimed])])
        except Exception as again:
            if is_connection_error(again):
                raise
            # Nothing of the receiver's is left in the row: not this row's data. Left to its lease, as before.
            logger.exception("delivery %s: could not record its outcome", claimed.id)
            return Plan()

    async def _write_groups(self, groups: list[tuple[Lease, list[Claimed]]]) -> Plan:
        """One transaction, retried while the database is unreachable for as long as a lease lasts (twice)."""
        count = sum(len(claimed) for _, claimed in groups)
        patience = time.monotonic() + 2 * self._app.settings.delivery_lease_seconds
        delay = _RETRY_FIRST
        waited = False
        while True:
            try:
                async with self._app.db.session() as session:
                    plan = await self._record(session, groups)
                for lease, claimed in groups:
                    lease.recorded.update(c.id for c in claimed)
                return plan
            except Exception as exc:
                if not is_connection_error(exc) or time.monotonic() + delay > patience:
                    raise
                if not waited:
                    logger.warning("recording %d outcomes waits for the database: %s", count, type(exc).__name__)
                    waited = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)

    async def _record(self, session: AsyncSession, groups: list[tuple[Lease, list[Claimed]]]) -> Plan:
        settings = self._app.settings
        return await record_outcomes(
            session,
            [(claimed, lease.owner) for lease, claimed in groups],
            schedule=tuple(settings.retry_schedule),
            max_retry_after=settings.max_retry_after,
            disable_after=settings.disable_after,
            now=utcnow(),
        )


def _merge(plan: Plan, part: Plan) -> None:
    plan.retries.update(part.retries)
    plan.events.extend(part.events)
    for outcome, count in part.outcomes.items():
        plan.outcomes[outcome] = plan.outcomes.get(outcome, 0) + count
