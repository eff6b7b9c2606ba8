"""Micro-benchmark of synchook.bulk on PostgreSQL: a fan-out's delivery insert and an outcome update, 200 rows.

    python -m bench.micro_bulk OLD_BULK_PY      # e.g. a `git show <commit>:synchook/bulk.py` saved to a file

Compares the given bulk.py with this tree's, alternating, on a fresh database of SYNCHOOK_TEST_POSTGRES_URL
(foreign keys off for the session: the rows point at no event). Prints client CPU and wall time per row.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa

from synchook.db import Database
from synchook.root import migrate
from synchook.timeutil import utcnow
from tests.support.postgres import create_database, drop_database, unique_name
from webhooks.delivery.rows import new_delivery
from webhooks.models import Delivery

T = Delivery.__table__  # type: ignore[attr-defined]


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def main(old: ModuleType, new: ModuleType) -> None:
    base = os.environ["SYNCHOOK_TEST_POSTGRES_URL"]
    name = unique_name("h22_micro")
    url = await create_database(base, name)
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        db = Database(url)
        results: dict[str, list[tuple[float, float]]] = {}
        for _round in range(3):
            for label, mod in (("old", old), ("new", new)):
                cpu = wall = 0.0
                for rep in range(30):
                    now = utcnow()
                    rows = [
                        new_delivery(
                            workspace_id="ws_x",
                            event_id=f"evt_{rep}_{i // 100}",
                            event_type="calendar.sync.completed",
                            subscription_id=f"sub_{i % 100}",
                            now=now,
                        )
                        for i in range(200)
                    ]
                    ups = [
                        {
                            "id": r["id"],
                            "status": "succeeded",
                            "attempt_count": 1,
                            "next_attempt_at": None,
                            "lease_until": None,
                            "lease_owner": None,
                            "last_status_code": 200,
                            "last_error": None,
                            "cancel_reason": None,
                            "updated_at": now,
                            "completed_at": now,
                        }
                        for r in rows
                    ]
                    async with db.session() as s:
                        await s.execute(sa.text("SET LOCAL session_replication_role = replica"))  # no FK checks
                        c0, w0 = time.process_time(), time.perf_counter()
                        await mod.insert_rows(s, T, rows)
                        await mod.update_rows(s, T, ups)
                        cpu += time.process_time() - c0
                        wall += time.perf_counter() - w0
                results.setdefault(label, []).append((cpu / 6000 * 1e6, wall / 6000 * 1e6))
        for label, xs in results.items():
            print(label, "client CPU / wall per row (insert+update), us:", ", ".join(f"{c:.1f}/{w:.1f}" for c, w in xs))
        await db.close()
    finally:
        await drop_database(base, name)


if __name__ == "__main__":
    old_path = Path(sys.argv[1])
    new_path = Path(__file__).resolve().parent.parent / "synchook" / "bulk.py"
    asyncio.run(main(load(old_path, "bulk_old"), load(new_path, "bulk_new")))
