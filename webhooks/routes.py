"""HTTP endpoints of events, deliveries and replays (CONTRACT §4.3), and the /admin console page."""

from __future__ import annotations

from synchook.http.endpoint import Endpoint
from webhooks.admin import routes as admin

ENDPOINTS: list[Endpoint] = list(admin.ENDPOINTS)
# Routes outside /v1 (the /admin console).
PAGES: list[Endpoint] = list(admin.PAGES)
