"""Several arq jobs enqueued in one round trip, each only if no job or result of its id exists (as arq's own).

arq's ``enqueue_job`` takes three round trips a job (WATCH and EXISTS, then MULTI/EXEC) so that a job whose id is
taken is not enqueued again. `POST /v1/calendar/sync` enqueues two after its commit (the outbox hand-off of its
event and the sync job itself, whose arq id is its own id): six round trips, a tenth of the route's CPU. One
script does both, with the same check, atomically; the keys, values and scores are arq's own.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.exceptions import NoScriptError

from synchook.outbox import hand_off
from synchook.pipelined import PipelinedRedis, pack
from synchook.queue import DOORBELL_CHANNEL, QUEUE_NAME


@dataclass(frozen=True, slots=True)
class QueuedJob:
    function: str
    args: tuple[Any, ...] = ()
    # arq's _job_id: a job of this id (queued, running, or with its result kept) means this one is not enqueued.
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)


async def enqueue_jobs(
    redis: ArqRedis, jobs: Sequence[QueuedJob], *, queue: str = QUEUE_NAME, pipe: PipelinedRedis | None = None
) -> list[bool]:
    """Enqueue ``jobs`` in one round trip; for each, whether it was enqueued (False: its id was taken). Raises what
    Redis raises: callers after a commit treat a failure as they treated arq's.

    ``pipe``: the API process's pipelined connection to the same Redis (``AppContext.hits``), which carries the
    script instead of ``redis``'s pool (its lock, checkout probe and a task per write: 80-150 µs of CPU a request);
    ``redis`` still gives arq's settings (expiry, serializer). Sending the script twice (the pipe's one resend on a
    connection that broke) enqueues nothing twice that matters: a taken id is skipped, and a second relay job of
    an event finds it dispatched."""
    if not jobs:
        return []
    enqueued_at = int(time.time() * 1000)
    keys = [queue]
    argv: list[Any] = [redis.expires_extra_ms, enqueued_at]
    for job in jobs:
        keys += [job_key_prefix + job.job_id, result_key_prefix + job.job_id]
        payload = serialize_job(job.function, job.args, {}, None, enqueued_at, serializer=redis.job_serializer)
        argv += [job.job_id, payload]
    argv.append(DOORBELL_CHANNEL)
    if pipe is not None:
        done = await pipe.call(
            pack("EVALSHA", _ENQUEUE_SHA1, len(keys), *keys, *argv),
            unscripted=pack("EVAL", _ENQUEUE, len(keys), *keys, *argv),
        )
        return [bool(int(flag)) for flag in done]
    try:
        done = await redis.evalsha(_ENQUEUE_SHA1, len(keys), *keys, *argv)  # type: ignore[misc]
    except NoScriptError:  # a Redis that has not seen the script yet (new, restarted, flushed)
        done = await redis.eval(_ENQUEUE, len(keys), *keys, *argv)  # type: ignore[misc]
    return [bool(int(flag)) for flag in done]


# KEYS: the queue, then each job's job key and result key. ARGV: the expiry (ms), the score (enqueue time, ms), then
# each job's id and serialized job, then the doorbell channel. As arq's enqueue_job: PSETEX the job key, ZADD the
# id, unless either key exists; then, if any was enqueued, the doorbell rings for the idle workers.
_ENQUEUE = """
local out, any = {}, false
for i = 1, (#KEYS - 1) / 2 do
  local job_key, result_key = KEYS[2 * i], KEYS[2 * i + 1]
  if redis.call('EXISTS', job_key, result_key) == 0 then
    redis.call('PSETEX', job_key, ARGV[1], ARGV[2 * i + 2])
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[2 * i + 1])
    out[i] = 1
    any = true
  else
    out[i] = 0
  end
end
if any then redis.call('PUBLISH', ARGV[#ARGV], '') end
return out
"""
_ENQUEUE_SHA1 = hashlib.sha1(_ENQUEUE.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


async def hand_off_events(
    redis: ArqRedis | None, event_ids: Sequence[str], *, pipe: PipelinedRedis | None = None
) -> bool:
    """`synchook.outbox.hand_off` in one round trip (arq's enqueue_job takes three): best effort after commit, a
    failure is repaired by the relay sweeper, never lost. ``pipe``: as for :func:`enqueue_jobs`."""
    if redis is None:
        return False

    async def enqueue(function: str, ids: list[str]) -> None:
        await enqueue_jobs(redis, [QueuedJob(function, (ids,))], pipe=pipe)

    return await hand_off(enqueue, event_ids)
