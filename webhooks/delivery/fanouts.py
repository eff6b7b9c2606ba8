"""The relay jobs of one worker, coalesced: at most two fan-out transactions open at a time, and the events of the
jobs that arrive meanwhile go together in the next one (a group commit).

At 2,000 events/s a relay job carries ~10 events, and each paid its own fan-out transaction (claim, match, insert,
commit: five round trips and their SQLAlchemy work) and its own inline batch. Grouped, the jobs that pile up while
the transactions are open share the next one: none waits longer than a transaction, and the busier the worker, the
larger the groups. The next group starts when one before it has committed (its inline batch starts sending, or
its dispatch returned), not when its sends end: a slow endpoint holds no other job's events back.

Nothing changes for the guarantees: the fan-out claims each event once (``dispatched_at`` set only where NULL),
whichever group or job carries it; every job still ends when the fan-out of its events has ended (sent inline,
recorded, or queued) and with its error if that failed; a worker that dies leaves the events undispatched (the
transaction rolled back) or the rows leased (the lease runs out), and the sweepers pick them up as before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Dispatch", "FanOuts"]

# Dispatch a group's events; the callback is called once its transaction has committed (at the latest, on return).
Dispatch = Callable[[list[str], Callable[[], None]], Awaitable[int]]

# Events per group at most: (a)'s jobs carry 20 events of 100 deliveries each, and a group's later fan-out batches
# wait for its first batch's inline sends; 100 events keep a group to about two batches of 5,000 rows.
GROUP_EVENTS = 100
# Fan-out transactions a worker keeps open at once. One at a time cut a worker's transactions most, but its rate
# then followed PostgreSQL's latency: with the database busy (other benches beside (b)) the worker idled between
# commits and fell behind at 2,000 events/s. Two keep one transaction's round trips overlapping another's.
TRANSACTIONS = 2


@dataclass(eq=False)
class _Group:
    dispatch: Dispatch
    ids: list[str] = field(default_factory=list)
    done: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(eq=False)
class FanOuts:
    """One worker's relay jobs: at most ``transactions`` fan-out transactions open; groups waiting, in arrival order."""

    limit: int = GROUP_EVENTS
    transactions: int = TRANSACTIONS
    _open: int = 0  # fan-outs started whose transaction has not committed yet
    _closing: bool = False
    _waiting: deque[_Group] = field(default_factory=deque)
    _running: set[asyncio.Task[None]] = field(default_factory=set)

    async def relay(self, event_ids: Sequence[str], dispatch: Dispatch) -> int:
        """Dispatch these events with the others waiting; returns how many events the group's dispatch claimed."""
        group = self._waiting[-1] if self._waiting and len(self._waiting[-1].ids) < self.limit else None
        if group is None:
            group = _Group(dispatch)
            self._waiting.append(group)
        group.ids.extend(event_ids)
        self._start_next()
        # A job cancelled (shutdown, timeout) stops waiting; its group's dispatch goes on for the other jobs.
        return await asyncio.shield(group.done)

    def _start_next(self) -> None:
        if self._closing:
            while self._waiting:
                self._waiting.popleft().done.cancel()
        while self._waiting and self._open < self.transactions:
            self._open += 1
            task = asyncio.create_task(self._run(self._waiting.popleft()), name="relay fan-out")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, group: _Group) -> None:
        committed = False

        def on_commit() -> None:
            nonlocal committed
            if not committed:
                committed = True
                self._open -= 1
                self._start_next()

        try:
            claimed = await group.dispatch(group.ids, on_commit)
        except asyncio.CancelledError:
            group.done.cancel()
            raise
        except Exception as exc:
            group.done.set_exception(exc)  # every job of the group fails with it, as each would have alone
        else:
            group.done.set_result(claimed)
        finally:
            on_commit()

    async def close(self) -> None:
        """Stop the fan-outs still running (worker shutdown): what they leave, the sweepers finish."""
        self._closing = True
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
