"""HTTP endpoints of the calendar sync API (filled in by the sync-trigger work)."""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
