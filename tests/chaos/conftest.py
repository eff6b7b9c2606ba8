"""Chaos fixtures: a throwaway PostgreSQL cluster of the suite's own (stopped and restarted at will,
so other test runs on the machine are never touched)."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from synchook.queue import free_port
from synchook.root import migrate
from tests.support.postgres import BIN_ENV, create_database, drop_database, unique_name

PG_USER = "postgres"  # pg_ctl refuses to run as root


def _bin_dir() -> Path | None:
    configured = os.environ.get(BIN_ENV)
    if configured and (Path(configured) / "pg_ctl").exists():
        return Path(configured)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: [int(x) for x in p.split("/")[4:5]])
    return Path(found[-1]).parent if found else None


@dataclass
class PgCluster:
    """One PostgreSQL server in a temp dir, on a free loopback port, trust auth."""

    bin_dir: Path
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def base_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 90) -> None:
        command = [str(self.bin_dir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", PG_USER, "--", *command]
        # Output to a file, never a pipe: the server inherits it and would keep a pipe open.
        with (self.root / "pg_ctl.out").open("ab") as out:
            subprocess.run(
                command, check=True, cwd="/", stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=timeout
            )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        message = "no PostgreSQL server binaries (set SYNCHOOK_TEST_POSTGRES_BIN; .ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="synchook-chaos-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam(PG_USER)
        os.chown(root, owner.pw_uid, owner.pw_gid)
    root.chmod(0o755)
    cluster = PgCluster(bin_dir, root, free_port())
    cluster._run(
        "initdb",
        "-D",
        str(cluster.data),
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--no-locale",
        "--no-sync",
    )
    with (cluster.data / "postgresql.auto.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {cluster.port}\nunix_socket_directories = '{root}'\n"
            "max_connections = 300\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "log_min_messages = warning\n"
        )
    try:
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database(pg_cluster: PgCluster) -> Iterator[str]:
    """A migrated database of its own on the throwaway cluster."""
    name = unique_name("synchook_chaos")
    url = asyncio.run(create_database(pg_cluster.base_url, name))
    migrate.upgrade(url)
    yield url
    with contextlib.suppress(Exception):
        asyncio.run(drop_database(pg_cluster.base_url, name))
