"""Shared fixtures: a real Redis, real SQLite (and PostgreSQL when CI provides it), real HTTP on port 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from arq.connections import ArqRedis
from arq.worker import Worker
from sqlalchemy import event, text
from sqlalchemy.orm import ORMExecuteState, Session

from synchook.context import AppContext
from synchook.crypto import generate_master_key
from synchook.http.server import HttpProtocol
from synchook.queue import EmbeddedRedis, connect
from synchook.root import migrate
from synchook.root.app import create_app
from synchook.root.models import metadata
from synchook.root.worker import build_worker, close_worker
from synchook.settings import Settings
from tests.support.postgres import create_database, drop_database, postgres_url, unique_name

BACKENDS = ["sqlite", "postgres"]
HEAVY_ENV = "SYNCHOOK_CHAOS_HEAVY"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heavy variants (chaos, 10,000-request bursts) run only under `make chaos` or when `-m` names `heavy`."""
    if os.environ.get(HEAVY_ENV) == "1" or "heavy" in (config.getoption("-m") or "").replace("not heavy", ""):
        return
    skip = pytest.mark.skip(reason=f"heavy variant: set {HEAVY_ENV}=1 or run `make chaos`")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


# --- Redis ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[ArqRedis]:
    pool = await connect(redis_server.url)
    await pool.flushall()
    yield pool
    await pool.aclose()


# --- Databases -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db-template") / "template.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_migrated() -> Iterator[str | None]:
    """A database of its own per pytest session (sessions may run side by side), migrated once."""
    base = postgres_url()
    if base is None:
        yield None
        return
    name = unique_name()
    url = asyncio.run(create_database(base, name))
    migrate.upgrade(url)
    yield url
    asyncio.run(drop_database(base, name))


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path, postgres_migrated: str | None
) -> str:
    if request.param == "sqlite":
        path = tmp_path / "synchook.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    if postgres_migrated is None:
        pytest.skip("PostgreSQL not provided (set SYNCHOOK_TEST_POSTGRES_URL; .ci/run does)")
    asyncio.run(_truncate_all(postgres_migrated))
    return postgres_migrated


async def _truncate_all(url: str) -> None:
    from synchook.db import create_engine

    engine = create_engine(url, pool_size=1)
    tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await engine.dispose()


# --- Settings and context ------------------------------------------------------------------------


@pytest.fixture
def orm_executes() -> Iterator[list[str]]:
    """Statements run through an ORM session (any) while the test runs: the type of each (Select, Insert...)."""
    seen: list[str] = []

    def record(state: ORMExecuteState) -> None:
        seen.append(type(state.statement).__name__)

    event.listen(Session, "do_orm_execute", record)
    yield seen
    event.remove(Session, "do_orm_execute", record)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change settings for its tests."""
    return {}


@pytest.fixture
def settings(database_url: str, redis_server: EmbeddedRedis, settings_overrides: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_server.url,
        "secret_key": generate_master_key(),
        "allow_private_targets": True,
        "retry_schedule": (0, 0.2, 0.4),
        "delivery_timeout": 2.0,
        "log_format": "text",
        "relay_grace_seconds": 0.0,
        "worker_poll_delay": 0.01,
        # No test reaches a real provider: refused loopback ports fail fast unless a test points at the fakes.
        "google_api_url": "http://127.0.0.1:9",
        "google_token_url": "http://127.0.0.1:9/token",
        "microsoft_graph_url": "http://127.0.0.1:9/v1.0",
        "microsoft_token_url": "http://127.0.0.1:9/token",
        "max_throttle_wait": 2.0,
    }
    values.update(settings_overrides)
    return Settings(**values)


@pytest.fixture
async def app_ctx(settings: Settings, redis: ArqRedis) -> AsyncIterator[AppContext]:
    ctx = await AppContext.open(settings, redis=redis)
    yield ctx
    await ctx.db.close()


# --- HTTP: a real server on port 0 ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(app: Any, *, http: Any = HttpProtocol) -> AsyncIterator[str]:
    """``app`` served as `synchook api` serves it (its HTTP protocol), on a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", access_log=False, http=http))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def api_url(settings: Settings, app_ctx: AppContext) -> AsyncIterator[str]:
    async with serve(create_app(settings, context=app_ctx)) as url:
        yield url


@pytest.fixture
async def client(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        yield http


# --- Worker --------------------------------------------------------------------------------------


WorkerFactory = Callable[..., Worker]


@pytest.fixture
async def make_worker(settings: Settings, redis: ArqRedis) -> AsyncIterator[WorkerFactory]:
    made: list[Worker] = []

    def factory(**kwargs: Any) -> Worker:
        kwargs.setdefault("burst", True)
        kwargs.setdefault("handle_signals", False)
        kwargs.setdefault("with_cron", False)
        worker = build_worker(kwargs.pop("settings", settings), redis=redis, **kwargs)
        made.append(worker)
        return worker

    yield factory
    for worker in made:
        # Not worker.close(): a job cancelled with the worker's main task would re-raise its cancellation.
        await close_worker(worker)


@pytest.fixture
async def run_worker(make_worker: WorkerFactory) -> Callable[..., Awaitable[Worker]]:
    """Drain the queue once with a burst worker (cron jobs off unless asked)."""

    async def run(**kwargs: Any) -> Worker:
        worker = make_worker(**kwargs)
        await worker.main()
        return worker

    return run
