"""A real PostgreSQL server for tests, as `.ci/run` provides it.

`.ci/run` starts a throwaway cluster and exports:

- ``SYNCHOOK_TEST_POSTGRES_URL``: ``postgresql+asyncpg://postgres@127.0.0.1:PORT/synchook_test``
- ``SYNCHOOK_TEST_POSTGRES_BIN``: the directory holding ``pg_ctl``
- ``SYNCHOOK_TEST_POSTGRES_DATA``: the cluster's data directory
- ``SYNCHOOK_TEST_POSTGRES_LOG``: the server's log file (optional)

Without the URL, PostgreSQL tests skip locally; under CI (``CI`` set) they fail instead,
so a broken CI set-up cannot pass by skipping them.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

URL_ENV = "SYNCHOOK_TEST_POSTGRES_URL"
BIN_ENV = "SYNCHOOK_TEST_POSTGRES_BIN"
DATA_ENV = "SYNCHOOK_TEST_POSTGRES_DATA"
LOG_ENV = "SYNCHOOK_TEST_POSTGRES_LOG"

# The database every server has, to create and drop others from.
ADMIN_DATABASE = "postgres"

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def postgres_url() -> str | None:
    """The SQLAlchemy URL of the test database, or None when no server is configured."""
    return os.environ.get(URL_ENV) or None


def require_postgres() -> str:
    """The test database's URL; skips the test without one (fails under CI)."""
    url = postgres_url()
    if url is None:
        message = f"{URL_ENV} is not set: run the suite through .ci/run, or point it at a PostgreSQL database"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` on the same server, same driver and credentials."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def asyncpg_dsn(url: str) -> str:
    """A libpq/asyncpg DSN for a SQLAlchemy URL (``postgresql+asyncpg://`` -> ``postgresql://``)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {parts.scheme}://…")
    return urlunsplit(parts._replace(scheme="postgresql"))


def unique_name(prefix: str = "synchook_test") -> str:
    """A fresh database name, safe to create concurrently with other tests."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _quoted(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"unsafe database name: {name!r}")
    return f'"{name}"'


async def _admin_connection(base_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(asyncpg_dsn(with_database(base_url, ADMIN_DATABASE)), timeout=30)


async def create_database(base_url: str, name: str) -> str:
    """Creates database `name` on `base_url`'s server and returns its SQLAlchemy URL."""
    conn = await _admin_connection(base_url)
    try:
        await conn.execute(f"CREATE DATABASE {_quoted(name)}")
    finally:
        await conn.close()
    return with_database(base_url, name)


async def drop_database(base_url: str, name: str) -> None:
    """Drops database `name` on `base_url`'s server, disconnecting whoever still uses it."""
    conn = await _admin_connection(base_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")
    finally:
        await conn.close()


# Chaos tests: stop, start and restart the server under the running suite.


def _pg_ctl(*args: str, timeout: float) -> None:
    bin_dir = os.environ.get(BIN_ENV)
    data = os.environ.get(DATA_ENV)
    if not bin_dir or not data:
        pytest.skip(f"{BIN_ENV} and {DATA_ENV} are needed to control the PostgreSQL server")
    command = [str(Path(bin_dir) / "pg_ctl"), "-D", data, *args]
    # pg_ctl refuses to run as root: run it as the data directory's owner.
    if os.geteuid() == 0:
        owner = pwd.getpwuid(Path(data).stat().st_uid).pw_name
        command = ["runuser", "-u", owner, "--", *command]
    # stdout and stderr go to a file or nowhere, never to a pipe: a server started by
    # pg_ctl inherits them, and a pipe would stay open for as long as the server lives.
    subprocess.run(
        command,
        check=True,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=timeout,
    )


def _log_file() -> str:
    data = os.environ.get(DATA_ENV, "")
    return os.environ.get(LOG_ENV) or str(Path(data).parent / "postgres.log")


def stop_postgres(*, mode: str = "fast", timeout: float = 60) -> None:
    """Stops the server (`mode`: smart, fast or immediate) and waits until it is down."""
    _pg_ctl("stop", "-m", mode, "-w", "-t", str(int(timeout)), timeout=timeout + 10)


def start_postgres(*, timeout: float = 60) -> None:
    """Starts the server and waits until it accepts connections."""
    _pg_ctl("start", "-l", _log_file(), "-w", "-t", str(int(timeout)), timeout=timeout + 10)


def restart_postgres(*, mode: str = "fast", timeout: float = 60) -> None:
    """Restarts the server, dropping every connection, and waits until it accepts new ones."""
    _pg_ctl("restart", "-m", mode, "-l", _log_file(), "-w", "-t", str(int(timeout)), timeout=timeout + 10)


async def fetch(database_url: str, query: str, *args: object) -> list[asyncpg.Record]:
    """Rows of one query on its own connection: what a test reads behind the processes it runs."""
    # A bounded connect: chaos tests read while PostgreSQL restarts.
    conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def blocked_on_a_lock(engine: AsyncEngine, *, waiting_for: str) -> None:
    """Wait (bounded) until another backend of ``engine``'s database waits for a lock; ``waiting_for`` names what
    should be waiting, for the error if nothing ever does."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    for _ in range(500):
        async with engine.connect() as conn:
            if await conn.scalar(query):
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{waiting_for} never waited for a lock")
