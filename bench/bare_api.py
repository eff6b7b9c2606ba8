"""Scenario (e)'s reference: the framework's own limit on this machine, in the same run as the real API.

    python -m bench.bare_api PORT      # serves GET /bare/{key_hash}; SYNCHOOK_DATABASE_URL names the database

A bare starlette app under one uvicorn process (as `synchook api` runs), one route, one indexed
SELECT per request through SQLAlchemy's async engine (the API key lookup every /v1 request starts
with: ``api_keys.key_hash`` is unique), answered as JSON. No middleware, no auth, no envelope, no
session: what is left is starlette + uvicorn + the driver, so a route's ratio to it says how much
the product adds.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_LOOKUP = sa.text("SELECT id, workspace_id FROM api_keys WHERE key_hash = :key_hash")


def build_app(database_url: str) -> Starlette:
    engine: AsyncEngine | None = None

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        nonlocal engine
        engine = create_async_engine(database_url, pool_size=20, max_overflow=0)
        yield
        await engine.dispose()

    async def lookup(request: Request) -> JSONResponse:
        assert engine is not None
        async with engine.connect() as connection:
            row = (await connection.execute(_LOOKUP, {"key_hash": request.path_params["key_hash"]})).first()
        if row is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({"data": {"id": row[0], "workspace_id": row[1]}})

    return Starlette(routes=[Route("/bare/{key_hash}", lookup)], lifespan=lifespan)


@contextlib.contextmanager
def running(env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """The bare server as its own process (as `synchook api` is) for the duration; yields its base URL."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_api", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bare API did not start (see {log})")
            try:
                urllib.request.urlopen(url + "/bare/none", timeout=1)
            except urllib.error.HTTPError:
                break  # 404: it answers
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    port = int(sys.argv[1])
    app = build_app(os.environ["SYNCHOOK_DATABASE_URL"])
    # loop="auto": uvloop when installed, as for `synchook api`.
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
