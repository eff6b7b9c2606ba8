"""Re-encrypt sealed columns under the newest master key (`synchook secrets rotate`, in synchook.root.reseal).

It runs while the API and the workers keep writing: a token refresh or a secret rotation may land between
reading a row and writing it back. So every write is a compare-and-swap on the sealed values as read; a row
that changed meanwhile is read again and resealed from its new value (a few times), never overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from synchook.crypto import SecretBox
from synchook.db import Database

RESEAL_BATCH = 500
# A row that changes under every try is being written right now: it is counted as skipped (already sealed
# by its writer under its first key, or resealed by the next run), not fought over.
RESEAL_TRIES = 3

SealedRow = Mapping[str, Any]  # "id" and the sealed columns, as read


@dataclass
class ResealCount:
    changed: int = 0
    skipped: int = 0  # rows written by someone else on every try


async def reseal_columns(
    db: Database, box: SecretBox, table: sa.Table, columns: Sequence[str], *, key: str = "id"
) -> ResealCount:
    """Reseal ``columns`` (nullable or not) of every row of ``table`` not yet under the newest key.

    ``key`` names the primary-key column, which is also the context the values were sealed with."""
    count = ResealCount()
    last_id = ""
    while rows := await read_sealed(db, table, columns, after=last_id, key=key):
        last_id = rows[-1]["id"]
        batch = await reseal_rows(db, box, table, columns, rows, key=key)
        count.changed += batch.changed
        count.skipped += batch.skipped
    return count


async def read_sealed(
    db: Database,
    table: sa.Table,
    columns: Sequence[str],
    *,
    after: str = "",
    ids: Sequence[str] | None = None,
    key: str = "id",
) -> list[SealedRow]:
    """The next batch of rows after ``after`` in key order, or exactly the rows ``ids``; the key read as "id"."""
    column = table.c[key]
    which = column.in_(ids) if ids is not None else column > after
    query = sa.select(column.label("id"), *(table.c[name] for name in columns)).where(which)
    async with db.session() as session:
        result = await session.execute(query.order_by(column).limit(RESEAL_BATCH))
        return [dict(row._mapping) for row in result]


async def reseal_rows(
    db: Database,
    box: SecretBox,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[SealedRow],
    *,
    key: str = "id",
) -> ResealCount:
    """Write these rows (as read earlier) back resealed; a row changed since is read again and retried."""
    count = ResealCount()
    pending = list(rows)
    for _ in range(RESEAL_TRIES):
        changed, lost = await _swap(db, box, table, columns, pending, key=key)
        count.changed += changed
        if not lost:
            return count
        # Deleted rows drop out here; the others are resealed from what their writer stored.
        pending = await read_sealed(db, table, columns, ids=[row["id"] for row in lost], key=key)
    count.skipped += len(pending)
    return count


async def _swap(
    db: Database, box: SecretBox, table: sa.Table, columns: Sequence[str], rows: Sequence[SealedRow], *, key: str
) -> tuple[int, list[SealedRow]]:
    """Compare-and-swap each row that needs it; returns how many were written and the rows that had changed."""
    changed = 0
    lost: list[SealedRow] = []
    async with db.session() as session:
        for row in rows:
            values = {
                name: box.reseal(row[name], context=row["id"])
                for name in columns
                if row[name] is not None and box.needs_reseal(row[name])
            }
            if not values:
                continue
            result = await session.execute(
                sa.update(table).where(table.c[key] == row["id"], *_unchanged(table, columns, row)).values(**values)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                changed += 1
            else:
                lost.append(row)
    return changed, lost


def _unchanged(table: sa.Table, columns: Sequence[str], row: SealedRow) -> list[sa.ColumnElement[bool]]:
    """Every sealed column still holds what was read (NULL included): nobody wrote the row meanwhile."""
    return [table.c[name].is_(None) if row[name] is None else table.c[name] == row[name] for name in columns]
