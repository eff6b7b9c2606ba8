"""The workers `synchook dev` runs beside its API: `synchook worker` as child processes, tied to dev.

In one process, the API and the worker shared one event loop (and one core): every request waited
behind the worker's sends and fan-outs, and the worker's SQLite went through aiosqlite's thread
because an inline ``BEGIN`` behind an API transaction on the same loop would stall both. A worker
process of its own runs SQLite inline and uses the second core. `make run` stays one command: dev
starts the children, and stops them, after the API, on Ctrl-C or SIGTERM; a child dies with dev
should dev be killed, and is started again should it exit on its own.

One worker process is bound to one core (the GIL), so a single child left the second core of a 2-core
machine idle while it saturated its own: dev runs one worker per core, up to ``MAX_DEV_WORKERS`` (the
workers share SQLite's one writer, so more would only queue on it). That is the bench's own default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys

from synchook.queue import die_with_parent
from synchook.settings import Settings

__all__ = ["WorkerProcess", "WorkerProcesses", "dev_worker_count"]

logger = logging.getLogger(__name__)

RESTART_DELAY = 1.0
MAX_DEV_WORKERS = 2


def dev_worker_count() -> int:
    """One worker process per core, at most ``MAX_DEV_WORKERS``."""
    return max(1, min(MAX_DEV_WORKERS, len(os.sched_getaffinity(0))))


def _worker_env(settings: Settings) -> dict[str, str]:
    """dev's settings for the child: what dev decided itself (not read from the environment) as variables;
    the rest is the environment the child inherits."""
    env = dict(os.environ)
    env.update(
        {
            "SYNCHOOK_DEV": "true",
            "SYNCHOOK_DATABASE_URL": settings.database_url,
            "SYNCHOOK_ALLOW_PRIVATE_TARGETS": "true" if settings.allow_private_targets else "false",
            "SYNCHOOK_LOG_FORMAT": settings.log_format,
        }
    )
    if settings.redis_url is not None:
        env["SYNCHOOK_REDIS_URL"] = settings.redis_url
    if settings.secret_key is not None:
        env["SYNCHOOK_SECRET_KEY"] = settings.secret_key.get_secret_value()
    return env


class WorkerProcess:
    """`synchook worker` for dev: ``start``, then ``stop`` (graceful: running jobs finish) or ``kill``."""

    def __init__(self, settings: Settings) -> None:
        self._env = _worker_env(settings)
        self._process: subprocess.Popen[bytes] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        # Python's own fork and exec (uvloop's reset the child's signal handling after preexec_fn), from the
        # loop's thread: the kernel ties the child to the thread that forks it (die_with_parent).
        self._process = subprocess.Popen(
            [sys.executable, "-m", "synchook.cli", "worker"],
            env=self._env,
            # Not in the terminal's process group: Ctrl-C reaches dev alone, which stops the worker after the
            # API (a SIGINT during the worker's imports printed a KeyboardInterrupt traceback).
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._watch = asyncio.create_task(self._restart_on_exit(self._process), name="dev.worker-process")

    async def _restart_on_exit(self, process: subprocess.Popen[bytes]) -> None:
        code = await _exited(process)
        if self._stopping:
            return
        logger.error("the worker process exited (code %s); starting another in %.0f s", code, RESTART_DELAY)
        await asyncio.sleep(RESTART_DELAY)
        if not self._stopping:
            self.start()

    def kill(self) -> None:
        """A second Ctrl-C: end the worker now. What it was sending is sent again once its lease runs out."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()

    async def stop(self) -> None:
        """As `synchook worker` on SIGTERM: no new job; running ones get job_completion_wait to finish."""
        self._stopping = True
        process = self._process
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if process is None or process.poll() is not None:
            return
        logger.info("stopping the worker process; Ctrl-C again ends it at once")
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        await _exited(process)


async def _exited(process: subprocess.Popen[bytes]) -> int:
    """Its exit code, once it has exited."""
    return await asyncio.to_thread(process.wait)


class WorkerProcesses:
    """dev's workers, started, stopped and killed together."""

    def __init__(self, settings: Settings, count: int) -> None:
        self._workers = [WorkerProcess(settings) for _ in range(count)]

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def kill(self) -> None:
        for worker in self._workers:
            worker.kill()

    async def stop(self) -> None:
        await asyncio.gather(*(worker.stop() for worker in self._workers))
