"""The SQL that any engine of this process runs (the worker's and the API's open their own), for tests that read
a statement's plan or count round trips."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

Statement = tuple[str, Any]  # the SQL as sent, and its parameters


@contextmanager
def statements_run(wanted: Callable[[str], bool]) -> Iterator[list[Statement]]:
    """Every statement for which ``wanted(sql)`` holds, in order, while the block runs."""
    seen: list[Statement] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if wanted(statement):
            seen.append((statement, parameters))

    sa.event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(Engine, "before_cursor_execute", record)
