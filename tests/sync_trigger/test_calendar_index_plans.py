"""A page of provider changes finds its stored events by probing the unique index, not by reading the calendar.

The page's lookup used to be ``event_id IN (...)`` beside the calendar's two columns. On PostgreSQL, until an
ANALYZE had counted a new calendar's rows, the planner took the calendar for a row or two and read all of it
through the index, comparing each row with every id of the page: each page of an import read every event
stored before it (25 ms a page at 10,000 events in the benchmark; quadratic over an import).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sync_trigger.calendar_index.models import Calendar
from synchook.context import AppContext
from tests.factories import make_tenant
from tests.support.statements import Statement, explain_prepared, statements_run
from tests.sync_trigger.test_calendar_index import apply, change, connection_with_calendar

STORED = 2_000  # events of the calendar before the page: what the old plan read, whole, for every page
PAGE = 250


@pytest.fixture
async def calendar(app_ctx: AppContext) -> Calendar:
    return await connection_with_calendar(app_ctx, await make_tenant(app_ctx))


@pytest.fixture
def lookups() -> Iterator[list[Statement]]:
    """Every SELECT of stored calendar events, with its parameters."""
    with statements_run(lambda sql: sql.startswith("SELECT") and "FROM calendar_events" in sql) as seen:
        yield seen


async def _page_after_a_large_import(app_ctx: AppContext, calendar: Calendar, lookups: list[Statement]) -> None:
    """Store STORED events, then apply a page of PAGE (half of them new), keeping only that page's lookups."""
    for first in range(0, STORED, 500):
        await apply(app_ctx, calendar, *(change(f"ev-{n}", hours=n) for n in range(first, first + 500)))
    lookups.clear()
    page = [change(f"ev-{n}", hours=n, summary="Moved") for n in range(STORED - PAGE // 2, STORED + PAGE // 2)]
    counts = await apply(app_ctx, calendar, *page)
    assert (counts.created, counts.updated) == (PAGE // 2, PAGE // 2)


@pytest.mark.parametrize("plan_cache_mode", ["force_generic_plan", "force_custom_plan"])
async def test_a_page_probes_the_index_per_event_id_on_a_calendar_without_statistics(
    app_ctx: AppContext, calendar: Calendar, lookups: list[Statement], plan_cache_mode: str
) -> None:
    if app_ctx.settings.is_sqlite:
        pytest.skip("SQLite has no statistics and no generic plans: the test below covers its plan")
    await _page_after_a_large_import(app_ctx, calendar, lookups)
    [lookup] = lookups
    async with app_ctx.db.session() as session:
        connection = await session.connection()
        # The plan a cached statement gets (generic) and the one it gets when planned for its values.
        await connection.exec_driver_sql(f"SET LOCAL plan_cache_mode = {plan_cache_mode}")
        [[document]] = await explain_prepared(connection, lookup, name="page_lookup", options="(ANALYZE, FORMAT JSON)")
        await session.rollback()
    scans = [node for node in _nodes(document[0]["Plan"]) if node.get("Relation Name") == "calendar_events"]
    assert scans, document
    # Each row read is one the page asked for (all stored by now): the old plan read the calendar's 2,125 and
    # filtered them.
    read = sum(node["Actual Rows"] * node["Actual Loops"] + node.get("Rows Removed by Filter", 0) for node in scans)
    assert read == PAGE, document
    assert all(node["Node Type"] == "Index Scan" for node in scans), document


async def test_a_page_lookup_on_sqlite_searches_the_unique_index(
    app_ctx: AppContext, calendar: Calendar, lookups: list[Statement]
) -> None:
    if not app_ctx.settings.is_sqlite:
        pytest.skip("PostgreSQL: see the test above")
    await _page_after_a_large_import(app_ctx, calendar, lookups)
    [(sql, params)] = lookups
    async with app_ctx.db.session() as session:
        connection = await session.connection()
        plan = [str(row[-1]) for row in await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)]
    assert len(plan) == 1 and plan[0].startswith("SEARCH calendar_events USING INDEX"), plan
    assert "event_id=?" in plan[0], plan


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)
