"""Shared by the sync tests, one server per module: the fake Google/Microsoft servers (reset per test)
and a real CalDAV server, Radicale (a fresh user per test)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from synchook.fakes import FakeProviders
from tests.support.radicale import CalDAVAccount, RadicaleServer


@pytest.fixture(scope="module")
def providers_server() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


@pytest.fixture
def fake(providers_server: FakeProviders) -> FakeProviders:
    providers_server.reset()
    return providers_server


@pytest.fixture(scope="module")
def radicale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadicaleServer]:
    """A real CalDAV server (Radicale) per module; each test takes its own user from `caldav`."""
    with RadicaleServer(tmp_path_factory.mktemp("radicale")) as server:
        yield server


@pytest.fixture
def caldav(radicale_server: RadicaleServer) -> CalDAVAccount:
    """A fresh Radicale user with no calendars: tests never see each other's collections."""
    return radicale_server.account(f"u{uuid.uuid4().hex[:12]}")
