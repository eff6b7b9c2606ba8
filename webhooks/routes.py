"""HTTP endpoints of events, deliveries and replays (filled in by the admin work)."""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
# Routes outside /v1 (the /admin console).
PAGES: list[BaseRoute] = []
