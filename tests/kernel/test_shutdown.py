"""Process lifecycle: `synchook worker` and `synchook api` as real OS processes stop cleanly on SIGTERM;
the API starts (and reports not ready) while Redis is unreachable."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from arq.connections import ArqRedis

from synchook.crypto import generate_master_key
from synchook.queue import QUEUE_NAME, EmbeddedRedis, free_port
from synchook.root import migrate
from synchook.root.app import create_app
from synchook.settings import Settings

SHUTDOWN_BOUND = 15.0


@pytest.fixture
def migrated_sqlite(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'synchook.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
def process_env(migrated_sqlite: str, redis_server: EmbeddedRedis) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCHOOK_")}
    env.update(
        SYNCHOOK_DATABASE_URL=migrated_sqlite,
        SYNCHOOK_REDIS_URL=redis_server.url,
        SYNCHOOK_SECRET_KEY=generate_master_key(),
        SYNCHOOK_LOG_FORMAT="json",
    )
    return env


@pytest.fixture
def start(tmp_path: Path, process_env: dict[str, str]) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def run(*args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "synchook.cli", *args],
            cwd=tmp_path,  # no ./.synchook of the checkout leaks in
            env=process_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


async def wait_for_exit(process: subprocess.Popen[bytes], bound: float) -> tuple[int, str]:
    deadline = time.monotonic() + bound
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            output = process.communicate(timeout=10)[0].decode(errors="replace")
            pytest.fail(f"still running {bound}s after SIGTERM:\n{output[-3000:]}")
        await asyncio.sleep(0.05)
    assert process.stdout is not None
    return process.returncode, process.stdout.read().decode(errors="replace")


async def test_worker_exits_cleanly_on_sigterm(start: object, redis: ArqRedis) -> None:
    process = start("worker")  # type: ignore[operator]
    # arq records a health check in Redis once its poll loop runs: the worker is up.
    deadline = time.monotonic() + 30
    while not await redis.exists(f"{QUEUE_NAME}:health-check"):
        assert process.poll() is None, process.stdout.read().decode(errors="replace")
        assert time.monotonic() < deadline, "worker did not start"
        await asyncio.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    code, output = await wait_for_exit(process, SHUTDOWN_BOUND)
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


async def test_api_serves_then_exits_cleanly_on_sigterm(start: object) -> None:
    port = free_port()
    process = start("api", "--host", "127.0.0.1", "--port", str(port))  # type: ignore[operator]
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as http:
        while True:
            assert process.poll() is None, process.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, "api did not start"
            try:
                response = await http.get("/healthz")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        assert response.status_code == 200
    process.send_signal(signal.SIGTERM)
    code, output = await wait_for_exit(process, SHUTDOWN_BOUND)
    # uvicorn finishes its graceful shutdown, then re-raises the signal so a supervisor sees why it stopped.
    assert code in (0, -signal.SIGTERM), output[-3000:]
    assert "Application shutdown complete." in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


async def test_api_starts_without_redis_and_is_not_ready(migrated_sqlite: str) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = Settings(database_url=migrated_sqlite, redis_url=dead_redis, secret_key=generate_master_key())
    app = create_app(settings)
    try:
        # The lifespan directly, not uvicorn: uvicorn answers a failed startup with SystemExit from a task,
        # which would end the whole pytest session instead of failing this test.
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as http:
                assert (await http.get("/healthz")).status_code == 200
                response = await http.get("/readyz")
    except Exception as exc:
        pytest.fail(f"the API did not start while Redis is unreachable ({type(exc).__name__}): it must start")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] != "ok"
