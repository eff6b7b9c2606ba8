"""`synchook secrets rotate`: every domain's sealed columns, resealed with the kernel's compare-and-swap
(synchook.reseal). The root names the domains' resealers; the kernel never imports a domain."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from subscriptions.service import reseal_subscription_secrets
from sync_trigger.push.service import reseal_channel_secrets
from sync_trigger.service import reseal_connection_tokens
from synchook.crypto import SecretBox
from synchook.db import Database
from synchook.reseal import ResealCount
from synchook.settings import Settings

Resealer = Callable[[Database, SecretBox], Awaitable[ResealCount]]


def resealers() -> dict[str, Resealer]:
    return {
        "connection tokens": reseal_connection_tokens,
        "webhook secrets": reseal_subscription_secrets,
        "push channel secrets": reseal_channel_secrets,
    }


async def reseal_everything(settings: Settings) -> dict[str, ResealCount]:
    box = SecretBox(settings.secret_keys())
    db = Database(settings.database_url)
    try:
        return {name: await reseal(db, box) for name, reseal in resealers().items()}
    finally:
        await db.close()
