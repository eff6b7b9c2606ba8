"""What every cluster test starts from: a PostgreSQL database of its own and the fake providers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from synchook.fakes import FakeProviders
from tests.support.postgres import create_database, drop_database, require_postgres, unique_name


@pytest.fixture
def database() -> Iterator[str]:
    base = require_postgres()
    name = unique_name("synchook_cluster")
    url = asyncio.run(create_database(base, name))
    yield url
    asyncio.run(drop_database(base, name))


@pytest.fixture
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as providers:
        yield providers
