"""What every `synchook` command group shares: the settings loader, the error it reports, a database to work on."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from synchook.db import Database
from synchook.http.bodies import error_message
from synchook.settings import DEFAULT_DATA_DIR, Settings


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


def with_db(settings: Settings, work: Callable[[Database], Awaitable[None]]) -> None:
    async def run() -> None:
        db = Database(settings.database_url)
        try:
            await work(db)
        finally:
            await db.close()

    asyncio.run(run())
