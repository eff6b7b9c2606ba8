"""Prefixed ULIDs: sortable by creation time, so ids double as pagination cursors."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every 10-bit value as its two characters: a ULID is 13 lookups, not 26 steps of a loop (a fan-out
# names thousands of deliveries while it holds SQLite's write lock).
_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]
_SHIFTS = tuple(range(120, -1, -10))  # 130 bits, the top two always zero


def ulid(timestamp_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid()}"


def looks_like_id(value: str, prefix: str) -> bool:
    """Cheap shape check so junk (path traversal, huge strings) never reaches a query."""
    if not value.startswith(prefix + "_"):
        return False
    body = value[len(prefix) + 1 :]
    return len(body) == 26 and all(c in _CROCKFORD for c in body)
