"""`synchook workspaces create | list`."""

from __future__ import annotations

import argparse
from typing import Any

from synchook.auth import service as auth
from synchook.cli.common import with_db
from synchook.db import Database
from synchook.settings import Settings
from synchook.timeutil import isoformat


def cmd_workspaces_create(args: argparse.Namespace, settings: Settings) -> None:
    async def work(db: Database) -> None:
        async with db.session() as session:
            workspace = await auth.create_workspace(session, name=args.name)
        print(workspace.id)

    with_db(settings, work)


def cmd_workspaces_list(args: argparse.Namespace, settings: Settings) -> None:
    from sqlalchemy import select

    from synchook.auth.models import Workspace

    async def work(db: Database) -> None:
        async with db.session() as session:
            for ws in (await session.execute(select(Workspace).order_by(Workspace.id))).scalars():
                print(f"{ws.id}\t{ws.name}\t{isoformat(ws.created_at)}")

    with_db(settings, work)


def register(sub: Any) -> None:
    workspaces = sub.add_parser("workspaces", help="manage workspaces").add_subparsers(dest="action", required=True)
    ws_create = workspaces.add_parser("create", help="create a workspace and print its id")
    ws_create.add_argument("name")
    ws_create.set_defaults(func=cmd_workspaces_create)
    workspaces.add_parser("list", help="list workspaces").set_defaults(func=cmd_workspaces_list)
