"""``among(column, values)`` selects what ``column.in_(values)`` selects; on PostgreSQL with one SQL text for
every list length (one array parameter), so asyncpg prepares each hot statement once per connection."""

from __future__ import annotations

import sqlalchemy as sa

from synchook.db import Database, among

_metadata = sa.MetaData()
_rows = sa.Table(
    "among_rows",
    _metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
    prefixes=["TEMPORARY"],  # this connection's own: nothing left behind in the shared test database
)
# Lists of several lengths one after the other: a statement cached for the first must not keep its values.
LISTS = [["r1", "r2"], ["r3", "r4", "r5"], ["r7"], [], ["r9", "r0", "missing"], ["r2"] * 3]


async def test_among_selects_what_in_selects(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.session() as session:
            await session.run_sync(lambda s: _metadata.create_all(s.connection()))
            await session.execute(sa.insert(_rows), [{"id": f"r{i}", "n": i} for i in range(10)])
            for values in LISTS:
                query = sa.select(_rows.c.id).order_by(_rows.c.id)
                chosen = (await session.execute(query.where(among(_rows.c.id, values)))).scalars().all()
                assert chosen == (await session.execute(query.where(_rows.c.id.in_(values)))).scalars().all()
                assert chosen == sorted(set(values) - {"missing"})
            updated = await session.execute(
                sa.update(_rows)
                .where(among(_rows.c.id, ["r2", "r3", "r4"]), _rows.c.n > 2)
                .values(n=0)
                .returning(_rows.c.id)
            )
            assert sorted(updated.scalars()) == ["r3", "r4"]
    finally:
        await db.close()


def test_among_is_one_array_parameter_on_postgresql() -> None:
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.asyncpg.dialect()  # type: ignore[attr-defined]
    texts = {str(sa.select(_rows.c.n).where(among(_rows.c.id, values)).compile(dialect=dialect)) for values in LISTS}
    assert len(texts) == 1
    assert "= ANY ($1::VARCHAR(40)[])" in texts.pop()


def test_among_is_a_plain_in_list_on_sqlite() -> None:
    from sqlalchemy.dialects import sqlite

    text = str(sa.select(_rows.c.n).where(among(_rows.c.id, ["a", "b"])).compile(dialect=sqlite.dialect()))
    # Nothing around the IN: "(id IN (...)) = 1" would keep SQLite from using the primary key.
    assert text.endswith("WHERE among_rows.id IN (__[POSTCOMPILE_id_1])")
