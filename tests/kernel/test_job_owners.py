"""A job's owner record costs the worker one round trip to Redis, not two: it is deleted by the worker's next
write (the next job's record, or its beat), and only while it still names this worker."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from arq.worker import func

from synchook.janitor import JOB_OWNER_KEY_PREFIX, Liveness


async def commands(redis: ArqRedis) -> int:
    """Commands the server has processed, this INFO included: nothing else talks to the test's Redis."""
    return int((await redis.info("stats"))["total_commands_processed"])


def owned_job(liveness: Liveness, seen: dict[str, Any]) -> Any:
    async def job(ctx: dict[str, Any]) -> None:
        redis: ArqRedis = ctx["redis"]
        seen[ctx["job_id"]] = {key.decode() for key in await redis.keys(JOB_OWNER_KEY_PREFIX + "*")}
        seen["commands at the end"] = await commands(redis)

    liveness.in_progress_timeout_s = 60
    return liveness.owned(func(job, name="job")).coroutine


async def test_a_job_end_sends_nothing_and_its_record_goes_with_the_next_start(redis: ArqRedis) -> None:
    seen: dict[str, Any] = {}
    run = owned_job(Liveness("w1"), seen)
    await run({"redis": redis, "job_id": "first"})
    assert await commands(redis) - seen["commands at the end"] == 1  # this INFO: the job's end sent nothing
    assert await redis.get(JOB_OWNER_KEY_PREFIX + "first") == b"w1"
    await run({"redis": redis, "job_id": "second"})
    assert seen["second"] == {JOB_OWNER_KEY_PREFIX + "second"}  # the first's record went with the second's start
    assert await redis.get(JOB_OWNER_KEY_PREFIX + "second") == b"w1"


async def test_a_record_another_worker_has_taken_over_stays(redis: ArqRedis) -> None:
    seen: dict[str, Any] = {}
    run = owned_job(Liveness("w1"), seen)
    await run({"redis": redis, "job_id": "moved"})
    await redis.set(JOB_OWNER_KEY_PREFIX + "moved", b"w2")  # run again by w2 before w1's next write
    await run({"redis": redis, "job_id": "next"})
    assert await redis.get(JOB_OWNER_KEY_PREFIX + "moved") == b"w2"


async def test_a_job_run_again_here_keeps_its_new_record(redis: ArqRedis) -> None:
    seen: dict[str, Any] = {}
    run = owned_job(Liveness("w1"), seen)
    await run({"redis": redis, "job_id": "again"})
    await run({"redis": redis, "job_id": "again"})
    assert seen["again"] == {JOB_OWNER_KEY_PREFIX + "again"}


async def test_an_idle_workers_last_records_go_when_it_stops(redis: ArqRedis) -> None:
    liveness = Liveness("w1")
    run = owned_job(liveness, {})
    await liveness.start(redis)
    await run({"redis": redis, "job_id": "last"})
    await liveness.stop(redis)
    assert await redis.keys(JOB_OWNER_KEY_PREFIX + "*") == []
