"""Scenario (g)'s baseline: `synchook worker` whose index writes no change rows and no outbox events.

    python -m bench.baseline_worker

`changes.write_changes` is replaced by a count of the changes, so the index still stores the normalised
event and still tells created/updated/deleted apart: the index as it was before change events. The worker
takes its jobs from a queue of its own (BASELINE_QUEUE), so the bench runs it beside the real workers and
alternates baseline and real syncs round by round.
"""

from __future__ import annotations

import sys
from typing import Any

import synchook.queue

BASELINE_QUEUE = "synchook:bench-baseline"


def main() -> int:
    # Before anything binds the queue's name (`from synchook.queue import QUEUE_NAME`).
    synchook.queue.QUEUE_NAME = BASELINE_QUEUE
    from sync_trigger.calendar_index import changes
    from synchook.cli import main as cli

    async def count_only(session: Any, *, pending: Any, **_: Any) -> changes.Written:
        written = changes.Written(event_ids=[])
        for change in pending:
            setattr(written, change.type, getattr(written, change.type) + 1)
        return written

    changes.write_changes = count_only
    return cli(["worker"])


if __name__ == "__main__":
    sys.exit(main())
