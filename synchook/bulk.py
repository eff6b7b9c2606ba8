"""Many rows in one round: the engine's hot writes (deliveries in, attempts in, outcomes onto deliveries).

SQLAlchemy's executemany builds a parameter dict per row through several layers, and on PostgreSQL
runs one statement per row: per-row work that ran inside SQLite's one write lock, and 60 µs of
server time per delivery row on PostgreSQL. Here the values are gathered column by column and
converted by each column type's own bind processor, so what is stored is what ``insert(table)``
would store; then SQLite gets one ``executemany`` of plain tuples and PostgreSQL one statement over
``unnest`` of one array per column, except for a column with the same value in every row, which is sent
once, as a scalar: of an outcome update's 11 columns 10 usually are (status, times, lease, code...), and
of a fan-out's 14, 9 (workspace, event type, times...). Arrays cost asyncpg an encoding per element and
PostgreSQL an unnest per array.
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
    values = _values(dialect, table, columns, rows, encoded)
    if dialect.name != "postgresql":
        await connection.exec_driver_sql(_insert_sql(dialect, table, columns), _tuples(values))
        return
    shared = _shared(values)
    await connection.exec_driver_sql(_insert_sql_pg(dialect, table, columns, shared), _arrays(values, shared))


async def update_rows(
    session: AsyncSession,
    table: sa.Table,
    rows: Sequence[Row],
    *,
    key: str = "id",
    encoded: frozenset[str] = frozenset(),
    guard: tuple[str, str] | None = None,
) -> list[Any]:
    """``UPDATE`` each row found by ``row[key]``, setting its other keys (the same in every row); ``encoded``
    as for ``insert_rows``. Returns the keys of the rows updated when there is a ``guard``, else [].

    ``guard`` is (row key, column): a row is updated only where that column still holds ``row[row key]``
    (compared before the update, so the column may be set too); that row key is not set. On PostgreSQL the
    check is in the update's WHERE and the keys come back by RETURNING: one statement, no ``SELECT ... FOR
    UPDATE`` before it. On SQLite (one writer, the transaction holds the write lock from BEGIN IMMEDIATE) a
    read of the column before a plain update is as good, and executemany cannot return rows.
    """
    if not rows:
        return []
    connection = await session.connection()
    dialect = connection.dialect
    guard_key, guard_column = guard if guard is not None else ("", "")
    settable = tuple(name for name in rows[0] if name not in (key, guard_key))
    if guard is not None and dialect.name != "postgresql":
        rows = await _guarded(session, table, rows, key, guard_key, guard_column)
        if not rows:
            return []
    if guard is None or dialect.name != "postgresql":
        columns = (*settable, key)
        values = _values(dialect, table, columns, rows, encoded)
        if dialect.name != "postgresql":
            await connection.exec_driver_sql(_update_sql(dialect, table, columns), _tuples(values))
            return [row[key] for row in rows] if guard is not None else []
        shared = _shared(values)
        await connection.exec_driver_sql(_update_sql_pg(dialect, table, columns, shared), _arrays(values, shared))
        return []
    columns = (*settable, guard_key, key)
    values = _values(dialect, table, columns, rows, encoded, typed=(*settable, guard_column, key))
    shared = _shared(values)
    sql = _update_sql_pg(dialect, table, (*settable, guard_column, key), shared, guarded=True)
    result = await connection.exec_driver_sql(sql, _arrays(values, shared))
    return [r[0] for r in result]


async def _guarded(
    session: AsyncSession, table: sa.Table, rows: Sequence[Row], key: str, guard_key: str, guard_column: str
) -> list[Row]:
    """The rows whose ``guard_column`` still holds their ``guard_key`` value (SQLite: read, then update)."""
    from synchook.db import among

    found = await session.execute(
        sa.select(table.c[key], table.c[guard_column]).where(among(table.c[key], sorted({r[key] for r in rows})))
    )
    now: dict[Any, Any] = {r[0]: r[1] for r in found}
    return [row for row in rows if row[key] in now and now[row[key]] == row[guard_key]]


def _values(
    dialect: Dialect,
    table: sa.Table,
    columns: tuple[str, ...],
    rows: Sequence[Row],
    encoded: frozenset[str],
    *,
    typed: tuple[str, ...] | None = None,
) -> list[list[Any]]:
    """One list per row key in ``columns``, each value converted by the bind processor of its column (the
    same name, or the one at the same place in ``typed``)."""
    values = [[row[name] for row in rows] for name in columns]
    for index, process in enumerate(_processors(dialect, table, typed or columns, encoded)):
        if process is None:
            continue
        column = values[index]
        if len(set(map(id, column))) == 1:
            # One object in every row (a fan-out's times, an outcome update's): converted once, not once a row. The
            # same object, not merely equal values: two equal dicts in another key order are two JSON texts.
            values[index] = [process(column[0])] * len(column)
        else:
            values[index] = [process(value) for value in column]
    return values


def _same(column: list[Any]) -> bool:
    """Whether every value equals the first and is of its type. list.count and a set of types run in C: a generator
    comparing value by value was 1 % of a worker in (a) (14 columns x 2,000 rows a fan-out batch)."""
    return column.count(column[0]) == len(column) and len(set(map(type, column))) == 1


def _tuples(values: list[list[Any]]) -> list[tuple[Any, ...]]:
    return list(zip(*values, strict=True))  # one tuple per row, for executemany


def _shared(values: list[list[Any]]) -> tuple[bool, ...]:
    """For each column, whether every row has the same value (compared after conversion, as stored)."""
    return tuple(_same(column) for column in values)


def _arrays(values: list[list[Any]], shared: tuple[bool, ...]) -> tuple[Any, ...]:
    # One scalar for a column with one value, one array (for unnest) for the others.
    return tuple(column[0] if same else column for column, same in zip(values, shared, strict=True))


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
    return f"INSERT INTO {quote(table.name)} ({names}) VALUES ({', '.join('?' * len(columns))})"


@lru_cache(maxsize=64)
def _update_sql(dialect: Dialect, table: sa.Table, columns: tuple[str, ...]) -> str:
    """``columns`` ends with the key."""
    quote = dialect.identifier_preparer.quote
    *settable, key = columns
    assignments = ", ".join(f"{quote(name)} = ?" for name in settable)
    return f"UPDATE {quote(table.name)} SET {assignments} WHERE {quote(key)} = ?"


# PostgreSQL: a few texts per table (which columns are shared), each prepared once per connection by asyncpg.
@lru_cache(maxsize=256)
def _insert_sql_pg(dialect: Dialect, table: sa.Table, columns: tuple[str, ...], shared: tuple[bool, ...]) -> str:
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    terms, source = _terms(dialect, table, columns, shared)
    return f"INSERT INTO {quote(table.name)} ({names}) SELECT {', '.join(terms)}{source}"


@lru_cache(maxsize=256)
def _update_sql_pg(
    dialect: Dialect, table: sa.Table, columns: tuple[str, ...], shared: tuple[bool, ...], *, guarded: bool = False
) -> str:
    """``columns`` ends with the key, after the guard's column if ``guarded`` (then the keys updated are returned)."""
    quote = dialect.identifier_preparer.quote
    terms, source = _terms(dialect, table, columns, shared)
    *settable, key = columns
    where = f"t.{quote(key)} = {terms[-1]}"
    if guarded:
        *settable, guard = settable
        where += f" AND t.{quote(guard)} = {terms[-2]} RETURNING t.{quote(key)}"
    assignments = ", ".join(f"{quote(name)} = {term}" for name, term in zip(settable, terms, strict=False))
    return f"UPDATE {quote(table.name)} AS t SET {assignments}{source} WHERE {where}"


def _terms(
    dialect: Dialect, table: sa.Table, columns: tuple[str, ...], shared: tuple[bool, ...]
) -> tuple[list[str], str]:
    """Each column's value as SQL (a cast parameter if shared, else a column of the unnest), and the FROM clause
    of the unnest (none if every column is shared: a single row)."""
    terms: list[str] = []
    arrays: list[str] = []
    for index, (name, same) in enumerate(zip(columns, shared, strict=True), start=1):
        sql_type = table.c[name].type.compile(dialect=dialect)
        if same:
            terms.append(f"${index}::{sql_type}")
        else:
            terms.append(f"v.v{index}")
            arrays.append(f"${index}::{sql_type}[]")
    if not arrays:
        return terms, ""
    aliases = ", ".join(term.removeprefix("v.") for term in terms if term.startswith("v."))
    return terms, f" FROM unnest({', '.join(arrays)}) AS v({aliases})"
