"""arq functions of the delivery engine: thin wrappers that take ids and call the services."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from synchook.settings import Settings

FUNCTIONS: list[Any] = []
STARTUP: list[Callable[[dict[str, Any]], Awaitable[None]]] = []
SHUTDOWN: list[Callable[[dict[str, Any]], Awaitable[None]]] = []


def cron_jobs(settings: Settings) -> list[Any]:
    return []
