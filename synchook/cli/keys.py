"""`synchook keys create | list | revoke`: API keys."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

from redis.asyncio import Redis

from synchook.auth import service as auth
from synchook.auth.cache import KEY_CACHE_SECONDS
from synchook.cli.common import CliError, with_db
from synchook.db import Database
from synchook.settings import Settings
from synchook.timeutil import isoformat


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> None:
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

    with_db(settings, work)


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> None:
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

    with_db(settings, work)


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> None:
    async def work(db: Database) -> None:
        redis = (
            Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
            if settings.redis_url
            else None
        )
        try:
            done = await auth.revoke(db, redis, key_id=args.key_id)
        finally:
            if redis is not None:
                await redis.aclose()
        key = done.key
        # Revoking is idempotent (exit 0, as `systemctl stop` of a stopped unit): the key ends up revoked either way.
        print(f"revoked {key.id}" if done.newly else f"{key.id} was already revoked at {isoformat(key.revoked_at)}")
        if done.newly and not done.announced:
            why = "Redis did not answer" if redis is not None else "SYNCHOOK_REDIS_URL is not set here"
            print(
                f"note: {why}: API processes may accept the key for up to {KEY_CACHE_SECONDS:g} more seconds",
                file=sys.stderr,
            )

    with_db(settings, work)


def register(sub: Any) -> None:
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
    k_revoke.set_defaults(func=cmd_keys_revoke, dev_redis=True)
