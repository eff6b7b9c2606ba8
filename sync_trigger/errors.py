"""Errors of the sync domain: plain data, mapped to the envelope by the kernel's one handler."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from synchook.errors import Conflict, InsufficientPermissions, RateLimited, ValidationFailed

WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class SyncQuota:
    """The on-demand cap of one workspace over the rolling hour, as seen by one request."""

    limit: int
    used: int
    oldest_queued_at: datetime | None  # the oldest accepted sync still inside the window
    now: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def frees_at(self) -> datetime:
        """When the next slot frees up (now, when nothing is used)."""
        return self.oldest_queued_at + WINDOW if self.oldest_queued_at is not None else self.now

    @property
    def retry_after(self) -> int:
        seconds = (self.frees_at - self.now).total_seconds()
        return max(1, int(seconds) + (0 if seconds == int(seconds) else 1))


class NoConnection(InsufficientPermissions):
    def __init__(self, provider: str | None) -> None:
        which = f"{provider} calendar" if provider else "calendar"
        super().__init__(f"This workspace has no connected {which}")


class SyncInProgress(Conflict):
    code = "sync_in_progress"

    def __init__(self, quota: SyncQuota) -> None:
        super().__init__("A full sync is already running")
        self.quota = quota


class SyncCapReached(RateLimited):
    def __init__(self, quota: SyncQuota) -> None:
        super().__init__(
            f"On-demand sync is capped at {quota.limit} per hour per workspace",
            headers={"Retry-After": str(quota.retry_after)},
        )
        self.quota = quota


class ConnectionExists(Conflict):
    code = "connection_exists"

    def __init__(self) -> None:
        super().__init__("This calendar account is already connected")


class InvalidServerURL(ValidationFailed):
    """A CalDAV server_url Synchook refuses to call (the webhook URL-safety check, CONTRACT §8)."""

    code = "invalid_url"

    def __init__(self, reason: str) -> None:
        super().__init__(f"server_url: {reason}", field="server_url")
