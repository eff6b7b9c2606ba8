"""Drives one provider's connector against the fake servers, recording refreshed tokens and sleeps."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from sync_trigger.connectors import ChangePage, Connector, ProviderEndpoints, Tokens, build_connector
from synchook.fakes import FakeProviders

ALICE = "alice@example.com"
WINDOW = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))


class Harness:
    def __init__(self, fake: FakeProviders, session: aiohttp.ClientSession, provider: str) -> None:
        self.fake, self.session, self.provider = fake, session, provider
        self.refreshed: list[Tokens] = []
        self.sleeps: list[float] = []

    async def _save(self, tokens: Tokens) -> None:
        self.refreshed.append(tokens)

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def connector(self, tokens: Tokens | None = None, **options: object) -> Connector:
        acc = self.fake.account(self.provider)
        tokens = tokens or Tokens(acc.access_token, acc.refresh_token, None)
        options.setdefault("sleep", self._sleep)
        endpoints = ProviderEndpoints(**self.fake.endpoint_kwargs())
        return build_connector(self.provider, self.session, endpoints, tokens, self._save, **options)  # type: ignore[arg-type]


async def collect(connector: Connector, cursor: str | None, calendar: str = ALICE) -> list[ChangePage]:
    return [page async for page in connector.changes(calendar, cursor=cursor, window=None if cursor else WINDOW)]
