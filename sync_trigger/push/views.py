"""`push` as calendars and connections show it (CONTRACT §4.1, §7), from the channel rows."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import Field

from sync_trigger.push.models import PushChannel, PushStatus
from synchook.http.wire import Timestamp, Wire


class PushView(Wire):
    status: PushStatus = Field(description="off: polled only; pending: being set up; failed: polled, retried later")
    expires_at: Timestamp | None = Field(description="when the channel (a connection's: the first) expires")

    @classmethod
    def off(cls) -> PushView:
        return cls(status=PushStatus.OFF, expires_at=None)

    @classmethod
    def of(cls, channel: PushChannel | None) -> PushView:
        """A calendar's: its channel row, or off without one."""
        if channel is None:
            return cls.off()
        return cls(status=PushStatus(channel.status), expires_at=channel.expires_at)


def aggregate(calendars: Iterable[tuple[str | None, datetime | None]]) -> PushView:
    """A connection's, over its calendars' (status, expires_at), status None where a calendar has no channel yet:
    failed if any failed, active if all are active, off if none has a channel, pending otherwise; the earliest
    expiry."""
    rows = list(calendars)
    statuses = [status for status, _ in rows]
    if not rows or all(status is None for status in statuses):
        return PushView.off()
    expiries = [expires_at for status, expires_at in rows if status is not None and expires_at is not None]
    earliest = min(expiries) if expiries else None
    if PushStatus.FAILED in statuses:
        status = PushStatus.FAILED
    elif all(status == PushStatus.ACTIVE for status in statuses):
        status = PushStatus.ACTIVE
    else:
        status = PushStatus.PENDING
    return PushView(status=status, expires_at=earliest)
