"""HTTP endpoints of the subscriptions API (filled in by the subscriptions work)."""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
