"""`synchook dev`: API + one worker + embedded Redis + SQLite under ./.synchook, in one process."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import uvicorn

from synchook import migrate
from synchook.auth.models import ALL_SCOPES
from synchook.auth.service import create_key, create_workspace, find_workspace
from synchook.crypto import generate_master_key
from synchook.db import Database
from synchook.errors import NotFound
from synchook.queue import EmbeddedRedis
from synchook.settings import DEFAULT_DATA_DIR, Settings

DEV_WORKSPACE = "dev"


def dev_settings(data_dir: Path = DEFAULT_DATA_DIR, **overrides: object) -> Settings:
    """Settings for dev: embedded defaults unless the environment says otherwise."""
    data_dir.mkdir(parents=True, exist_ok=True)
    defaults: dict[str, object] = {"dev": True}
    if "SYNCHOOK_SECRET_KEY" not in os.environ:
        defaults["secret_key"] = _dev_secret(data_dir / "secret.key")
    if "SYNCHOOK_ALLOW_PRIVATE_TARGETS" not in os.environ:
        defaults["allow_private_targets"] = True
    if "SYNCHOOK_LOG_FORMAT" not in os.environ:
        defaults["log_format"] = "text"
    defaults.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**defaults)  # type: ignore[arg-type]


def _dev_secret(path: Path) -> str:
    if not path.exists():
        path.write_text(generate_master_key() + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


async def bootstrap_dev_workspace(settings: Settings, data_dir: Path) -> tuple[str, str | None]:
    """Create workspace `dev` and an all-scopes key on first start; the key is kept in a 0600 file for dev only."""
    key_file = data_dir / "dev.key"
    db = Database(settings.database_url)
    try:
        async with db.session() as session:
            try:
                workspace = await find_workspace(session, name_or_id=DEV_WORKSPACE)
            except NotFound:
                workspace = await create_workspace(session, name=DEV_WORKSPACE)
                _, raw = await create_key(session, workspace_id=workspace.id, scopes=ALL_SCOPES, name="dev")
                key_file.write_text(raw + "\n")
                key_file.chmod(0o600)
        raw_key = key_file.read_text().strip() if key_file.exists() else None
        return workspace.id, raw_key
    finally:
        await db.close()


async def run_dev(settings: Settings, data_dir: Path = DEFAULT_DATA_DIR) -> None:
    from synchook.app import create_app
    from synchook.worker import build_worker

    embedded: EmbeddedRedis | None = None
    if settings.redis_url is None:
        embedded = EmbeddedRedis(data_dir / "redis").start()
        settings = settings.model_copy(update={"redis_url": embedded.url})
    try:
        await asyncio.to_thread(migrate.upgrade, settings.database_url)
        workspace_id, raw_key = await bootstrap_dev_workspace(settings, data_dir)
        base = f"http://{settings.host}:{settings.port}{settings.root_path}"
        print(f"Synchook dev is running: API {base}/v1 (workspace dev = {workspace_id})", flush=True)
        print(f"Admin console: {base}/admin", flush=True)
        print(f"Redis (embedded): {settings.redis_url}   Database: {settings.database_url}", flush=True)
        if raw_key:
            print("API key (all scopes), keep it secret:", flush=True)
            print(raw_key, flush=True)
        app = create_app(settings)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, lifespan="on")
        server = uvicorn.Server(config)
        worker = build_worker(settings, handle_signals=False)
        worker_task = asyncio.create_task(worker.async_run())
        try:
            await server.serve()
        finally:
            worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker_task
            await worker.close()
    finally:
        if embedded is not None:
            embedded.stop()
