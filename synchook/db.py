"""The async database: one engine per process, SQLite (embedded) or PostgreSQL (production)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import ARRAY, DateTime, any_, bindparam, event, exc, text
from sqlalchemy.engine import CursorResult, Dialect, Result, Row, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import NullType, TypeDecorator
from sqlalchemy.util import await_only, greenlet_spawn

from synchook.sqlite.datetimes import sqlite_datetime, sqlite_text
from synchook.sqlite.driver import DriverStatement, DriverTransaction, OneCall
from synchook.sqlite.engine import create_sqlite_engine, sqlite_file, sqlite_write_lock
from synchook.timeutil import as_utc


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite (which stores naive text) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)

    # SQLite stores text: synchook.sqlite.datetimes writes and reads it in one step each.
    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        return sqlite_text if dialect.name == "sqlite" else super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], datetime | None] | None:
        return sqlite_datetime if dialect.name == "sqlite" else super().result_processor(dialect, coltype)


class unindexed(ColumnElement[Any]):
    """The column, but not for the planner to pick an index on.

    Both planners went wrong the same way on ``id IN (200 ids) AND status IN (...) AND next_attempt_at
    <= now``: SQLite (no statistics) and PostgreSQL (statistics from when the table was small, or a
    backlog that grew since the last ANALYZE) chose the (status, next_attempt_at) index over the
    primary key and read every open row, so a claim's cost grew with the backlog (156 ms per claim
    of 200 on PostgreSQL at 100k open rows). Wrapping the other terms leaves the primary key as the
    only index: ``+column`` is SQLite's own idiom, ``COALESCE(column, column)`` is the same value for
    PostgreSQL, which matches no index expression.
    """

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(unindexed)
def _compile_unindexed(element: unindexed, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    return f"COALESCE({column}, {column})"


@compiles(unindexed, "sqlite")
def _compile_unindexed_sqlite(element: unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + str(compiler.process(element.column, **kw))


class among(ColumnElement[Any]):
    """``column IN (values)``; on PostgreSQL ``column = ANY($1)``, one array parameter.

    SQLAlchemy renders an ``IN`` list as one parameter per value, so each list length is another SQL
    text: asyncpg prepared (parsed, planned) the claim, the body and subscription loads and the
    recorder's owner query again for almost every batch, and encoded and cast 200 ids one by one
    (profile of a worker in (a) on PostgreSQL: 5 % of its samples expanding the lists, 2 % preparing).
    With one array the text never changes: prepared once per connection. Both forms are kept in the
    element, so both bound values are in its cache key; each dialect renders its own.
    """

    inherit_cache = True
    _traverse_internals = [
        ("listed", InternalTraversal.dp_clauseelement),
        ("array", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], values: Iterable[Any]) -> None:
        values = list(values)
        self.listed = column.in_(values)
        self.array = column == any_(bindparam(None, values, type_=ARRAY(column.type)))
        self.type = NullType()  # no "= 1" added on SQLite, which would keep the primary key from being used


@compiles(among)
def _compile_among(element: among, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.listed, **kw))


@compiles(among, "postgresql")
def _compile_among_postgresql(element: among, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.array, **kw))


def among_bound(column: ColumnElement[Any], name: str, *, postgres: bool) -> ColumnElement[bool]:
    """``among`` with the values bound at execution (``{name: [...]}``), for a statement built once per database
    kind: SQLAlchemy builds a statement's cache key once per statement object, and building a hot statement and its
    key for every batch cost a worker ~0.2-0.6 ms each time (see webhooks.delivery.claim)."""
    if postgres:
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


_PLAN_FOR_VALUES = text("SET LOCAL plan_cache_mode = force_custom_plan")


async def plan_for_values(session: AsyncSession) -> None:
    """On PostgreSQL, plan the rest of the session's transaction for the values each statement is given, so that a
    statement whose best plan depends on which rows its values select never runs on a generic plan cached for the
    connection. Said once per transaction; nothing on SQLite, which plans every statement anew.

    A prepared statement's generic plan is made from the statistics of its day and kept until its tables are
    next analyzed. One made while a table was small (a fresh install, the first minutes of a tenant's import)
    can walk a whole index once the table has grown 1,000 times, for every call until autovacuum comes round. A
    plan for the values costs a few tenths of a millisecond of planning, and sizes tables as they are now.
    """
    connection = await session.connection()
    if connection.dialect.name != "postgresql":
        return
    transaction = connection.get_transaction()
    if connection.info.get("plans_for_values_in") is transaction:
        return
    await session.execute(_PLAN_FOR_VALUES)
    connection.info["plans_for_values_in"] = transaction


# Bound parameters are webhook URLs, sealed secrets, provider tokens, payloads: SQLAlchemy must never put them
# in an exception's text (which error handlers log) or in its own log lines.
HIDE_PARAMETERS = True


# A pooled PostgreSQL connection idle at least this long is pinged before use; one in steady use is not.
IDLE_PING_AFTER = 5.0


# PostgreSQL connections a process keeps: at most this many, and once opened they are kept. The pool was 10 plus
# 10 overflow, the same peak, but an overflow connection is closed as soon as it is returned to a full pool: under
# concurrent requests the API opened and closed connections continuously (3-10 % of its samples in (e), and a
# server backend started for each).
POOL_SIZE = 20


# Checkout takes the connection returned last (LIFO), not the one idle longest (FIFO, SQLAlchemy's default): with
# up to 20 pooled connections and work arriving one unit at a time, FIFO went round all of them, so each one
# prepared every statement for itself (asyncpg's per-connection statement cache) and any that sat 5 s was pinged.
# LIFO keeps the few connections that the current load needs warm; the rest sit unused until a burst needs them.
POOL_USE_LIFO = True


# Set on each PostgreSQL connection of ours. The hot statements look rows up by arrays of ids (``= ANY``,
# ``unnest``) as prepared statements, so PostgreSQL plans them once for an array of unknown length; with its
# spinning-disk default of 4 for a random page it then chose a sequential scan of ``deliveries`` whenever the
# table was a few thousand rows (a fresh install, the first minutes of load): every relay batch compared each
# row with each id, 2-20 ms a statement and growing with the table (a third of PostgreSQL's time at 2,000
# events/s). 1.1 is the usual value for SSD-backed and cloud servers, and makes those plans index probes.
POSTGRES_SESSION_SETTINGS = {"random_page_cost": "1.1"}


def create_engine(url: str, *, pool_size: int = POOL_SIZE, inline_sqlite: bool = False) -> AsyncEngine:
    if url.startswith("sqlite"):
        return create_sqlite_engine(url, inline=inline_sqlite, hide_parameters=HIDE_PARAMETERS)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_use_lifo=POOL_USE_LIFO,
        hide_parameters=HIDE_PARAMETERS,
        connect_args={"server_settings": POSTGRES_SESSION_SETTINGS},
    )
    ping_after_idle(engine, IDLE_PING_AFTER)
    return engine


def ping_after_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """Ping a pooled connection at checkout only if it sat in the pool ``idle_seconds`` or more.

    ``pool_pre_ping`` pinged at every checkout: a round trip before each unit of work, the API's largest
    cost after its queries (a request opens one or two). What it guards against is a connection that died
    while it sat unused (a server restart, an idle timeout on the way): that is what is still pinged. A
    connection in steady use that the server drops fails at its first statement instead, as a connection
    error: the API answers 503 ``unavailable`` with Retry-After, the worker's steps retry, and SQLAlchemy
    then invalidates the whole pool, so each process sees at most that one failure per restart.
    """
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < idle_seconds:
            return  # new, or back from work a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            if dialect.is_disconnect(error, dbapi_connection, None):  # type: ignore[arg-type]
                # The pool drops this connection and checks out another (a new one if need be).
                raise exc.DisconnectionError() from error
            raise


T = TypeVar("T")


def _first(result: Result[Any]) -> Row[Any] | None:
    return result.first()


def _rowcount(result: Result[Any]) -> int:
    return cast("CursorResult[Any]", result).rowcount


def _all(result: Result[Any]) -> list[Row[Any]]:
    return list(result.all())


class Database:
    """Engine plus session factory; `session()` is a unit of work that commits or rolls back."""

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE, inline_sqlite: bool = False) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size, inline_sqlite=inline_sqlite)
        # The bare factory: no SQLite write lock. Product code opens units of work with session().
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, class_=AsyncSession)
        # Every SQLite session is a write transaction (BEGIN IMMEDIATE): they queue on this lock.
        self._sqlite_lock = sqlite_write_lock(url)
        self._reader = _reader_engine(url, self.engine)
        self._reads = async_sessionmaker(self._reader, expire_on_commit=False, class_=AsyncSession)
        self._driver_statements: dict[ClauseElement, DriverStatement] = {}  # sqlite_transaction's, compiled

    def __repr__(self) -> str:
        return f"Database({make_url(self.url).render_as_string(hide_password=True)!r})"

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sqlite_lock or contextlib.nullcontext(), self.sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only, outside any transaction: each statement sees what was committed when it ran.

        For reads of one statement (or several that need no common snapshot): an API key lookup, one row by
        id. No BEGIN and COMMIT round trips on PostgreSQL; on SQLite no write lock and no BEGIN IMMEDIATE, so
        readers run beside the one writer (WAL) instead of queueing behind it. Nothing may be written here
        (SQLite refuses: query_only).
        """
        # In-memory SQLite: one database per connection, no reader of its own; an ordinary session.
        in_memory = self._reader is self.engine and self.dialect == "sqlite"
        async with self._outside_transaction(unless=in_memory) as session:
            yield session

    @contextlib.asynccontextmanager
    async def read_rows(self) -> AsyncIterator[AsyncConnection]:
        """As :meth:`read`, a Core connection instead of an ORM session, for reads answered from rows.

        A one-row GET spent about a third of its CPU in the session around its one SELECT: setting it up, taking
        its connection, loading the object, closing it. Statements here are Core (table columns): rows, no objects.
        """
        if self._reader is self.engine and self.dialect == "sqlite":
            # In-memory SQLite: one database per connection, shared with the writers; read under their lock.
            async with self._sqlite_lock or contextlib.nullcontext(), self.engine.connect() as connection:
                yield connection
            return
        async with self._reader_connection() as connection:
            yield connection

    async def first_row(self, statement: Executable, params: Mapping[str, Any]) -> Row[Any] | None:
        """The first row of one read statement, through :meth:`read_rows`'s connection, or None.

        Connecting, executing and closing each crossed from the loop to SQLAlchemy's synchronous side and back (a
        greenlet switch pair, an AsyncConnection around it): here the three run in one crossing. The row is read
        whole before the connection goes back to its pool.
        """
        if self._reader is self.engine and self.dialect == "sqlite":
            async with self.read_rows() as connection:  # in-memory SQLite: under the writers' lock
                return (await connection.execute(statement, params)).first()
        return await greenlet_spawn(self._first_row, statement, params)

    def _first_row(self, statement: Executable, params: Mapping[str, Any]) -> Row[Any] | None:
        if self.dialect == "sqlite":
            with self._reader.sync_engine.connect() as connection:
                return connection.execute(statement, params).first()
        return self._in_autocommit(statement, params, _first)

    async def write(self, statement: Executable, params: Mapping[str, Any]) -> int:
        """One statement that writes, atomic on its own (as :meth:`single_statement`); its row count.

        PostgreSQL: connecting, executing and closing in one crossing to SQLAlchemy's synchronous side, in
        autocommit (as :meth:`first_row`), where :meth:`single_statement` crossed three times through the reader
        engine, whose connections dispatch their events. SQLite: the ordinary unit of work.
        """
        return await self._write(statement, params, _rowcount)

    async def write_rows(self, statement: Executable, params: Mapping[str, Any]) -> list[Row[Any]]:
        """As :meth:`write`, the rows its RETURNING gives."""
        return await self._write(statement, params, _all)

    async def _write(self, statement: Executable, params: Mapping[str, Any], read: Callable[[Result[Any]], T]) -> T:
        if self.dialect == "sqlite":
            async with self.single_statement() as connection:
                return read(await connection.execute(statement, params))
        return await greenlet_spawn(self._in_autocommit, statement, params, read)

    def _in_autocommit(self, statement: Executable, params: Mapping[str, Any], read: Callable[[Result[Any]], T]) -> T:
        """PostgreSQL, on SQLAlchemy's synchronous side: one statement on a pooled connection in autocommit, what
        ``read`` takes from its result before the connection goes back.

        Autocommit is set on this connection, not through the reader engine's options. An engine with options
        listens to its connections' events (to set the isolation level at each checkout), so every connection of it
        dispatched its events (connect, before/after execute, begin, rollback): ~5 % of a GET.
        """
        with self.engine.sync_engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            return read(connection.execute(statement, params))

    async def driver_row(self, sql: str, args: Sequence[Any]) -> Mapping[str, Any] | None:
        """PostgreSQL: one statement (``$1``… parameters) on the pool's asyncpg connection itself, in autocommit (its
        own transaction), and its first row, or None.

        For the API's hottest write (`POST /v1/calendar/sync`'s call): SQLAlchemy's execution around one statement
        of 16 parameters (the compiled cache's lookup, bind and result processing, the adapter's cursor) cost 490
        µs of CPU a call against 220 µs for the pool's checkout, asyncpg's own call and the checkin. The caller
        passes values as the driver takes them (aware datetimes, JSON as text, as SQLAlchemy's asyncpg dialect
        sets the connection's codecs). Errors are raised as SQLAlchemy's execution raises them, and a disconnect
        invalidates the pool as it does (:meth:`_driver_error`).
        """
        if self.dialect != "postgresql":
            raise RuntimeError("driver_row is PostgreSQL's")
        return await greenlet_spawn(self._driver_row, sql, args)

    def _driver_row(self, sql: str, args: Sequence[Any]) -> Mapping[str, Any] | None:
        pooled = self.engine.sync_engine.pool.connect()  # the pool's events (the idle ping) run as for any checkout
        try:
            driver = pooled.driver_connection
            if driver is None:  # a connection the pool invalidated meanwhile
                raise exc.InvalidatePoolError("the pool's connection is gone")
            row: Mapping[str, Any] | None = await_only(driver.fetchrow(sql, *args))
            return row
        except Exception as error:
            wrapped = self._driver_error(pooled, sql, args, error)
            if wrapped is error:
                raise
            raise wrapped from error
        finally:
            pooled.close()

    def _driver_error(self, pooled: Any, sql: str, args: Sequence[Any], error: Exception) -> Exception:
        """The driver's ``error`` (asyncpg's, sqlite3's) as SQLAlchemy's execution raises it (IntegrityError,
        OperationalError…, parameters hidden as the engine hides them); on a disconnect the pool is invalidated as
        SQLAlchemy does: this connection dropped, the others opened before it replaced at their next checkout (a
        restart killed them)."""
        dialect = self.engine.sync_engine.dialect
        translated: Exception = error
        try:
            pooled.dbapi_connection._handle_exception(error)  # the adapter's translation: raises its DBAPI error
        except Exception as adapted:
            translated = adapted
        dbapi_error = dialect.loaded_dbapi.Error
        if isinstance(translated, dbapi_error):
            lost = dialect.is_disconnect(translated, pooled.dbapi_connection, None)
            wrapped: Exception = exc.DBAPIError.instance(
                sql,
                args,
                translated,
                dbapi_error,
                hide_parameters=self.engine.sync_engine.hide_parameters,
                connection_invalidated=lost,
                dialect=dialect,
            )
        else:
            lost, wrapped = is_connection_error(error), error
        if lost:
            self.engine.sync_engine.pool._invalidate(pooled, wrapped)
        return wrapped

    async def sqlite_transaction(self, work: Callable[[DriverTransaction], T]) -> T:
        """SQLite: ``work``'s statements as one write transaction (BEGIN IMMEDIATE … COMMIT, under the write lock) in
        one call to the pooled connection's aiosqlite thread (synchook.sqlite.driver); what ``work`` returns.

        ``work`` runs on that thread: it may only run statements through the DriverTransaction it is given. On any
        error the transaction is rolled back there, before the lock is released; errors are raised as SQLAlchemy's
        execution raises them (:meth:`_driver_error`). The pool's checkin (its reset hands a no-op ROLLBACK to the
        thread) comes after the lock is released: the lock is held for one hand-off.
        """
        if self.dialect != "sqlite":
            raise RuntimeError("sqlite_transaction is SQLite's")
        pooled = None
        try:
            async with self._sqlite_lock or contextlib.nullcontext():
                pooled = await greenlet_spawn(self.engine.sync_engine.pool.connect)
                return await self._in_one_call(pooled, work)
        finally:
            if pooled is not None:
                await greenlet_spawn(pooled.close)

    async def _in_one_call(self, pooled: Any, work: Callable[[DriverTransaction], T]) -> T:
        driver = pooled.driver_connection
        if driver is None:  # a connection the pool invalidated meanwhile
            raise exc.InvalidatePoolError("the pool's connection is gone")
        call = OneCall(work, self._driver_statement)
        try:
            # aiosqlite's own queue to its thread (InlineConnection runs it at once); `_conn` is its sqlite3 connection.
            result: T = await driver._execute(call, driver._conn)
            return result
        except asyncio.CancelledError:
            call.abandon()
            raise
        except Exception as error:
            statement = call.transaction.statement if call.transaction is not None else "BEGIN IMMEDIATE"
            wrapped = self._driver_error(pooled, statement, (), error)
            if wrapped is error:
                raise
            raise wrapped from error

    def _driver_statement(self, statement: ClauseElement) -> DriverStatement:
        # Compiled once per statement (on the driver's thread, under the write lock: one compiles at a time).
        compiled = self._driver_statements.get(statement)
        if compiled is None:
            compiled = self._driver_statements[statement] = DriverStatement.compile(statement, self.engine.dialect)
        return compiled

    @contextlib.asynccontextmanager
    async def single_statement(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection for one statement that writes, atomic on its own (an ``INSERT … SELECT``, a function).

        PostgreSQL: in autocommit, the statement is its own transaction, so no BEGIN and COMMIT round trips (three
        became one), and no ORM session around it. SQLite: the connection of an ordinary unit of work (its write
        lock, BEGIN IMMEDIATE, COMMIT). Nothing may be run here that needs a second statement to see the first's
        effect atomically.
        """
        if self.dialect == "sqlite":
            async with self.session() as session:
                yield await session.connection()
            return
        async with self._reader_connection() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def _reader_connection(self) -> AsyncIterator[AsyncConnection]:
        # PostgreSQL: the pool in autocommit; SQLite on a file: a reader (query_only) connection.
        # Closed here, as in _outside_transaction: AsyncConnection's own `async with` closes in a shielded task.
        connection = self._reader.connect()
        await connection.start()
        try:
            yield connection
        finally:
            await connection.close()

    @contextlib.asynccontextmanager
    async def _outside_transaction(self, *, unless: bool) -> AsyncIterator[AsyncSession]:
        """A session outside any transaction, or, ``unless`` so, the ordinary unit of work (:meth:`session`)."""
        if unless:
            async with self.session() as session:
                yield session
            return
        # Closed here, not by the session's own `async with`, which closes in a new task it shields (a task and
        # a turn of the loop per read, and meanwhile other requests took more connections from the pool). With
        # no transaction to end, closing does no I/O: it cannot be interrupted halfway.
        session = self._reads()
        try:
            yield session
        finally:
            await session.close()

    async def ping(self) -> None:
        from sqlalchemy import text

        async with self._sqlite_lock or contextlib.nullcontext(), self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        if self._reader.dialect.name == "sqlite" and self._reader is not self.engine:
            await self._reader.dispose()
        await self.engine.dispose()
        if self._sqlite_lock is not None:
            self._sqlite_lock.close()


def _reader_engine(url: str, engine: AsyncEngine) -> AsyncEngine:
    """What `Database.read()` reads through: PostgreSQL shares the pool, in autocommit (a statement is its own
    transaction, so no BEGIN/COMMIT round trips); SQLite on a file has reader connections of its own, inline.

    Inline (synchook.sqlite.inline) even in the API, which otherwise keeps aiosqlite's threads: a WAL reader takes
    no lock to wait on, and read() serves lookups of a row by a unique key, microseconds of SQLite. Through a thread
    each statement cost more than that in hand-offs (the thread, the GIL, waking the loop), and the readers' pool
    churned overflow connections, each a new thread, under concurrent requests."""
    if engine.dialect.name != "sqlite":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    if sqlite_file(url) is None:
        return engine
    return create_sqlite_engine(url, inline=True, hide_parameters=HIDE_PARAMETERS, reader=True)


# SQLSTATE classes meaning "the server is not there for you right now": 08 connection exceptions,
# 57P01-57P03 admin/crash shutdown and "the database system is starting up".
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def is_connection_error(error: BaseException) -> bool:
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, (OSError, ConnectionError, exc.InterfaceError)):
        return True
    if isinstance(error, exc.TimeoutError):
        # The connection pool stayed exhausted for pool_timeout: overload, answered 503 + Retry-After, not 500.
        return True
    if isinstance(error, exc.OperationalError) and "database is locked" in str(error.orig):
        # SQLite's form of the same overload: a writer waited out busy_timeout behind other writers.
        return True
    # SQLAlchemy wraps the driver's error (a generic DBAPIError for asyncpg's CannotConnectNowError while
    # PostgreSQL starts up): look through .orig and the cause chain for the driver's own exception.
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            break
        name = type(seen).__name__
        if name in {"CannotConnectNowError", "ConnectionDoesNotExistError", "PostgresConnectionError"}:
            return True
        if str(getattr(seen, "sqlstate", "") or "").startswith(_UNAVAILABLE_SQLSTATES):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return isinstance(error, exc.OperationalError) and "connect" in str(error).lower()
