"""Prefixed ULIDs: sortable by creation time, so ids double as pagination cursors."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every 10-bit value as its two characters: a ULID is 13 lookups, not 26 steps of a loop (a fan-out
# names thousands of deliveries while it holds SQLite's write lock).
_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]


def ulid(timestamp_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    return _encode((ms << 80) | int.from_bytes(os.urandom(10), "big"))


def _encode(v: int, p: list[str] = _PAIRS) -> str:
    # The 13 lookups written out: the list comprehension's own frame and the join were a third of an id's cost,
    # and a fan-out makes one id per delivery (ulid was 4 % of a worker's samples in (a)).
    return (
        p[(v >> 120) & 1023]
        + p[(v >> 110) & 1023]
        + p[(v >> 100) & 1023]
        + p[(v >> 90) & 1023]
        + p[(v >> 80) & 1023]
        + p[(v >> 70) & 1023]
        + p[(v >> 60) & 1023]
        + p[(v >> 50) & 1023]
        + p[(v >> 40) & 1023]
        + p[(v >> 30) & 1023]
        + p[(v >> 20) & 1023]
        + p[(v >> 10) & 1023]
        + p[v & 1023]
    )


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid()}"


def looks_like_id(value: str, prefix: str) -> bool:
    """Cheap shape check so junk (path traversal, huge strings) never reaches a query."""
    if not value.startswith(prefix + "_"):
        return False
    body = value[len(prefix) + 1 :]
    return len(body) == 26 and all(c in _CROCKFORD for c in body)
