"""The real `synchook` console script, run as a subprocess against a migrated SQLite file."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from synchook.context import AppContext
from synchook.queue import EmbeddedRedis
from synchook.root.app import create_app
from synchook.settings import Settings

SYNCHOOK = Path(sys.executable).with_name("synchook")


class Cli:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.database_url = f"sqlite+aiosqlite:///{directory / 'synchook.db'}"
        self.secret_key = self.run("secrets", "generate").stdout.strip()

    def env(self, **extra: str) -> dict[str, str]:
        # Only what the test gives: no SYNCHOOK_* of the surrounding shell leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCHOOK_")}
        if hasattr(self, "secret_key"):
            env["SYNCHOOK_SECRET_KEY"] = self.secret_key
        env["SYNCHOOK_DATABASE_URL"] = self.database_url
        env.update(extra)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(SYNCHOOK), *args],
            cwd=self.directory,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"synchook {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    made = Cli(tmp_path_factory.mktemp("cli"))
    assert "up to date" in made.run("migrate").stdout
    return made


@pytest.fixture
async def api(cli: Cli, redis_server: EmbeddedRedis) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP app over the CLI's database, to show the keys it prints work."""
    settings = Settings(database_url=cli.database_url, redis_url=redis_server.url, secret_key=SecretStr(cli.secret_key))
    ctx = await AppContext.open(settings)
    transport = httpx.ASGITransport(app=create_app(settings, context=ctx))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://synchook") as client:
            yield client
    finally:
        await ctx.close()


def test_secrets_generate_prints_32_url_safe_bytes(cli: Cli) -> None:
    values = {cli.run("secrets", "generate").stdout.strip() for _ in range(2)}
    assert len(values) == 2
    for value in values:
        assert len(base64.urlsafe_b64decode(value)) == 32
        assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")


def test_workspaces_create_prints_the_id(cli: Cli) -> None:
    out = cli.run("workspaces", "create", "acme-create").stdout.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("ws_")
    assert out[0] in cli.run("workspaces", "list").stdout


def test_a_duplicate_workspace_is_a_clear_error(cli: Cli) -> None:
    cli.run("workspaces", "create", "acme-dup")
    again = cli.run("workspaces", "create", "acme-dup", check=False)
    assert again.returncode != 0
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr


async def test_keys_create_authenticates_lists_and_revokes(
    cli: Cli, api: httpx.AsyncClient, redis_server: EmbeddedRedis
) -> None:
    cli.run("workspaces", "create", "acme-keys")
    out = cli.run("keys", "create", "--workspace", "acme-keys", "--scopes", "read:calendar,write:calendar")
    lines = out.stdout.strip().splitlines()
    key_id, raw = lines[0].strip(), lines[-1].strip()
    assert key_id.startswith("key_")
    assert raw.startswith("wbk_") and len(raw) >= 4 + 43
    assert raw not in out.stderr

    headers = {"Authorization": f"Bearer {raw}"}
    assert (await api.get("/v1/calendar/connections", headers=headers)).status_code == 200

    listed = cli.run("keys", "list", "--workspace", "acme-keys").stdout
    assert key_id in listed
    assert raw not in listed  # shown once, never again
    assert "active" in listed

    # With the API's Redis, as where it is deployed: the revocation is announced to the API's key cache.
    assert key_id in cli.run("keys", "revoke", key_id, SYNCHOOK_REDIS_URL=redis_server.url).stdout
    assert "revoked" in cli.run("keys", "list", "--workspace", "acme-keys").stdout
    response = await api.get("/v1/calendar/connections", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_key"


async def test_scopes_are_enforced_on_printed_keys(cli: Cli, api: httpx.AsyncClient) -> None:
    cli.run("workspaces", "create", "acme-scopes")
    raw = cli.run("keys", "create", "--workspace", "acme-scopes", "--scopes", "read:webhooks").stdout.split()[-1]
    response = await api.get("/v1/calendar/connections", headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 403


def test_keys_create_refuses_unknown_scopes_and_workspaces(cli: Cli) -> None:
    cli.run("workspaces", "create", "acme-bad")
    bad_scope = cli.run("keys", "create", "--workspace", "acme-bad", "--scopes", "root", check=False)
    assert bad_scope.returncode != 0 and "unknown scope" in bad_scope.stderr
    no_ws = cli.run("keys", "create", "--workspace", "nope", "--scopes", "read:calendar", check=False)
    assert no_ws.returncode != 0 and "not found" in no_ws.stderr
    bad_expiry = cli.run(
        "keys", "create", "--workspace", "acme-bad", "--scopes", "read:calendar", "--expires-in", "0", check=False
    )
    assert bad_expiry.returncode != 0


def test_keys_revoke_unknown_is_an_error(cli: Cli) -> None:
    result = cli.run("keys", "revoke", "key_01HYVTB5QK8ZA1QH82R7Q9N2PD", check=False)
    assert result.returncode != 0
    assert "not found" in result.stderr


def test_an_expiring_key_shows_its_expiry(cli: Cli) -> None:
    cli.run("workspaces", "create", "acme-exp")
    out = cli.run("keys", "create", "--workspace", "acme-exp", "--scopes", "read:calendar", "--expires-in", "7").stdout
    assert "expires: never" not in out


@pytest.mark.parametrize("command", ["api", "worker"])
def test_production_processes_refuse_to_start_without_redis(cli: Cli, command: str) -> None:
    result = cli.run(command, check=False, timeout=30)
    assert result.returncode != 0
    assert "SYNCHOOK_REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["api", "worker"])
def test_production_processes_refuse_to_start_without_a_secret_key(
    cli: Cli, redis_server: EmbeddedRedis, command: str
) -> None:
    env = cli.env(SYNCHOOK_REDIS_URL=redis_server.url)
    del env["SYNCHOOK_SECRET_KEY"]
    result = subprocess.run(
        [str(SYNCHOOK), command], cwd=cli.directory, env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode != 0
    assert "SYNCHOOK_SECRET_KEY" in result.stderr


def test_a_malformed_secret_key_is_refused_without_echoing_it(cli: Cli) -> None:
    result = cli.run("workspaces", "list", check=False, SYNCHOOK_SECRET_KEY="hunter2-not-base64")
    assert result.returncode != 0
    assert "SYNCHOOK_SECRET_KEY" in result.stderr
    assert "hunter2" not in result.stderr


def test_keys_revoke_of_a_revoked_key_says_it_already_was(cli: Cli) -> None:
    cli.run("workspaces", "create", "acme-revoke")
    key_id = cli.run("keys", "create", "--workspace", "acme-revoke", "--scopes", "read:calendar").stdout.split()[0]
    assert cli.run("keys", "revoke", key_id).stdout.strip() == f"revoked {key_id}"
    again = cli.run("keys", "revoke", key_id)  # idempotent: exit 0, the key is revoked either way
    assert again.stdout.startswith(f"{key_id} was already revoked at 20"), again.stdout
    assert again.stderr == ""


def test_output_into_a_closed_pipe_ends_quietly(cli: Cli) -> None:
    """`synchook deliveries list | head`: the reader is gone before the CLI writes."""
    cli.run("workspaces", "create", "acme-pipe")
    process = subprocess.Popen(
        [str(SYNCHOOK), "deliveries", "list", "--workspace", "acme-pipe"],
        cwd=cli.directory,
        env=cli.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the CLI has even imported: its first write meets a closed pipe
    err = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == 141, err  # 128 + SIGPIPE, as `yes | head` ends
    assert err == ""
