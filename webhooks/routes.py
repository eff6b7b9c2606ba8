"""HTTP endpoints of events, deliveries and replays (CONTRACT §4.3), and the /admin console page."""

from __future__ import annotations

from starlette.routing import BaseRoute

from webhooks.admin import routes as admin

ROUTES: list[BaseRoute] = list(admin.ROUTES)
# Routes outside /v1 (the /admin console).
PAGES: list[BaseRoute] = list(admin.PAGES)
