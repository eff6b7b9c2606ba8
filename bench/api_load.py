"""Scenario (e): routes of the real `synchook api` process (one process, as `synchook api` runs) as a ratio to a
bare starlette + uvicorn endpoint doing one indexed SELECT (bench/bare_api.py), measured in the same run.

Routes: POST /v1/calendar/sync, GET /v1/calendar/sync/{id}, GET /v1/webhooks/subscriptions/{id} and
POST /v1/webhooks/subscriptions/{id}/test (each workspace has one subscription, at the bench receiver). The
bare endpoint is measured first and last; the ratios use the mean of the two.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from synchook.auth.models import Scope
from synchook.auth.service import create_key, create_workspace, hash_key
from synchook.context import AppContext
from tests.factories.webhooks import make_subscription

# Route key in the report -> (what is printed, the target ratio to the bare endpoint; issue 22 (e)).
ROUTES: dict[str, tuple[str, float]] = {
    "post_sync": ("POST /v1/calendar/sync", 0.25),
    "get_job": ("GET /v1/calendar/sync/{id}", 0.5),
    "get_subscription": ("GET /v1/webhooks/subscriptions/{id}", 0.5),
    "post_test": ("POST /v1/webhooks/subscriptions/{id}/test", 0.25),
}


@dataclass
class ApiTenant:
    key: str
    subscription_id: str


async def make_workspaces(
    ctx: AppContext, http: aiohttp.ClientSession, api_url: str, receiver_url: str, count: int
) -> list[ApiTenant]:
    """``count`` workspaces, each with a key, a Google connection (made through the API) and a subscription."""
    tenants: list[ApiTenant] = []
    scopes = [Scope.READ_CALENDAR, Scope.WRITE_CALENDAR, Scope.READ_WEBHOOKS, Scope.WRITE_WEBHOOKS]
    for index in range(count):
        async with ctx.db.session() as session:
            workspace = await create_workspace(session, name=f"bench-api-{index}")
            _, raw = await create_key(session, workspace_id=workspace.id, scopes=scopes)
        sub = await make_subscription(
            ctx, workspace.id, url=f"{receiver_url}/ok/api/{index}", event_types=("webhook.test",)
        )
        body = {"provider": "google", "account": f"bench{index}@example.com", "access_token": "a", "refresh_token": "r"}
        async with http.post(
            api_url + "/v1/calendar/connections", json=body, headers={"Authorization": f"Bearer {raw}"}
        ) as response:
            if response.status != 201:
                raise RuntimeError(f"connection set-up failed: {response.status} {await response.text()}")
        tenants.append(ApiTenant(raw, sub.id))
    return tenants


def _summary(latencies: list[float], errors: int, elapsed: float) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "errors": errors,
        "rps": len(ordered) / elapsed if elapsed else 0.0,
        "p50_ms": statistics.median(ordered) * 1000 if ordered else None,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000 if len(ordered) >= 100 else None,
    }


async def _phase(
    http: aiohttp.ClientSession, seconds: float, concurrency: int, call: Any
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            ok = await call()
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


async def api_scenario(
    ctx: AppContext,
    api_url: str,
    bare_url: str,
    receiver_url: str,
    *,
    workspaces: int = 50,
    seconds: float = 5.0,
    concurrency: int = 32,
) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        tenants = await make_workspaces(ctx, http, api_url, receiver_url, workspaces)
        hashes = [hash_key(t.key) for t in tenants]
        jobs: list[tuple[str, str]] = []

        def auth(tenant: ApiTenant) -> dict[str, str]:
            return {"Authorization": f"Bearer {tenant.key}"}

        async def bare() -> bool:
            async with http.get(f"{bare_url}/bare/{random.choice(hashes)}") as response:
                await response.read()
                return response.status == 200

        async def trigger() -> bool:
            tenant = random.choice(tenants)
            async with http.post(
                api_url + "/v1/calendar/sync", json={"mode": "incremental"}, headers=auth(tenant)
            ) as response:
                payload = await response.json()
                if response.status != 202:
                    return False
                jobs.append((tenant.key, payload["data"]["job_id"]))
                return True

        async def status() -> bool:
            key, job_id = random.choice(jobs)
            async with http.get(
                f"{api_url}/v1/calendar/sync/{job_id}", headers={"Authorization": f"Bearer {key}"}
            ) as response:
                await response.read()
                return response.status == 200

        async def subscription() -> bool:
            tenant = random.choice(tenants)
            async with http.get(
                f"{api_url}/v1/webhooks/subscriptions/{tenant.subscription_id}", headers=auth(tenant)
            ) as response:
                await response.read()
                return response.status == 200

        async def test_event() -> bool:
            tenant = random.choice(tenants)
            async with http.post(
                f"{api_url}/v1/webhooks/subscriptions/{tenant.subscription_id}/test", headers=auth(tenant)
            ) as response:
                await response.read()
                return response.status == 202

        bare_first = _summary(*await _phase(http, seconds, concurrency, bare))
        results: dict[str, dict[str, Any]] = {}
        for key, call in (
            ("post_sync", trigger),
            ("get_job", status),
            ("get_subscription", subscription),
            ("post_test", test_event),
        ):
            if key == "get_job" and not jobs:
                raise RuntimeError("no sync was accepted")
            results[key] = _summary(*await _phase(http, seconds, concurrency, call))
        bare_last = _summary(*await _phase(http, seconds, concurrency, bare))
    reference = statistics.mean([bare_first["rps"], bare_last["rps"]])
    for result in results.values():
        result["ratio"] = result["rps"] / reference if reference else 0.0
    return {
        "workspaces": workspaces,
        "concurrency": concurrency,
        "api_processes": 1,
        "bare": {"first": bare_first, "last": bare_last, "rps": reference},
        **results,
    }
