"""An aiosqlite connection that runs SQLite on the event loop's own thread (the worker's choice).

aiosqlite sends every call to a thread and wakes the loop with the result. On a busy worker each
wake-up waits its turn behind the HTTP traffic, and a transaction of six statements held SQLite's
one write lock (every other process's writes queued behind it) for 30 ms of mostly waiting,
while the thread fought the loop for the GIL. SQLite calls take microseconds to a few milliseconds:
run inline, a transaction holds the lock only as long as SQLite works. The wait for the lock itself
never blocks the loop: :class:`synchook.sqlite.lock.SQLiteWriteLock` is taken (off the loop) before
BEGIN. Only `synchook worker` processes run inline. The API keeps aiosqlite's thread (a long admin
query must not stall its other requests), and so does a worker sharing its loop with the API
(`synchook dev`, tests): there, BEGIN blocking inline behind an API transaction would stall both.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Generator
from typing import Any

import aiosqlite

__all__ = ["InlineConnection", "inline_connector"]


class _RunNow:
    """Stands in for aiosqlite's queue to its thread (SQLAlchemy's adapter uses it directly too)."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as error:
            if future is not None:
                future.set_exception(error)
            return
        if future is not None:
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """aiosqlite's interface, no thread: each call runs when awaited, without yielding to the loop."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int) -> None:
        super().__init__(connector, iter_chunk_size)
        self._tx = _RunNow()  # type: ignore[assignment]

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        return self._connect().__await__()  # the base class would start its thread here

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)


def inline_connector(path: str, *, timeout: float) -> Callable[[], Any]:
    """For ``create_async_engine(async_creator=...)``."""
    connect = functools.partial(sqlite3.connect, path, timeout=timeout, check_same_thread=False)

    async def open_connection() -> aiosqlite.Connection:
        return await InlineConnection(connect, iter_chunk_size=64)

    return open_connection
