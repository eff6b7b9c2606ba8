"""Bounded waiting between retries: `Retry-After` when the provider sends one, else exponential backoff."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from sync_trigger.connectors.base import ConnectorError

Sleep = Callable[[float], Awaitable[object]]

BACKOFF_BASE = 1.0  # seconds before the first retry without Retry-After
BACKOFF_CAP = 32.0  # Google's guide stops doubling around here


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds (Graph sends fractions) or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def backoff_delay(attempt: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Exponential delay for the attempt-th retry (0-based), with 'equal jitter': half fixed, half random."""
    ceiling = min(cap, base * (2**attempt))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Backoff:
    """Tracks the time one request has spent waiting; refuses to wait past `max_wait` in total."""

    def __init__(self, max_wait: float, sleep: Sleep) -> None:
        self.max_wait = max_wait
        self.waited = 0.0
        self.attempt = 0
        self._sleep = sleep

    async def wait(self, retry_after: float | None, exhausted: ConnectorError) -> None:
        delay = retry_after if retry_after is not None else backoff_delay(self.attempt)
        self.attempt += 1
        # Raise rather than sleep when the wait would cross the bound: sleeping first gains nothing.
        if self.waited + delay > self.max_wait:
            raise exhausted
        self.waited += delay
        await self._sleep(delay)
