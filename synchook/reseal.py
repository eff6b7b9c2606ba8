"""`synchook secrets rotate`: re-encrypt every sealed column under the newest master key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from synchook.crypto import SecretBox
from synchook.db import Database
from synchook.settings import Settings

Resealer = Callable[[AsyncSession, SecretBox], Awaitable[int]]


def resealers() -> dict[str, Resealer]:
    from subscriptions.service import reseal_subscription_secrets
    from sync_trigger.service import reseal_connection_tokens

    return {"connection tokens": reseal_connection_tokens, "webhook secrets": reseal_subscription_secrets}


async def reseal_everything(settings: Settings) -> dict[str, int]:
    box = SecretBox(settings.secret_keys())
    db = Database(settings.database_url)
    counts: dict[str, int] = {}
    try:
        for name, reseal in resealers().items():
            async with db.session() as session:
                counts[name] = await reseal(session, box)
    finally:
        await db.close()
    return counts
