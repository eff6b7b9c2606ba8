"""Many rows in one round: the engine's hot writes (deliveries in, attempts in, outcomes onto deliveries).

SQLAlchemy's executemany builds a parameter dict per row through several layers, and on PostgreSQL
runs one statement per row: per-row work that ran inside SQLite's one write lock, and 60 µs of
server time per delivery row on PostgreSQL. Here the values are gathered column by column and
converted by each column type's own bind processor, so what is stored is what ``insert(table)``
would store; then SQLite gets one ``executemany`` of plain tuples and PostgreSQL one statement over
``unnest`` of one array per column.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["insert_rows", "update_rows"]

Row = Mapping[str, Any]


async def insert_rows(
    session: AsyncSession, table: sa.Table, rows: Sequence[Row], *, encoded: frozenset[str] = frozenset()
) -> None:
    """``INSERT`` these rows (each a mapping with the same keys, the columns to set).

    ``encoded`` names JSON columns whose values are already their JSON text (``json.dumps(value)``, what the
    column's own bind processor makes): a caller that encoded a value once for several rows passes the text.
    """
    if not rows:
        return
    connection = await session.connection()
    dialect = connection.dialect
    columns = tuple(rows[0])
    sql = _insert_sql(dialect, table, columns)
    await connection.exec_driver_sql(sql, _parameters(dialect, table, columns, rows, encoded))


async def update_rows(
    session: AsyncSession,
    table: sa.Table,
    rows: Sequence[Row],
    *,
    key: str = "id",
    encoded: frozenset[str] = frozenset(),
) -> None:
    """``UPDATE`` each row found by ``row[key]``, setting its other keys (the same in every row); ``encoded``
    as for ``insert_rows``."""
    if not rows:
        return
    connection = await session.connection()
    dialect = connection.dialect
    columns = (*(name for name in rows[0] if name != key), key)
    sql = _update_sql(dialect, table, columns)
    await connection.exec_driver_sql(sql, _parameters(dialect, table, columns, rows, encoded))


def _parameters(
    dialect: Dialect, table: sa.Table, columns: tuple[str, ...], rows: Sequence[Row], encoded: frozenset[str]
) -> Any:
    values = [[row[name] for row in rows] for name in columns]
    for index, process in enumerate(_processors(dialect, table, columns, encoded)):
        if process is not None:
            values[index] = [process(value) for value in values[index]]
    if dialect.name == "postgresql":
        return tuple(values)  # one array per column, for unnest
    return list(zip(*values, strict=True))  # one tuple per row, for executemany


@lru_cache(maxsize=64)
def _processors(
    dialect: Dialect, table: sa.Table, columns: tuple[str, ...], encoded: frozenset[str]
) -> list[Callable[[Any], Any] | None]:
    return [
        None if name in encoded else table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        for name in columns
    ]


@lru_cache(maxsize=64)
def _insert_sql(dialect: Dialect, table: sa.Table, columns: tuple[str, ...]) -> str:
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    if dialect.name == "postgresql":
        return f"INSERT INTO {quote(table.name)} ({names}) SELECT * FROM {_unnest(dialect, table, columns)}"
    return f"INSERT INTO {quote(table.name)} ({names}) VALUES ({', '.join('?' * len(columns))})"


@lru_cache(maxsize=64)
def _update_sql(dialect: Dialect, table: sa.Table, columns: tuple[str, ...]) -> str:
    """``columns`` ends with the key."""
    quote = dialect.identifier_preparer.quote
    *settable, key = columns
    if dialect.name == "postgresql":
        aliases = ", ".join(f"v{index}" for index in range(len(columns)))
        assignments = ", ".join(f"{quote(name)} = v.v{index}" for index, name in enumerate(settable))
        return (
            f"UPDATE {quote(table.name)} AS t SET {assignments} "
            f"FROM {_unnest(dialect, table, columns)} AS v({aliases}) WHERE t.{quote(key)} = v.v{len(settable)}"
        )
    assignments = ", ".join(f"{quote(name)} = ?" for name in settable)
    return f"UPDATE {quote(table.name)} SET {assignments} WHERE {quote(key)} = ?"


def _unnest(dialect: Dialect, table: sa.Table, columns: tuple[str, ...]) -> str:
    arrays = ", ".join(
        f"${index}::{table.c[name].type.compile(dialect=dialect)}[]" for index, name in enumerate(columns, start=1)
    )
    return f"unnest({arrays})"
