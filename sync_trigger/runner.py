"""Runs the provider side of a sync job. Placeholder until the connectors are wired in:
every job fails honestly with `connector_unavailable`, never a fake success."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sync_trigger.models import Connection, SyncJob
from synchook.context import AppContext


@dataclass
class SyncStats:
    calendars: int = 0
    events_created: int = 0
    events_updated: int = 0
    events_deleted: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class SyncFailure(Exception):
    def __init__(self, code: str, message: str, stats: SyncStats | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.stats = stats or SyncStats()

    def as_error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


async def run_sync(app: AppContext, job: SyncJob, connections: list[Connection]) -> SyncStats:
    """Sync every connection of the job into the calendar index; raise SyncFailure on failure."""
    raise SyncFailure("connector_unavailable", "No calendar connector is available for this provider yet")
