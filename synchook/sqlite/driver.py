"""A write transaction run whole on SQLite's driver (sqlite3), in one call to the thread that owns the connection.

Through SQLAlchemy and aiosqlite a unit of work hands each step to aiosqlite's thread and waits for the loop to
take the answer: BEGIN IMMEDIATE, each statement (a cursor, its execution, its rows, its close), COMMIT, and the
pool's rollback at checkin. `POST /v1/calendar/sync` made about fifteen such hand-offs while it held SQLite's one
write lock, each waiting for a turn of a loop busy with the other requests, so the lock, not the CPU, set the
route's rate. Here the statements are compiled by SQLAlchemy once (its SQL and types, the engine's own dialect)
and run with their COMMIT in one function on that thread (`synchook.db.Database.sqlite_transaction`), as
`Database.driver_row` hands PostgreSQL's statement to asyncpg in one call.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

__all__ = ["DriverStatement", "DriverTransaction", "OneCall"]

T = TypeVar("T")

_Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A Core statement as sqlite3 takes it: its SQL, the values it binds itself (already converted), and how each
    value passed at execution and each column of its rows is converted, as SQLAlchemy's execution converts them."""

    sql: str
    names: tuple[str, ...]  # its parameters, in their positional (qmark) order
    constants: Mapping[str, Any]  # the statement's own values (`status = 'active'`, an IN list), converted
    binds: Mapping[str, _Processor | None]  # the values passed at execution: their conversions
    columns: tuple[str, ...]
    results: tuple[_Processor | None, ...]

    @classmethod
    def compile(cls, statement: ClauseElement, dialect: Dialect) -> DriverStatement:
        compiled: Any = statement.compile(dialect=dialect)
        passed = {compiled.bind_names[bind] for bind in compiled.binds.values() if bind.required}
        # The IN lists expanded now (their values are the statement's own), the passed values left as parameters.
        state = compiled.construct_expanded_state(dict.fromkeys(passed))
        if state.positiontup is None:
            raise ValueError(f"{dialect.name}'s parameters are not positional")
        expanded_from = {name: source for source, names in state.parameter_expansion.items() for name in names}

        def processor(name: str) -> _Processor | None:
            bind = compiled.binds[expanded_from.get(name, name)]
            converts: _Processor | None = bind.type.dialect_impl(dialect).bind_processor(dialect)
            return converts

        constants: dict[str, Any] = {}
        for name in state.positiontup:
            if name in passed:
                continue
            value, converts = state.parameters[name], processor(name)
            constants[name] = value if converts is None else converts(value)
        columns = tuple(getattr(statement, "exported_columns", ()))
        return cls(
            sql=state.statement,
            names=tuple(state.positiontup),
            constants=constants,
            binds={name: processor(name) for name in passed},
            columns=tuple(column.key for column in columns),
            results=tuple(column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns),
        )

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The parameters for ``values`` (passed by name; names the statement does not bind are ignored)."""
        out = []
        for name in self.names:
            if name in self.constants:
                out.append(self.constants[name])
                continue
            value, converts = values[name], self.binds[name]
            out.append(value if converts is None else converts(value))
        return tuple(out)

    def row(self, found: tuple[Any, ...]) -> dict[str, Any]:
        return {
            name: value if converts is None else converts(value)
            for name, value, converts in zip(self.columns, found, self.results, strict=True)
        }


class DriverTransaction:
    """What a transaction's work runs its statements through, on the driver's thread (nothing here may touch the
    event loop). ``statement`` is the one running or run last, for the error a failure is raised as."""

    def __init__(self, connection: sqlite3.Connection, compile: Callable[[ClauseElement], DriverStatement]) -> None:
        self._connection = connection
        self._compile = compile
        self.statement: str = "BEGIN IMMEDIATE"

    def first(self, statement: ClauseElement, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row of ``statement``, by column name, or None."""
        compiled = self._compile(statement)
        self.statement = compiled.sql
        cursor = self._connection.execute(compiled.sql, compiled.parameters(values))
        try:
            found = cursor.fetchone()
        finally:
            cursor.close()  # the statement ends here, not when the cursor is collected
        return None if found is None else compiled.row(found)

    def execute(self, statement: ClauseElement, values: Mapping[str, Any]) -> int:
        """Run ``statement``; its row count."""
        compiled = self._compile(statement)
        self.statement = compiled.sql
        return self._connection.execute(compiled.sql, compiled.parameters(values)).rowcount


class OneCall(Generic[T]):
    """The function sent to the driver's thread: BEGIN IMMEDIATE, ``work``'s statements, COMMIT; on any error, or
    when the caller stopped waiting (``abandon``) before COMMIT, ROLLBACK instead. The transaction has ended, one way
    or the other, when the call returns or raises."""

    def __init__(
        self, work: Callable[[DriverTransaction], T], compile: Callable[[ClauseElement], DriverStatement]
    ) -> None:
        self._work = work
        self._compile = compile
        self._abandoned = False
        self.transaction: DriverTransaction | None = None

    def abandon(self) -> None:
        # Read by the driver's thread before COMMIT: a cancelled request commits nothing it had not committed yet.
        self._abandoned = True

    def __call__(self, connection: sqlite3.Connection) -> T:
        self.transaction = transaction = DriverTransaction(connection, self._compile)
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = self._work(transaction)
            if self._abandoned:
                raise _Abandoned()
            transaction.statement = "COMMIT"
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                # A failed ROLLBACK must not hide the error: the pool's reset at checkin rolls back again.
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            raise
        return result


class _Abandoned(Exception):
    """The caller was cancelled before COMMIT (it raises its CancelledError, not this)."""
