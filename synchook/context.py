"""The per-process context: settings, database, queue, secret box; built once, passed explicitly."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import Job

from synchook.auth.cache import KeyCache
from synchook.crypto import SecretBox
from synchook.db import Database
from synchook.doorbell import ring
from synchook.http.ratelimit import HitCounter
from synchook.queue import QUEUE_NAME, REDIS_LOST, connect
from synchook.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class AppContext:
    settings: Settings
    db: Database
    box: SecretBox
    redis: ArqRedis | None = None
    # API keys this process found valid a moment ago (the API's authorization; see synchook.auth.cache).
    keys: KeyCache = field(default_factory=KeyCache)
    # The per-key rate limit's connection to ``redis`` (synchook.http.ratelimit), pipelined; the POST routes' enqueue
    # scripts go on it too (synchook.pipelined). None without Redis.
    hits: HitCounter | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.redis is not None:
            self.hits = HitCounter(self.redis)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        redis: ArqRedis | None = None,
        connect_redis: bool = True,
        inline_sqlite: bool = False,
    ) -> AppContext:
        """``inline_sqlite``: run SQLite on the loop's thread (see :mod:`synchook.sqlite.inline`); workers do."""
        db = Database(settings.database_url, inline_sqlite=inline_sqlite)
        box = SecretBox(settings.secret_keys())
        if redis is None and connect_redis and settings.redis_url:
            redis = await connect(settings.redis_url, lazy=True)
        return cls(settings=settings, db=db, box=box, redis=redis)

    async def enqueue(self, function: str, *args: Any, **kwargs: Any) -> Job | None:
        if self.redis is None:
            raise RuntimeError("no Redis connection")
        job = await self.redis.enqueue_job(function, *args, _queue_name=QUEUE_NAME, **kwargs)
        if job is not None:
            # arq's enqueue does not ring. The job is queued: a ring lost with Redis costs it the idle wait at most,
            # so it does not fail the caller (who would take the job for not enqueued).
            try:
                await ring(self.redis)
            except REDIS_LOST as exc:
                logger.warning("doorbell not rung after enqueueing %s: %s", function, type(exc).__name__)
        return job

    async def close(self) -> None:
        if self.hits is not None:
            await self.hits.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.close()

    def __repr__(self) -> str:
        return f"AppContext(db={self.db!r}, box={self.box!r})"
