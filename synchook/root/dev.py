"""`synchook dev`: API + workers + embedded Redis + SQLite under ./.synchook, one command.

The API runs in this process; the workers are `synchook worker` child processes, one per core up to two
(synchook.root.dev_worker), and Redis a redis-server child: all stop with dev, and die with it should it be
killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn

from synchook.auth.models import ALL_SCOPES
from synchook.auth.service import create_key, create_workspace, find_workspace
from synchook.crypto import generate_master_key
from synchook.db import Database
from synchook.errors import NotFound
from synchook.queue import EmbeddedRedis
from synchook.root import migrate
from synchook.root.dev_worker import WorkerProcesses, dev_worker_count
from synchook.settings import DEFAULT_DATA_DIR, Settings

logger = logging.getLogger(__name__)

DEV_WORKSPACE = "dev"
# Where a running `synchook dev` says which embedded Redis it runs, so the CLI beside it can enqueue there.
DEV_REDIS_FILE = "redis.json"
PORT_SEARCH = 20  # how many ports above a busy one are tried for the suggestion


class PortUnavailable(Exception):
    pass


def dev_settings(data_dir: Path = DEFAULT_DATA_DIR, **overrides: object) -> Settings:
    """Settings for dev: embedded defaults unless the environment says otherwise.

    Raises PortUnavailable, before anything is created, when the API's host:port is taken.
    """
    defaults: dict[str, object] = {"dev": True}
    if "SYNCHOOK_ALLOW_PRIVATE_TARGETS" not in os.environ:
        defaults["allow_private_targets"] = True
    if "SYNCHOOK_LOG_FORMAT" not in os.environ:
        defaults["log_format"] = "text"
    defaults.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**defaults)  # type: ignore[arg-type]
    check_port(settings.host, settings.port)
    if "SYNCHOOK_PUBLIC_URL" not in os.environ and settings.public_url is None:
        # With the fake providers on loopback, push works out of the box: they notify this server directly.
        own = loopback_public_url(settings)
        if own is not None:
            defaults["public_url"] = own
            settings = Settings(**defaults)  # type: ignore[arg-type]
    data_dir.mkdir(parents=True, exist_ok=True)
    if "SYNCHOOK_SECRET_KEY" in os.environ:
        return settings
    return Settings(**defaults, secret_key=_dev_secret(data_dir / "secret.key"))  # type: ignore[arg-type]


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def loopback_public_url(settings: Settings) -> str | None:
    """This dev server's own URL, when every provider URL points at loopback (`python -m synchook.fakes`).

    Real providers cannot reach a loopback address, so with them push stays off until SYNCHOOK_PUBLIC_URL is set.
    """
    provider_urls = (settings.google_api_url, settings.microsoft_graph_url)
    if settings.port == 0 or not all(_is_loopback(url) for url in provider_urls):
        return None
    host = settings.host
    if not host or _is_unspecified(host):  # listening everywhere: the fakes reach it on loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def describe_push(settings: Settings) -> str:
    """The line `synchook dev` prints about push (CONTRACT §7)."""
    if settings.push_enabled:
        return (
            f"Push: on, providers notify {settings.public_url}/v1/providers/… (debounce {settings.push_debounce:g} s)"
        )
    return (
        "Push: off (set SYNCHOOK_PUBLIC_URL to a URL the providers can reach); "
        f"calendars are polled every {settings.background_sync_interval} s"
    )


def check_port(host: str, port: int) -> None:
    """Raise PortUnavailable with one line a user can act on when host:port cannot be listened on."""
    if port == 0:
        return
    try:
        _bind(host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        free = next((p for p in range(port + 1, min(port + PORT_SEARCH, 65535) + 1) if _bindable(host, p)), None)
        hint = f"; try --port {free}" if free is not None else "; pick another with --port"
        raise PortUnavailable(f"port {port} is in use{hint}") from None


def _bind(host: str, port: int) -> None:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: a port a closed server left in TIME_WAIT is free, not busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


def _bindable(host: str, port: int) -> bool:
    try:
        _bind(host, port)
    except OSError:
        return False
    return True


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


def running_dev_redis_url(data_dir: Path = DEFAULT_DATA_DIR) -> str | None:
    """The embedded Redis of a `synchook dev` running on ``data_dir``, if one runs (a killed one's file is stale)."""
    try:
        record = json.loads((data_dir / DEV_REDIS_FILE).read_text())
        os.kill(int(record["pid"]), 0)  # signal 0: only asks whether that process still exists
        return str(record["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _announce_redis(data_dir: Path, url: str) -> Iterator[None]:
    path = data_dir / DEV_REDIS_FILE
    path.write_text(json.dumps({"pid": os.getpid(), "url": url}) + "\n")
    path.chmod(0o600)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # run_dev owns SIGINT/SIGTERM (_Stop). uvicorn's handlers re-raise the signal once it has shut down,
        # which ended a Ctrl-C'd dev with KeyboardInterrupt (exit 130) before the worker and Redis had stopped.
        yield


class _Stop:
    """SIGINT/SIGTERM: stop the API, then the worker, then Redis, and return (exit 0). A second one hurries:
    the API stops waiting for open connections, the worker process is ended at once."""

    def __init__(self) -> None:
        self.requested = False
        self.server: uvicorn.Server | None = None
        self.worker: WorkerProcesses | None = None

    def __call__(self) -> None:
        if self.server is not None:
            self.server.force_exit = self.server.should_exit
            self.server.should_exit = True
        if self.requested and self.worker is not None:
            self.worker.kill()
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Stop]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self)
        try:
            yield self
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


async def run_dev(settings: Settings, data_dir: Path = DEFAULT_DATA_DIR) -> None:
    """Run until SIGINT/SIGTERM, then stop in order (API, worker, Redis) and return; no child outlives it."""
    with _Stop().installed() as stop:
        embedded: EmbeddedRedis | None = None
        if settings.redis_url is None:
            embedded = EmbeddedRedis(data_dir / "redis", tied=True).start()
            settings = settings.model_copy(update={"redis_url": embedded.url})
        try:
            with _announce_redis(data_dir, embedded.url) if embedded else contextlib.nullcontext():
                await _serve(settings, data_dir, stop)
        finally:
            if embedded is not None:
                embedded.stop()


async def _serve(settings: Settings, data_dir: Path, stop: _Stop) -> None:
    from synchook.root.app import create_app

    await asyncio.to_thread(migrate.upgrade, settings.database_url)
    workspace_id, raw_key = await bootstrap_dev_workspace(settings, data_dir)
    if stop.requested:
        return
    base = f"http://{settings.host}:{settings.port}{settings.root_path}"
    print(f"Synchook dev is running: API {base}/v1 (workspace dev = {workspace_id})", flush=True)
    print(f"Admin console: {base}/admin", flush=True)
    print(f"Redis (embedded): {settings.redis_url}   Database: {settings.database_url}", flush=True)
    print(describe_push(settings), flush=True)
    if raw_key:
        print("API key (all scopes), keep it secret:", flush=True)
        print(raw_key, flush=True)
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, lifespan="on")
    server = stop.server = _Server(config)
    worker = stop.worker = WorkerProcesses(settings, dev_worker_count())
    worker.start()
    try:
        await server.serve()
    finally:
        await worker.stop()  # Redis is still up: run_dev stops it after this
