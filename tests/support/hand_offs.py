"""Count the calls handed to aiosqlite's threads (SQLite's hand-offs: each waits for a turn of the loop)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import aiosqlite
import pytest


@contextlib.contextmanager
def counted_hand_offs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of each function handed to an aiosqlite thread meanwhile. synchook.sqlite.inline's connections run
    theirs on the loop, through their own ``_execute``: they are not counted."""
    handed: list[str] = []
    execute = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(getattr(fn, "__name__", type(fn).__name__))
        return await execute(self, fn, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(aiosqlite.Connection, "_execute", counting)
        yield handed
