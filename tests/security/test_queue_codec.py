"""A writable Redis is not code execution: jobs are JSON, and a pickle placed on the queue is never unpickled."""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from arq.jobs import serialize_job
from arq.worker import Worker

from synchook.context import AppContext
from synchook.queue import QUEUE_NAME, QueueDataError, connect, decode_job, encode_job
from synchook.root.worker import build_worker
from synchook.settings import Settings
from tests.factories import make_tenant
from tests.factories.webhooks import make_events, make_subscription
from tests.support.receiver import Receiver

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


class CreatesFile:
    """Unpickling this opens (creates) ``path``: what an attacker's job would do with pickle's reduce."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def test_a_pickled_job_never_runs_and_the_worker_keeps_delivering(
    app_ctx: AppContext,
    redis: ArqRedis,
    receiver: Receiver,
    tmp_path: Path,
    run_worker: Callable[..., Awaitable[Worker]],
) -> None:
    marker = tmp_path / "pwned"
    # Exactly what arq's enqueue_job writes with its default (pickle) codec: the job under arq:job:<id>, its id
    # in the queue's sorted set, due now.
    now_ms = int(time.time() * 1000)
    payload = serialize_job("relay_events", (CreatesFile(marker),), {}, None, now_ms, serializer=pickle.dumps)
    await redis.psetex(job_key_prefix + "evil", 60_000, payload)
    await redis.zadd(QUEUE_NAME, {"evil": now_ms})

    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hook"))
    (event_id,) = await make_events(app_ctx, tenant.workspace_id, count=1)  # queued after the pickle

    worker = await run_worker()

    assert not marker.exists()
    assert worker.jobs_failed == 1  # the pickle: failed to deserialize, not retried
    assert not await redis.exists(job_key_prefix + "evil")
    assert await redis.zscore(QUEUE_NAME, "evil") is None
    assert [r.headers["webhook-id"] for r in receiver.requests("/hook")] == [event_id]


def test_pickle_bytes_raise_without_being_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"t": 1, "f": "relay_events", "a": [CreatesFile(marker)], "k": {}, "et": 0})
    with pytest.raises(QueueDataError):
        decode_job(payload)
    assert not marker.exists()


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"job"', b'{"a": NaN}', b"\xff\xfe", b""])
def test_anything_but_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(QueueDataError):
        decode_job(raw)


def test_jobs_and_failed_results_are_plain_json() -> None:
    job = {"t": 1, "f": "deliver", "a": (["del_1", "del_2"],), "k": {}, "et": 1}
    assert decode_job(encode_job(job)) == {**job, "a": [["del_1", "del_2"]]}
    # arq stores a failed job's exception as its result: only its type goes to Redis, never its message.
    result = json.loads(encode_job({"r": RuntimeError("token abc"), "s": False}))
    assert result == {"r": {"error": "RuntimeError"}, "s": False}
    with pytest.raises(TypeError):
        encode_job({"a": [object()]})


async def test_every_pool_and_worker_uses_the_json_codec(settings: Settings, redis: ArqRedis) -> None:
    assert settings.redis_url is not None
    for lazy in (False, True):
        pool = await connect(settings.redis_url, lazy=lazy)
        try:
            assert (pool.job_serializer, pool.job_deserializer) == (encode_job, decode_job)
        finally:
            await pool.aclose()
    worker = build_worker(settings, burst=True, handle_signals=False)  # `synchook worker` and `dev`: its own pool
    assert (worker.job_serializer, worker.job_deserializer) == (encode_job, decode_job)
    pickling = ArqRedis(connection_pool=redis.connection_pool)
    with pytest.raises(ValueError, match="JSON"):
        build_worker(settings, redis=pickling, burst=True, handle_signals=False)
