from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhooks.retry import next_attempt_delay, parse_retry_after

SCHEDULE = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
NOW = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)

schedules = st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=12)
jitters = st.floats(min_value=0, max_value=0.99)


def test_after_first_attempt_waits_second_entry_without_jitter() -> None:
    assert next_attempt_delay(1, SCHEDULE, jitter=0) == 5


def test_each_attempt_uses_the_next_entry() -> None:
    assert [next_attempt_delay(n, SCHEDULE, jitter=0) for n in range(1, 8)] == SCHEDULE[1:]


def test_after_last_attempt_the_delivery_is_dead() -> None:
    assert next_attempt_delay(len(SCHEDULE), SCHEDULE) is None
    assert next_attempt_delay(len(SCHEDULE) + 5, SCHEDULE) is None


def test_single_entry_schedule_means_one_attempt() -> None:
    assert next_attempt_delay(1, [0]) is None


def test_zero_entry_stays_zero_under_jitter() -> None:
    assert next_attempt_delay(1, [0, 0, 10], rng=random.Random(1)) == 0


def test_retry_after_raises_the_delay() -> None:
    assert next_attempt_delay(1, SCHEDULE, jitter=0, retry_after=120) == 120


def test_retry_after_never_lowers_the_delay() -> None:
    assert next_attempt_delay(2, SCHEDULE, jitter=0, retry_after=1) == 300


def test_retry_after_is_clamped() -> None:
    assert next_attempt_delay(1, SCHEDULE, jitter=0, retry_after=10**9, max_retry_after=3600) == 3600


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -5.0])
def test_unusable_retry_after_is_ignored(bad: float) -> None:
    assert next_attempt_delay(1, SCHEDULE, jitter=0, retry_after=bad) == 5


def test_retry_after_does_not_revive_an_exhausted_schedule() -> None:
    assert next_attempt_delay(len(SCHEDULE), SCHEDULE, retry_after=10) is None


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_numbers_start_at_one(attempt: int) -> None:
    with pytest.raises(ValueError):
        next_attempt_delay(attempt, SCHEDULE)


@pytest.mark.parametrize("jitter", [-0.1, 1.0])
def test_jitter_out_of_range_is_refused(jitter: float) -> None:
    with pytest.raises(ValueError):
        next_attempt_delay(1, SCHEDULE, jitter=jitter)


def test_negative_schedule_entry_is_refused() -> None:
    with pytest.raises(ValueError):
        next_attempt_delay(1, [0, -5])


def test_rng_makes_jitter_reproducible() -> None:
    a = next_attempt_delay(3, SCHEDULE, rng=random.Random(7))
    b = next_attempt_delay(3, SCHEDULE, rng=random.Random(7))
    assert a == b and a != SCHEDULE[3]


@given(schedule=schedules, attempt=st.integers(min_value=1, max_value=20), jitter=jitters, seed=st.integers())
def test_delay_stays_within_jitter_bounds(schedule: list[float], attempt: int, jitter: float, seed: int) -> None:
    delay = next_attempt_delay(attempt, schedule, jitter=jitter, rng=random.Random(seed))
    if attempt >= len(schedule):
        assert delay is None
        return
    assert delay is not None
    base = schedule[attempt]
    assert delay >= 0
    assert base * (1 - jitter) - 1e-6 <= delay <= base * (1 + jitter) + 1e-6


@given(schedule=schedules, jitter=jitters, seed=st.integers())
def test_exhaustion_is_monotonic(schedule: list[float], jitter: float, seed: int) -> None:
    rng = random.Random(seed)
    results = [next_attempt_delay(n, schedule, jitter=jitter, rng=rng) for n in range(1, len(schedule) + 5)]
    first_none = results.index(None)
    assert first_none == len(schedule) - 1
    assert all(r is None for r in results[first_none:])
    assert all(r is not None for r in results[:first_none])


@given(
    schedule=schedules,
    attempt=st.integers(min_value=1, max_value=12),
    retry_after=st.floats(min_value=0, max_value=1e12, allow_nan=False),
    cap=st.floats(min_value=1, max_value=1e6),
    seed=st.integers(),
)
def test_retry_after_bounds(schedule: list[float], attempt: int, retry_after: float, cap: float, seed: int) -> None:
    delay = next_attempt_delay(attempt, schedule, retry_after=retry_after, max_retry_after=cap, rng=random.Random(seed))
    if attempt >= len(schedule):
        assert delay is None
        return
    assert delay is not None
    assert delay >= min(retry_after, cap)
    assert delay <= max(schedule[attempt] * 1.2 + 1e-6, cap)


@pytest.mark.parametrize(("value", "expected"), [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5)])
def test_parse_delta_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_http_date() -> None:
    later = NOW + timedelta(seconds=90)
    assert parse_retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"), NOW) == 90.0


def test_parse_http_date_in_the_past_is_zero() -> None:
    earlier = NOW - timedelta(hours=1)
    assert parse_retry_after(earlier.strftime("%a, %d %b %Y %H:%M:%S GMT"), NOW) == 0.0


def test_parse_with_naive_now_assumes_utc() -> None:
    later = NOW + timedelta(seconds=30)
    naive_now = NOW.replace(tzinfo=None)
    assert parse_retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"), naive_now) == 30.0


@pytest.mark.parametrize("value", [None, "", "   ", "-5", "soon", "1e9", "12abc", "Mon, 99 Foo 2024 99:99:99 GMT"])
def test_parse_unusable_values_give_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


@given(st.text(max_size=60))
def test_parse_never_raises(value: str) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or result >= 0
