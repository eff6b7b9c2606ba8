"""Leases: a claim on some deliveries, kept alive until each one's outcome is recorded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from synchook.context import AppContext
from synchook.db import among
from synchook.timeutil import utcnow
from webhooks.models import Delivery

__all__ = ["Lease", "keep_lease"]

logger = logging.getLogger(__name__)

_deliveries = Delivery.__table__  # type: ignore[attr-defined]


@dataclass(eq=False)
class Lease:
    """One claim on some deliveries: a row is ours while its ``lease_owner`` is our ``owner``.

    Renewals move ``lease_until`` and never the owner, so a record never races a renewal. Shared, and
    changed, by the batch that holds it, its renewal and the recorder.
    """

    until: datetime
    ids: list[str]
    owner: str = field(default_factory=lambda: secrets.token_hex(16))
    recorded: set[str] = field(default_factory=set)

    def unrecorded(self) -> list[str]:
        return [i for i in self.ids if i not in self.recorded]


async def keep_lease(app: AppContext, lease: Lease, stop: asyncio.Event) -> None:
    """Keep the lease on the deliveries not yet recorded (a slow endpoint, or a recorder waiting for the
    database, can outlast one lease period). Its own transactions: never queued behind the recorder."""
    seconds = app.settings.delivery_lease_seconds
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds / 3)
            return
        ids = lease.unrecorded()
        if not ids:
            continue
        until = utcnow() + timedelta(seconds=seconds)
        try:
            async with app.db.session() as session:
                await session.execute(
                    sa.update(_deliveries)
                    .where(among(_deliveries.c.id, ids), _deliveries.c.lease_owner == lease.owner)
                    .values(lease_until=until)
                )
            lease.until = until
        except Exception as exc:
            logger.warning("could not renew a delivery lease: %s", type(exc).__name__)
