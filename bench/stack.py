"""The real stack as separate OS processes: redis-server, the receiver, `synchook api`, N x `synchook worker`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

from synchook.crypto import generate_master_key
from synchook.queue import QUEUE_NAME, EmbeddedRedis, free_port

REPO = Path(__file__).resolve().parent.parent
SYNCHOOK = str(Path(sys.executable).with_name("synchook"))


def postgres_server_url() -> str:
    """The PostgreSQL server a `--db postgres` bench makes its throwaway database on (any database of it)."""
    return (
        os.environ.get("SYNCHOOK_BENCH_POSTGRES_URL")
        or os.environ.get("SYNCHOOK_TEST_POSTGRES_URL")
        or "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )


@contextlib.contextmanager
def bench_database(db: str, run_dir: Path, prefix: str) -> Iterator[str]:
    """The URL of the bench's database: SQLite's in ``run_dir``, or a throwaway database on the PostgreSQL server,
    dropped on the way out, however the run ends (SIGTERM included: see :func:`stop_on_sigterm_as_on_ctrl_c`)."""
    if db != "postgres":
        yield f"sqlite+aiosqlite:///{run_dir}/bench.db"
        return
    from tests.support.postgres import create_database, drop_database, unique_name

    base, name = postgres_server_url(), unique_name(prefix)
    try:  # from before CREATE DATABASE: a signal during it leaves nothing either
        yield asyncio.run(create_database(base, name))
    finally:
        asyncio.run(drop_database(base, name))


def stop_on_sigterm_as_on_ctrl_c() -> None:
    """A bench stopped by `kill` or `timeout` cleans up as Ctrl-C has it do: its stack stopped and its database
    dropped (SIGTERM's default ended the process at once, leaving both; one database was 298 MB)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def exit_when_done(main: Callable[[], int | None]) -> NoReturn:
    """Run a bench's ``main`` and exit with its status; stopped (Ctrl-C, SIGTERM), one line instead of a traceback:
    the stack and the database were cleaned up on the way out."""
    try:
        status = main()
    except KeyboardInterrupt:
        print("bench: interrupted; its stack stopped and its database dropped", file=sys.stderr, flush=True)
        sys.exit(130)
    sys.exit(status)


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) in MiB, from /proc (psutil has no peak on Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used so far, from /proc (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stack:
    def __init__(self, *, database_url: str, workers: int, run_dir: Path, env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        self.workers = workers
        self.run_dir = run_dir
        self.secret_key = generate_master_key()
        self.redis = EmbeddedRedis(run_dir / "redis")
        self.extra_env = env or {}
        self.api_port = free_port()
        self.receiver_port = 0
        self._receiver: subprocess.Popen[str] | None = None
        self._api: subprocess.Popen[bytes] | None = None
        self.worker_procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[Any]] = []

    # --- environment ---------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "SYNCHOOK_DATABASE_URL": self.database_url,
                "SYNCHOOK_REDIS_URL": self.redis.url,
                "SYNCHOOK_SECRET_KEY": self.secret_key,
                "SYNCHOOK_ALLOW_PRIVATE_TARGETS": "true",
                "SYNCHOOK_LOG_FORMAT": "json",
                "SYNCHOOK_HOST": "127.0.0.1",
                "SYNCHOOK_PORT": str(self.api_port),
                # The isolation scenario's hanging endpoint sleeps past this.
                "SYNCHOOK_DELIVERY_TIMEOUT": "2",
                # The API scenario measures the server, not the product's caps.
                "SYNCHOOK_ON_DEMAND_SYNCS_PER_HOUR": "100000000",
                "SYNCHOOK_API_REQUESTS_PER_MINUTE": "100000000",
                "SYNCHOOK_BACKGROUND_SYNC_INTERVAL": "0",
                # Sync jobs the API scenario queues fail fast against a closed port, off the internet.
                "SYNCHOOK_GOOGLE_API_URL": "http://127.0.0.1:9",
                "SYNCHOOK_GOOGLE_TOKEN_URL": "http://127.0.0.1:9/token",
                "SYNCHOOK_MICROSOFT_GRAPH_URL": "http://127.0.0.1:9",
                "SYNCHOOK_MICROSOFT_TOKEN_URL": "http://127.0.0.1:9/token",
            }
        )
        env.update(self.extra_env)
        return env

    def _log(self, name: str) -> IO[Any]:
        handle = open(self.run_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(handle)
        return handle

    # --- processes -----------------------------------------------------------------------------------

    def start(self) -> Stack:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        self._start_receiver()
        self._api = subprocess.Popen(
            [SYNCHOOK, "api"], env=self.env(), cwd=self.run_dir, stdout=self._log("api"), stderr=subprocess.STDOUT
        )
        self._wait_http(f"http://127.0.0.1:{self.api_port}/healthz", self._api)
        return self

    def _start_receiver(self) -> None:
        self._receiver = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver"],
            env=self.env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._log("receiver"),
            text=True,
        )
        assert self._receiver.stdout is not None
        line = self._receiver.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError("the bench receiver did not start")
        self.receiver_port = int(line.split()[1])

    def start_workers(self, count: int | None = None) -> list[int]:
        """Start workers and return once one of them polls the queue (arq's health-check key appears)."""
        import redis

        client = redis.Redis.from_url(self.redis.url)
        health_key = QUEUE_NAME + ":health-check"
        client.delete(health_key)
        for _ in range(count or self.workers):
            self.worker_procs.append(
                subprocess.Popen(
                    [SYNCHOOK, "worker"],
                    env=self.env(),
                    cwd=self.run_dir,
                    stdout=self._log("worker"),
                    stderr=subprocess.STDOUT,
                )
            )
        # A loaded 2-core machine took over 30 s to import a worker (load average 10, two benches at once).
        deadline = time.monotonic() + 120
        while not client.exists(health_key):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.worker_procs):
                raise RuntimeError(f"a worker did not start (see {self.run_dir}/worker.log)")
            time.sleep(0.05)
        client.close()
        time.sleep(0.3)  # the others start alongside
        return [p.pid for p in self.worker_procs]

    def worker_peaks(self) -> list[float]:
        return [peak_rss_mib(p.pid) or 0.0 for p in self.worker_procs]

    def receiver_cpu(self) -> float:
        return cpu_seconds(self._receiver.pid) if self._receiver else 0.0

    def worker_cpu(self) -> float:
        """CPU seconds the running workers have used: on a shared machine, a steadier cost than a rate."""
        return sum(cpu_seconds(p.pid) for p in self.worker_procs)

    def stop_workers(self) -> None:
        for proc in self.worker_procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.worker_procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.worker_procs = []

    def stop(self) -> None:
        self.stop_workers()
        for proc in (self._api, self._receiver):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.redis.stop()
        for handle in self._logs:
            handle.close()

    @staticmethod
    def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"process for {url} exited early")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{url} did not come up")

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"
