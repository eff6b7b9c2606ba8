"""SQLite's one writer, handed over in order instead of by polling.

Every SQLite session here is BEGIN IMMEDIATE, so sessions run one at a time across all processes on
the file. SQLite makes a waiting writer poll, sleeping up to 100 ms between tries: under load a
lock released now is taken a long sleep later, and polling is unfair (some waiters win again and
again, others wait past busy_timeout). This lock queues the waiters instead: FIFO within a process
(an asyncio lock), and between processes a kernel file lock (flock) on ``<database>-lock``, which
wakes its next waiter the moment it is released and is dropped by the kernel if its holder dies.
SQLite's own lock still guards the data; a process that does not take this lock (an outside tool)
falls back to SQLite's polling and loses nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from sqlalchemy import exc

__all__ = ["SQLiteWriteLock"]


class SQLiteWriteLock:
    """Held for a whole session; waiting longer than ``timeout`` fails as SQLite would: "database is locked"."""

    def __init__(self, database_path: str, *, timeout: float) -> None:
        self._path = f"{database_path}-lock"
        self._timeout = timeout
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._local = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None  # the task holding the lock, and how often it re-entered
        self._depth = 0
        # One thread blocks in flock at a time: the asyncio lock is held until that thread is done.
        self._waiter = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write-lock")

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is not None and task is self._owner:
            # A session opened while the same task holds one (the outer not yet begun): as before
            # this lock, SQLite decides; queueing behind ourselves would never end.
            self._depth += 1
            return
        local = self._local_lock()
        try:
            await asyncio.wait_for(local.acquire(), self._timeout)
        except TimeoutError:
            raise _locked() from None
        fd = self._file()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._owner = task
            return
        except BlockingIOError:
            pass
        except BaseException:
            local.release()
            raise
        waiting = asyncio.get_running_loop().run_in_executor(self._waiter, fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            await asyncio.wait_for(asyncio.shield(waiting), self._timeout)
        except BaseException as error:
            # Cancelled or timed out while the thread still waits: when it gets the lock, hand it back.
            waiting.add_done_callback(lambda done: self._abandon(done, fd, local))
            if isinstance(error, TimeoutError):
                raise _locked() from None
            raise
        self._owner = task

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._depth:
            self._depth -= 1
            return
        assert self._fd is not None
        self._owner = None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._local.release()

    def close(self) -> None:
        self._waiter.shutdown(wait=False, cancel_futures=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _local_lock(self) -> asyncio.Lock:
        # An asyncio lock belongs to one event loop; a Database reused on a new loop (tests) gets a new one.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._local = loop, asyncio.Lock()
        return self._local

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    @staticmethod
    def _abandon(done: asyncio.Future[None], fd: int, local: asyncio.Lock) -> None:
        if not done.cancelled() and done.exception() is None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        local.release()


def _locked() -> exc.OperationalError:
    return exc.OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
