"""`synchook dev | api | worker | migrate`: the long-running processes and the schema."""

from __future__ import annotations

import argparse
import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

from synchook import logs
from synchook.cli.common import CliError
from synchook.root import migrate
from synchook.settings import Settings


def require_production(settings: Settings) -> None:
    if not settings.redis_url:
        raise CliError("SYNCHOOK_REDIS_URL is required (use `synchook dev` for an embedded Redis)")
    if settings.secret_key is None:
        raise CliError("SYNCHOOK_SECRET_KEY is required (generate one with `synchook secrets generate`)")


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    migrate.upgrade(settings.database_url)
    print("database is up to date")


def cmd_dev(args: argparse.Namespace, _settings: None) -> None:
    from synchook.root.dev import PortUnavailable, dev_settings, run_dev

    try:
        settings = dev_settings(host=args.host, port=args.port)
    except PortUnavailable as exc:
        raise CliError(str(exc)) from None
    logs.configure(settings.log_format)
    _run_loop(run_dev(settings))


def cmd_api(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from synchook.http.server import HttpProtocol
    from synchook.root.app import create_app

    require_production(settings)
    logs.configure(settings.log_format)
    app = create_app(settings)
    _freeze_startup_heap()
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        http=HttpProtocol,  # each response in one write (synchook.http.server)
        log_config=None,
        # Our middleware logs every request (synchook.http); uvicorn's access logger sits at WARNING
        # (synchook.logs) and never wrote a line, but it still built each line's arguments.
        access_log=False,
        timeout_graceful_shutdown=int(settings.delivery_timeout) + 5,
    )


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    from synchook.root.worker import run_worker

    require_production(settings)
    logs.configure(settings.log_format)
    _freeze_startup_heap()
    _run_loop(run_worker(settings, burst=args.burst))


# Collect the youngest generation after this many net allocations, not CPython's 700. Almost all of a
# worker's garbage is freed by reference counting; what the collector was doing was walking live
# objects: a fan-out allocating 2,000 rows set off a few young collections, and their survivors
# full ones. In (a) that was 8.5 % of each worker's wall time (140-190 ms per 2 s, 3-4 full
# collections); at 50,000 it is 2-4 ms. Cycles are still collected, at most 50,000 allocations late.
GC_THRESHOLDS = (50_000, 20, 100)


def _freeze_startup_heap() -> None:
    """Take what imports and start-up built (modules, SQLAlchemy's mappers and metadata, settings) out of
    the garbage collector's reach: it lives as long as the process, and a full collection that walks it
    is a pause on the commit-to-receipt path. Then collect rarely (GC_THRESHOLDS)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _run_loop(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


def register(sub: Any) -> None:
    dev = sub.add_parser("dev", help="API + worker + embedded Redis + SQLite, for a laptop")
    dev.add_argument("--host", default=None)
    dev.add_argument("--port", type=int, default=None)
    dev.set_defaults(func=cmd_dev, needs_settings=False)  # it builds its own (dev_settings)

    api = sub.add_parser("api", help="serve the HTTP API (production)")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="run a worker (production; run any number)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(func=cmd_worker)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
