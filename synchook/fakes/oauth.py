"""Both OAuth token endpoints (refresh grant only) and the tokens the fakes have issued (PROVIDERS.md §1.4, §2.4)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from starlette.responses import JSONResponse, Response

from synchook.fakes.models import GOOGLE, MICROSOFT, FakeAccount

CLIENTS = {GOOGLE: ("fake-google-client", "fake-google-secret"), MICROSOFT: ("fake-ms-client", "fake-ms-secret")}
_INVALID_GRANT: dict[str, dict[str, Any]] = {
    GOOGLE: {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
    MICROSOFT: {
        "error": "invalid_grant",
        "error_description": "AADSTS700082: The refresh token has expired due to inactivity.",
        "error_codes": [700082],
    },
}


def new_secret(provider: str, kind: str) -> str:
    """A fresh access ("at") or refresh ("rt") token."""
    return f"{provider}-{kind}-{secrets.token_urlsafe(12)}"


class TokenBook:
    """The provider and account behind every token issued; access tokens also carry their expiry."""

    def __init__(self) -> None:
        self.access: dict[str, tuple[str, str, float]] = {}  # token -> provider, account, expiry
        self.refresh: dict[str, tuple[str, str]] = {}

    def add(self, acc: FakeAccount, ttl: float) -> None:
        self.access[acc.access_token] = (acc.provider, acc.account, time.time() + ttl)
        self.refresh[acc.refresh_token] = (acc.provider, acc.account)

    def expire(self, provider: str, account: str) -> None:
        for token, (prov, acc, _) in list(self.access.items()):
            if (prov, acc) == (provider, account):
                self.access[token] = (prov, acc, time.time() - 1)

    def grant(
        self, provider: str, form: dict[str, str], accounts: dict[tuple[str, str], FakeAccount], ttl: float
    ) -> Response:
        """The token endpoint's answer to a form-encoded request."""
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        if (form.get("client_id"), form.get("client_secret")) != CLIENTS[provider]:
            return JSONResponse({"error": "invalid_client", "error_description": "Unauthorized"}, 401)
        owner = self.refresh.get(form.get("refresh_token", ""))
        acc = accounts.get(owner) if owner and owner[0] == provider else None
        if acc is None or acc.revoked:
            return JSONResponse(_INVALID_GRANT[provider], 400)
        acc.access_token = new_secret(provider, "at")
        self.access[acc.access_token] = (provider, acc.account, time.time() + ttl)
        body: dict[str, Any] = {"access_token": acc.access_token, "expires_in": ttl, "token_type": "Bearer"}
        if provider == GOOGLE:
            body["scope"] = "https://www.googleapis.com/auth/calendar.readonly"
        else:
            # Rotation: the old refresh token stops working the moment a new one is issued.
            del self.refresh[acc.refresh_token]
            acc.refresh_token = new_secret(provider, "rt")
            self.refresh[acc.refresh_token] = (provider, acc.account)
            body.update(refresh_token=acc.refresh_token, scope="Calendars.Read offline_access", ext_expires_in=3600)
        return JSONResponse(body)
