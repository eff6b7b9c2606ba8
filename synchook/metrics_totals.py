"""The delivery engine's counters, summed over every worker in Redis, so the API's ``/metrics`` can show them.

Deliveries are counted where they happen, in the worker processes, and a worker serves no HTTP: no scrape
ever reached those counters (`synchook dev`'s and production's ``/metrics`` said 0 deliveries while
thousands went out). Each worker adds what it counted since its last flush to one Redis hash, once a second
and when it stops (``flush_engine_totals``); every API process reads that hash at scrape time
(``read_engine_totals``) and exposes it as ``synchook_deliveries_total`` and
``synchook_delivery_attempt_duration_seconds``. The figures are the whole cluster's, like the scrape-time
gauges: take ``max`` across API instances, not ``sum``. They survive a worker's restart (a worker's own
counters start again from 0; the totals only grow) and reset only with Redis's data, which Prometheus reads
as any counter reset. A worker killed outright loses at most its last second of counts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from synchook.metrics import (
    ATTEMPT_BUCKETS,
    ATTEMPT_OUTCOMES,
    ATTEMPT_SECONDS_DOC,
    ATTEMPT_SECONDS_NAME,
    DELIVERIES_DOC,
    DELIVERIES_NAME,
    DELIVERY_OUTCOMES,
    ENGINE_REGISTRY,
    OTHER,
)

__all__ = ["TOTALS_KEY", "engine_families", "flush_engine_totals", "flush_every", "read_engine_totals"]

logger = logging.getLogger(__name__)

TOTALS_KEY = "synchook:metrics:engine"
FLUSH_INTERVAL = 1.0
_SEP = "|"

# This process's counters as last added to the totals, and what a failed flush still owes them: module state,
# since the counters are the process's too (a worker rebuilt after a Redis outage must not add them again).
_flushed: dict[str, float] = {}
_owed: dict[str, float] = {}


def _field(name: str, labels: Mapping[str, str]) -> str:
    return _SEP.join((name, labels.get("outcome", ""), labels.get("le", "")))


def _local_counts() -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in ENGINE_REGISTRY.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                counts[_field(sample.name, sample.labels)] = sample.value
    return counts


async def flush_engine_totals(redis: Any) -> None:
    """Add what this process counted since its last flush to the cluster's totals (one MULTI/EXEC)."""
    counts = _local_counts()
    deltas = dict(_owed)
    _owed.clear()
    for field, value in counts.items():
        deltas[field] = deltas.get(field, 0.0) + value - _flushed.get(field, 0.0)
    _flushed.update(counts)  # before the await: a concurrent flush of this process never adds the same counts
    deltas = {field: delta for field, delta in deltas.items() if delta}
    if not deltas:
        return
    try:
        async with redis.pipeline(transaction=True) as pipe:
            for field, delta in deltas.items():
                pipe.hincrbyfloat(TOTALS_KEY, field, delta)
            await pipe.execute()
    except BaseException:
        for field, delta in deltas.items():  # the next flush sends them
            _owed[field] = _owed.get(field, 0.0) + delta
        raise


async def flush_every(redis: Any, interval: float = FLUSH_INTERVAL) -> None:
    """A worker's flushes, until cancelled. While Redis is away the counts are owed, and sent once it is back."""
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            await flush_engine_totals(redis)
        except Exception as exc:
            if not failing:
                logger.warning("delivery metrics not flushed to Redis (kept for the next): %s", type(exc).__name__)
            failing = True
        else:
            failing = False


async def read_engine_totals(redis: Any) -> dict[str, float]:
    raw = await redis.hgetall(TOTALS_KEY)
    totals: dict[str, float] = {}
    for field, value in raw.items():
        key = field.decode() if isinstance(field, bytes) else str(field)
        totals[key] = float(value)
    return totals


def engine_families(totals: Mapping[str, float]) -> Iterator[Metric]:
    """The totals as the two metric families the workers count (every outcome present, 0 until counted)."""
    deliveries = CounterMetricFamily(DELIVERIES_NAME, DELIVERIES_DOC, labels=["outcome"])
    for outcome in (*DELIVERY_OUTCOMES, OTHER):
        deliveries.add_metric([outcome], totals.get(_SEP.join((f"{DELIVERIES_NAME}_total", outcome, "")), 0.0))
    yield deliveries
    attempts = HistogramMetricFamily(ATTEMPT_SECONDS_NAME, ATTEMPT_SECONDS_DOC, labels=["outcome"])
    for outcome in (*ATTEMPT_OUTCOMES, OTHER):
        bucket = f"{ATTEMPT_SECONDS_NAME}_bucket"
        buckets = [
            (bound, totals.get(_SEP.join((bucket, outcome, bound)), 0.0))
            # As prometheus_client writes an "le" label: 0.005, 1.0, 2.5, …, +Inf.
            for bound in (*(floatToGoString(b) for b in ATTEMPT_BUCKETS), "+Inf")
        ]
        attempts.add_metric(
            [outcome], buckets, sum_value=totals.get(_SEP.join((f"{ATTEMPT_SECONDS_NAME}_sum", outcome, "")), 0.0)
        )
    yield attempts
