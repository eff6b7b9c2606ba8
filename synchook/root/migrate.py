"""Alembic, driven programmatically: one script location, a version folder per package, upgrade to all heads."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

import subscriptions
import sync_trigger
import synchook
import webhooks

_PACKAGES = (synchook, sync_trigger, subscriptions, webhooks)


def version_locations() -> list[str]:
    folders = [Path(synchook.__file__).parent / "migrations" / "versions"]
    folders += [Path(str(pkg.__file__)).parent / "migrations" for pkg in _PACKAGES[1:]]
    return [str(f) for f in folders if f.is_dir()]


def alembic_config(database_url: str) -> Config:
    config = Config()
    # The script (env.py) is the root's: it sees every table through the models registry.
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join(version_locations()))
    # Passed as an attribute, not an ini option: URLs may hold '%' which configparser would interpolate.
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "heads") -> None:
    from synchook.sqlite.engine import ensure_sqlite_dir

    ensure_sqlite_dir(database_url)
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)
