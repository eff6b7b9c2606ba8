"""Real `synchook` OS processes for cluster and chaos tests: start, health-wait, signal, restart, read logs.

    cluster = Cluster(env, workdir=tmp_path)
    cluster.cli("migrate")
    api = cluster.start_api("api-1")           # waits for GET /healthz
    worker = cluster.start_worker("worker-1")
    cluster.kill(worker)                        # SIGKILL, reaped
    cluster.stop_all()                          # SIGTERM, then SIGKILL past a bound

Each process writes stdout and stderr to its own log file under ``workdir`` (never a pipe: a pipe
nobody reads fills up and blocks the process), so a failing test can print the tail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from synchook.queue import free_port

HEALTH_TIMEOUT = 30.0


@dataclass
class Proc:
    name: str
    kind: str  # "api" | "worker"
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        assert self.port is not None, f"{self.name} serves no HTTP"
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def base_env(**values: str) -> dict[str, str]:
    """The current environment without any SYNCHOOK_* variable, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCHOOK_")}
    env.update(values)
    return env


class Cluster:
    """Owns every process it starts; ``stop_all`` (or the context manager) ends them, by pid only."""

    def __init__(self, env: dict[str, str], *, workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        self._seq = 0

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_all()

    # --- one-shot CLI commands -------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 120) -> str:
        """Run `synchook ARGS` to completion and return its stdout; raises with the output on failure."""
        done = subprocess.run(
            [sys.executable, "-m", "synchook.cli", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"synchook {' '.join(args[:2])} exited {done.returncode}:\n"
                f"{done.stdout.decode(errors='replace')}\n{done.stderr.decode(errors='replace')}"
            )
        return done.stdout.decode()

    def create_workspace(self, name: str) -> str:
        return self.cli("workspaces", "create", name).strip().splitlines()[-1]

    def create_key(self, workspace: str, scopes: str) -> str:
        """The new key (`wbk_…`): the last line `synchook keys create` prints."""
        return self.cli("keys", "create", "--workspace", workspace, "--scopes", scopes).strip().splitlines()[-1]

    # --- long-running processes --------------------------------------------------------------------

    def _spawn(self, kind: str, name: str, args: list[str], env: dict[str, str], port: int | None) -> Proc:
        self._seq += 1
        log_path = self.workdir / f"{self._seq:02d}-{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "synchook.cli", *args],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, kind, popen, log_path, port)
        self.procs.append(proc)
        return proc

    def start_api(self, name: str, *, wait: bool = True, **env: str) -> Proc:
        port = free_port()
        proc = self._spawn("api", name, ["api", "--host", "127.0.0.1", "--port", str(port)], {**self.env, **env}, port)
        if wait:
            self.wait_healthy(proc)
        return proc

    def start_worker(self, name: str, **env: str) -> Proc:
        return self._spawn("worker", name, ["worker"], {**self.env, **env}, None)

    def wait_healthy(self, proc: Proc, *, timeout: float = HEALTH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited {proc.popen.returncode} before /healthz:\n{proc.log()[-3000:]}")
            try:
                if httpx.get(proc.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{proc.name}: no /healthz within {timeout}s:\n{proc.log()[-3000:]}")

    def restart(self, proc: Proc, **env: str) -> Proc:
        """A fresh process of the same kind and name (the old one must be gone)."""
        assert not proc.alive(), f"{proc.name} still runs"
        if proc.kind == "api":
            return self.start_api(proc.name, **env)
        return self.start_worker(proc.name, **env)

    # --- signals -------------------------------------------------------------------------------------

    def kill(self, proc: Proc) -> int:
        """SIGKILL and reap; returns the exit code (-9)."""
        if proc.alive():
            proc.popen.send_signal(signal.SIGKILL)
        return proc.popen.wait(timeout=10)

    def terminate(self, proc: Proc, *, bound: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it outlives ``bound`` seconds; returns the exit code."""
        if proc.alive():
            proc.popen.send_signal(signal.SIGTERM)
            try:
                return proc.popen.wait(timeout=bound)
            except subprocess.TimeoutExpired:
                proc.popen.send_signal(signal.SIGKILL)
        return proc.popen.wait(timeout=10)

    def stop_all(self, *, bound: float = 20.0) -> None:
        running = [p for p in self.procs if p.alive()]
        for proc in running:
            proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + bound
        for proc in running:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.send_signal(signal.SIGKILL)
                proc.popen.wait(timeout=10)

    # --- diagnostics -----------------------------------------------------------------------------------

    def logs(self, *, tail: int = 4000) -> str:
        """Every process's log tail, for a failure message."""
        return "\n".join(
            f"--- {p.name} (pid {p.pid}, exit {p.popen.returncode}) ---\n{p.log()[-tail:]}" for p in self.procs
        )

    def unexpected_exits(self, killed: set[int]) -> list[Proc]:
        """Processes that died by themselves (not one of the pids ``killed`` on purpose)."""
        return [p for p in self.procs if not p.alive() and p.pid not in killed and p.popen.returncode != 0]
