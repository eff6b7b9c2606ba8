"""Bounded waiting between retries: `Retry-After` when the provider sends one, else exponential backoff."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from sync_trigger.connectors.base import ConnectorError

Sleep = Callable[[float], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """A failed request is about to be tried again: attempt `attempt` (the first try was 1) in `delay` s."""

    attempt: int
    delay: float
    error: ConnectorError


# Called before each wait with its notice, and with None once a retried request succeeds.
RetryHook = Callable[[RetryNotice | None], Awaitable[None]]

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

    def __init__(self, max_wait: float, sleep: Sleep, on_retry: RetryHook | None = None) -> None:
        self.max_wait = max_wait
        self.waited = 0.0
        self.attempt = 0
        self._sleep = sleep
        self._on_retry = on_retry

    async def wait(
        self, retry_after: float | None, exhausted: ConnectorError, *, cause: ConnectorError | None = None
    ) -> None:
        """Wait before the next try, or raise `exhausted`; `cause` (default `exhausted`) is what just failed."""
        delay = retry_after if retry_after is not None else backoff_delay(self.attempt)
        self.attempt += 1
        # Raise rather than sleep when the wait would cross the bound: sleeping first gains nothing.
        if self.waited + delay > self.max_wait:
            raise exhausted
        self.waited += delay
        if self._on_retry is not None:
            await self._on_retry(RetryNotice(attempt=self.attempt + 1, delay=delay, error=cause or exhausted))
        await self._sleep(delay)

    async def recovered(self) -> None:
        """The request succeeded: whoever was told of its retries hears they are over."""
        if self.attempt and self._on_retry is not None:
            await self._on_retry(None)
