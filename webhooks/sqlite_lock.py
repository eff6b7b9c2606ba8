"""One write transaction at a time per process on SQLite (a no-op on PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from synchook.context import AppContext

__all__ = ["write_lock"]

_WRITE_LOCK = "webhooks.sqlite_write_lock"


def write_lock(app: AppContext) -> contextlib.AbstractAsyncContextManager[Any]:
    """On SQLite, one write transaction at a time per process.

    Every session there is BEGIN IMMEDIATE, and SQLite's busy handler is unfair: with dozens of
    connections polling for the lock, some wait past busy_timeout ("database is locked") while others
    win again and again. Queueing them in-process leaves one contender per process. PostgreSQL locks
    rows, not the database: no lock there.
    """
    if not app.settings.is_sqlite:
        return contextlib.nullcontext()
    lock = app.extras.get(_WRITE_LOCK)
    if lock is None:
        lock = app.extras[_WRITE_LOCK] = asyncio.Lock()
    return lock
