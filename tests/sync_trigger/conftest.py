"""The fake Google/Microsoft servers, shared by the sync tests: one server per module, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from synchook.fakes import FakeProviders


@pytest.fixture(scope="module")
def providers_server() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


@pytest.fixture
def fake(providers_server: FakeProviders) -> FakeProviders:
    providers_server.reset()
    return providers_server
