"""Scenario (e): POST /v1/calendar/sync and GET job status against the real `synchook api` process."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

import aiohttp

from synchook.auth.models import Scope
from synchook.auth.service import create_key, create_workspace
from synchook.context import AppContext


async def make_workspaces(ctx: AppContext, http: aiohttp.ClientSession, api_url: str, count: int) -> list[str]:
    """``count`` workspaces, each with a key and a Google connection (made through the API); returns the keys."""
    keys: list[str] = []
    for index in range(count):
        async with ctx.db.session() as session:
            workspace = await create_workspace(session, name=f"bench-api-{index}")
            _, raw = await create_key(
                session, workspace_id=workspace.id, scopes=[Scope.READ_CALENDAR, Scope.WRITE_CALENDAR]
            )
        body = {"provider": "google", "account": f"bench{index}@example.com", "access_token": "a", "refresh_token": "r"}
        async with http.post(
            api_url + "/v1/calendar/connections", json=body, headers={"Authorization": f"Bearer {raw}"}
        ) as response:
            if response.status != 201:
                raise RuntimeError(f"connection set-up failed: {response.status} {await response.text()}")
        keys.append(raw)
    return keys


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
    ctx: AppContext, api_url: str, *, workspaces: int = 50, seconds: float = 8.0, concurrency: int = 32
) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        keys = await make_workspaces(ctx, http, api_url, workspaces)
        jobs: list[tuple[str, str]] = []

        async def trigger() -> bool:
            key = random.choice(keys)
            async with http.post(
                api_url + "/v1/calendar/sync", json={"mode": "incremental"}, headers={"Authorization": f"Bearer {key}"}
            ) as response:
                payload = await response.json()
                if response.status != 202:
                    return False
                jobs.append((key, payload["data"]["job_id"]))
                return True

        async def status() -> bool:
            key, job_id = random.choice(jobs)
            async with http.get(
                f"{api_url}/v1/calendar/sync/{job_id}", headers={"Authorization": f"Bearer {key}"}
            ) as response:
                await response.read()
                return response.status == 200

        post = _summary(*await _phase(http, seconds, concurrency, trigger))
        if not jobs:
            raise RuntimeError("no sync was accepted")
        get = _summary(*await _phase(http, seconds, concurrency, status))
    return {"workspaces": workspaces, "concurrency": concurrency, "post_sync": post, "get_job": get}
