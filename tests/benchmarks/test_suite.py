"""`make bench-postgres` says when a benchmark failed, instead of timing a run that could not start as met."""

from __future__ import annotations

import pytest

from bench import suite


def test_a_bench_that_cannot_reach_its_database_is_reported_failed(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Port 9 (discard) on loopback: nothing listens, as with no PostgreSQL at the bench's URL.
    monkeypatch.setenv("SYNCHOOK_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:9/postgres")
    status = suite.main(["--db", "postgres"])
    last = capfd.readouterr().out.strip().splitlines()[-1]
    assert status != 0
    assert last.startswith("make bench-postgres: a benchmark FAILED (exit status"), last
    assert "met" not in last
