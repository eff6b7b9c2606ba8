"""Times on the wire (synchook.http.wire.Timestamp): UTC, ISO 8601, milliseconds (truncated), Z, whatever the path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from synchook.http.wire import _wire_time


def _spelled_out(value: datetime) -> str:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
        f".{value.microsecond // 1000:03d}Z"
    )


@given(
    value=st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)),
    offset_minutes=st.one_of(st.none(), st.integers(-14 * 60, 14 * 60)),
)
def test_a_time_is_utc_with_milliseconds_and_z(value: datetime, offset_minutes: int | None) -> None:
    if offset_minutes is not None:
        value = value.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    assert _wire_time(value) == _spelled_out(value)
