"""The SQL that any engine of this process runs (the worker's and the API's open their own), for tests that read
a statement's plan or count round trips; and, on PostgreSQL, the plan such a statement gets as a prepared one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, Row
from sqlalchemy.ext.asyncio import AsyncConnection

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


async def explain_prepared(
    connection: AsyncConnection, statement: Statement, *, name: str, options: str = ""
) -> list[Row[Any]]:
    """PostgreSQL's ``EXPLAIN [options] EXECUTE`` of ``statement`` prepared in SQL as ``name``: the plan the
    session's ``plan_cache_mode`` gives it (a prepared statement's generic plan, or one for its values)."""
    sql, params = statement
    await connection.exec_driver_sql(f"PREPARE {name} AS {sql}")
    arguments = ", ".join(_literal(p) for p in params)
    return list((await connection.exec_driver_sql(f"EXPLAIN {options} EXECUTE {name}({arguments})")).all())


def _literal(value: Any) -> str:
    """A bound value as SQL text, for ``EXECUTE`` (strings, numbers, times; arrays of them)."""
    if isinstance(value, (list, tuple)):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"
