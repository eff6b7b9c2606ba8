"""Retry timing: when the next delivery attempt is due, as pure functions.

``schedule[i]`` is the wait before attempt ``i + 1`` (``schedule[0]``, usually 0, precedes the
first attempt), so a schedule of N entries allows N attempts. After attempt ``n`` fails the
next one waits ``schedule[n]`` ± jitter; with no ``schedule[n]`` the delivery is dead.
Jitter spreads retries of a burst of failures so they do not all land on the receiver at once.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["next_attempt_delay", "parse_retry_after"]

_DELTA_SECONDS = re.compile(r"\d{1,15}(?:\.\d{1,9})?")


def next_attempt_delay(
    attempt_number: int,
    schedule: Sequence[float],
    *,
    retry_after: float | None = None,
    jitter: float = 0.2,
    max_retry_after: float = 86400,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait after failed attempt ``attempt_number`` (1-based), or None when the schedule is exhausted."""
    if attempt_number < 1:
        raise ValueError("attempt_number counts from 1")
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be in [0, 1)")
    if attempt_number >= len(schedule):
        return None
    base = float(schedule[attempt_number])
    if not math.isfinite(base) or base < 0:
        raise ValueError("schedule entries must be finite, non-negative seconds")
    delay = base
    if jitter and base:
        delay = base * (1 + (rng or random).uniform(-jitter, jitter))
    # A receiver asking us to back off (429/503 Retry-After) is honoured, but only up to a bound:
    # an absurd Retry-After must not park a delivery for years.
    if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
        delay = max(delay, min(retry_after, max_retry_after))
    return max(delay, 0.0)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds requested by a ``Retry-After`` header (delta-seconds or HTTP-date), or None if absent/unusable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT by definition
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)
