"""The `synchook` command line (composition root): processes, workspaces, keys, secrets."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

import webhooks.cli
from synchook import logs
from synchook.auth import service as auth
from synchook.crypto import generate_master_key
from synchook.db import Database
from synchook.errors import DomainError
from synchook.http.bodies import error_message
from synchook.root import migrate
from synchook.settings import DEFAULT_DATA_DIR, Settings
from synchook.timeutil import isoformat


class CliError(Exception):
    pass


def load_settings(*, dev_redis: bool = False) -> Settings:
    """Environment settings; outside `dev`, the dev secret file is used only when it exists and nothing is set.

    ``dev_redis`` (commands that enqueue): without SYNCHOOK_REDIS_URL, the embedded Redis of a `synchook dev`
    running in this directory, so its worker gets the job at once.
    """
    overrides: dict[str, Any] = {}
    dev_secret = DEFAULT_DATA_DIR / "secret.key"
    if "SYNCHOOK_SECRET_KEY" not in os.environ and dev_secret.exists():
        overrides["secret_key"] = dev_secret.read_text().strip()
    if dev_redis and "SYNCHOOK_REDIS_URL" not in os.environ:
        from synchook.root.dev import running_dev_redis_url

        if dev_url := running_dev_redis_url(DEFAULT_DATA_DIR):
            overrides["redis_url"] = dev_url
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        name = "SYNCHOOK_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise CliError(f"invalid setting {name}: {error_message(first)}") from None


def require_production(settings: Settings) -> None:
    if not settings.redis_url:
        raise CliError("SYNCHOOK_REDIS_URL is required (use `synchook dev` for an embedded Redis)")
    if settings.secret_key is None:
        raise CliError("SYNCHOOK_SECRET_KEY is required (generate one with `synchook secrets generate`)")


def _with_db(settings: Settings, work: Callable[[Database], Awaitable[None]]) -> None:
    async def run() -> None:
        db = Database(settings.database_url)
        try:
            await work(db)
        finally:
            await db.close()

    asyncio.run(run())


def cmd_migrate(args: argparse.Namespace) -> None:
    settings = load_settings()
    migrate.upgrade(settings.database_url)
    print("database is up to date")


def cmd_dev(args: argparse.Namespace) -> None:
    from synchook.root.dev import PortUnavailable, dev_settings, run_dev

    try:
        settings = dev_settings(host=args.host, port=args.port)
    except PortUnavailable as exc:
        raise CliError(str(exc)) from None
    logs.configure(settings.log_format)
    _run_loop(run_dev(settings))


def cmd_api(args: argparse.Namespace) -> None:
    import uvicorn

    from synchook.root.app import create_app

    settings = load_settings()
    require_production(settings)
    logs.configure(settings.log_format)
    app = create_app(settings)
    _freeze_startup_heap()
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.delivery_timeout) + 5,
    )


def cmd_worker(args: argparse.Namespace) -> None:
    from synchook.root.worker import run_worker

    settings = load_settings()
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


def cmd_workspaces_create(args: argparse.Namespace) -> None:
    async def work(db: Database) -> None:
        async with db.session() as session:
            workspace = await auth.create_workspace(session, name=args.name)
        print(workspace.id)

    _with_db(load_settings(), work)


def cmd_workspaces_list(args: argparse.Namespace) -> None:
    from sqlalchemy import select

    from synchook.auth.models import Workspace

    async def work(db: Database) -> None:
        async with db.session() as session:
            for ws in (await session.execute(select(Workspace).order_by(Workspace.id))).scalars():
                print(f"{ws.id}\t{ws.name}\t{isoformat(ws.created_at)}")

    _with_db(load_settings(), work)


def cmd_keys_create(args: argparse.Namespace) -> None:
    if args.expires_in is not None and args.expires_in <= 0:
        raise CliError("--expires-in must be a positive number of days")

    async def work(db: Database) -> None:
        async with db.session() as session:
            workspace = await auth.find_workspace(session, name_or_id=args.workspace)
            expires = timedelta(days=args.expires_in) if args.expires_in is not None else None
            key, raw = await auth.create_key(
                session,
                workspace_id=workspace.id,
                scopes=auth.parse_scopes(args.scopes),
                expires_in=expires,
                name=args.name,
            )
        print(key.id)
        print(f"scopes: {','.join(key.scopes)}  expires: {isoformat(key.expires_at) or 'never'}")
        print("This key is shown once; store it now:")
        print(raw)

    _with_db(load_settings(), work)


def cmd_keys_list(args: argparse.Namespace) -> None:
    async def work(db: Database) -> None:
        async with db.session() as session:
            workspace = await auth.find_workspace(session, name_or_id=args.workspace)
            keys = await auth.list_keys(session, workspace_id=workspace.id)
        print("id\tprefix\tscopes\tcreated_at\texpires_at\tstatus")
        for key in keys:
            status = "revoked" if key.revoked_at else "active"
            print(
                f"{key.id}\t{key.prefix}…\t{','.join(key.scopes)}\t{isoformat(key.created_at)}\t"
                f"{isoformat(key.expires_at) or '-'}\t{status}"
            )

    _with_db(load_settings(), work)


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    async def work(db: Database) -> None:
        async with db.session() as session:
            key = await auth.revoke_key(session, key_id=args.key_id)
            already = not session.is_modified(key)
        # Revoking is idempotent (exit 0, as `systemctl stop` of a stopped unit): the key ends up revoked either way.
        print(f"{key.id} was already revoked at {isoformat(key.revoked_at)}" if already else f"revoked {key.id}")

    _with_db(load_settings(), work)


def cmd_secrets_generate(args: argparse.Namespace) -> None:
    print(generate_master_key())


def cmd_secrets_rotate(args: argparse.Namespace) -> None:
    from synchook.root.reseal import reseal_everything

    settings = load_settings()
    counts = asyncio.run(reseal_everything(settings))
    for name, count in counts.items():
        # Skipped rows were being written while we tried (a token refresh, a rotation): run the command again.
        skipped = f", skipped {count.skipped} written meanwhile (run again)" if count.skipped else ""
        print(f"{name}: re-encrypted {count.changed}{skipped}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synchook", description="Calendar sync webhooks, signed and never lost.")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="API + worker + embedded Redis + SQLite, for a laptop")
    dev.add_argument("--host", default=None)
    dev.add_argument("--port", type=int, default=None)
    dev.set_defaults(func=cmd_dev)

    api = sub.add_parser("api", help="serve the HTTP API (production)")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="run a worker (production; run any number)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(func=cmd_worker)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    workspaces = sub.add_parser("workspaces", help="manage workspaces").add_subparsers(dest="action", required=True)
    ws_create = workspaces.add_parser("create", help="create a workspace and print its id")
    ws_create.add_argument("name")
    ws_create.set_defaults(func=cmd_workspaces_create)
    workspaces.add_parser("list", help="list workspaces").set_defaults(func=cmd_workspaces_list)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    k_create = keys.add_parser("create", help="create a key; prints its id, then the key (once) as the last line")
    k_create.add_argument("--workspace", required=True)
    k_create.add_argument("--scopes", required=True, help="comma-separated, e.g. read:calendar,write:calendar")
    k_create.add_argument("--expires-in", type=float, default=None, metavar="DAYS")
    k_create.add_argument("--name", default=None)
    k_create.set_defaults(func=cmd_keys_create)
    k_list = keys.add_parser("list", help="list a workspace's keys")
    k_list.add_argument("--workspace", required=True)
    k_list.set_defaults(func=cmd_keys_list)
    k_revoke = keys.add_parser("revoke", help="revoke a key")
    k_revoke.add_argument("key_id")
    k_revoke.set_defaults(func=cmd_keys_revoke)

    secrets = sub.add_parser("secrets", help="master keys").add_subparsers(dest="action", required=True)
    secrets.add_parser("generate", help="print a new SYNCHOOK_SECRET_KEY value").set_defaults(func=cmd_secrets_generate)
    secrets.add_parser(
        "rotate", help="re-encrypt every stored secret under the first SYNCHOOK_SECRET_KEY entry"
    ).set_defaults(func=cmd_secrets_rotate)

    for extend in EXTENSIONS:
        extend(sub)
    return parser


# Domain commands (deliveries, replay) register here from the composition root.
EXTENSIONS: list[Callable[[Any], None]] = [webhooks.cli.register]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
        sys.stdout.flush()  # here, so a reader gone away (`| head`) is a BrokenPipeError below, not at exit
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (CliError, DomainError) as exc:
        message = exc.message if isinstance(exc, DomainError) else str(exc)
        print(f"synchook: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _quiet_broken_pipe() -> int:
    """`synchook deliveries list | head`: the reader has all it wanted. Exit as a SIGPIPE'd tool does, quietly."""
    # Python flushes stdout again at exit and would print "Exception ignored … BrokenPipeError": point it at null.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE  # 141, as a shell reports for `yes | head`


if __name__ == "__main__":
    sys.exit(main())
