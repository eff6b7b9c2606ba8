"""SSRF through the API: with private targets not allowed, hostile webhook URLs are 422 invalid_url.

DNS is controlled by replacing url_safety's resolver (the API server runs in this process); nothing
else is faked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx
import pytest

from synchook import url_safety
from synchook.context import AppContext
from tests.factories import Tenant, make_tenant

BASE = "/v1/webhooks/subscriptions"
HINT = "SYNCHOOK_ALLOW_PRIVATE_TARGETS"

# (url, whether the refusal is about a private target and so says how to allow it)
HOSTILE: list[tuple[str, bool]] = [
    ("https://127.0.0.1/hook", True),
    ("https://localhost/hook", True),
    ("https://LOCALHOST./hook", True),
    ("https://api.localhost/hook", True),
    ("https://10.0.0.1/hook", True),
    ("https://172.16.5.4/hook", True),
    ("https://192.168.1.1/hook", True),
    ("https://169.254.169.254/latest/meta-data/", True),
    ("https://100.64.0.1/hook", True),
    ("https://224.0.0.1/hook", True),
    ("https://[::1]/hook", True),
    ("https://[::ffff:127.0.0.1]/hook", True),
    ("https://[::ffff:a9fe:a9fe]/hook", True),
    ("https://[fe80::1]/hook", True),
    ("https://[fd00::1]/hook", True),
    ("https://[fd00:ec2::254]/hook", True),
    ("https://0.0.0.0/hook", True),
    ("https://2130706433/hook", True),
    ("https://0177.0.0.1/hook", True),
    ("https://0x7f.0.0.1/hook", True),
    ("https://127.1/hook", True),
    ("https://metadata.google.internal/computeMetadata/v1/", True),
    ("https://intranet/hook", True),
    ("http://receiver.example.com/hook", True),
    ("https://user:pass@receiver.example.com/hook", False),
    ("https://user@receiver.example.com/hook", False),
    ("ftp://receiver.example.com/hook", False),
    ("https://receiver.example.com\\@127.0.0.1/hook", False),
    ("https://256.256.256.256/hook", False),
]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"allow_private_targets": False}


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Host → addresses; unknown hosts do not resolve."""
    table: dict[str, list[str]] = {"receiver.example.com": ["93.184.216.34"]}

    async def resolve(host: str, port: int) -> Iterable[str]:
        if host not in table:
            raise OSError("name does not resolve")
        return table[host]

    monkeypatch.setattr(url_safety, "_getaddrinfo", resolve)
    return table


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


def assert_invalid_url(response: httpx.Response, *, private: bool) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_url"
    assert error["field"] == "url"
    assert (HINT in error["message"]) is private
    message: str = error["message"]
    return message


def test_at_least_twenty_hostile_targets() -> None:
    assert len(HOSTILE) >= 20


@pytest.mark.parametrize(("url", "private"), HOSTILE)
async def test_create_refuses_hostile_targets(
    client: httpx.AsyncClient, tenant: Tenant, dns: dict[str, list[str]], url: str, private: bool
) -> None:
    response = await client.post(BASE, json={"url": url, "event_types": ["*"]}, headers=tenant.headers)
    message = assert_invalid_url(response, private=private)
    assert "pass@" not in message  # the URL (and any credentials in it) is never echoed


@pytest.mark.parametrize(
    ("addresses", "why"),
    [
        (["127.0.0.1"], "loopback"),
        (["93.184.216.34", "10.1.2.3"], "private"),
        (["::1"], "loopback"),
        (["169.254.169.254"], "metadata"),
        (["::ffff:192.168.0.1"], "private"),
    ],
)
async def test_create_refuses_names_resolving_to_private_addresses(
    client: httpx.AsyncClient, tenant: Tenant, dns: dict[str, list[str]], addresses: list[str], why: str
) -> None:
    dns["rebind.example.net"] = addresses
    body = {"url": "https://rebind.example.net/hook", "event_types": ["*"]}
    message = assert_invalid_url(await client.post(BASE, json=body, headers=tenant.headers), private=True)
    assert "resolves to" in message and why in message


async def test_create_refuses_names_that_do_not_resolve(
    client: httpx.AsyncClient, tenant: Tenant, dns: dict[str, list[str]]
) -> None:
    body = {"url": "https://nowhere.example.org/hook", "event_types": ["*"]}
    message = assert_invalid_url(await client.post(BASE, json=body, headers=tenant.headers), private=False)
    assert "could not be resolved" in message


async def test_public_https_targets_are_accepted(
    client: httpx.AsyncClient, tenant: Tenant, dns: dict[str, list[str]]
) -> None:
    body = {"url": "https://receiver.example.com/hook", "event_types": ["*"]}
    response = await client.post(BASE, json=body, headers=tenant.headers)
    assert response.status_code == 201
    assert response.json()["data"]["url"] == "https://receiver.example.com/hook"


async def test_public_ip_literals_are_accepted(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = {"url": "https://93.184.216.34/hook", "event_types": ["*"]}
    assert (await client.post(BASE, json=body, headers=tenant.headers)).status_code == 201


@pytest.mark.parametrize(
    ("url", "private"),
    [
        ("https://127.0.0.1/hook", True),
        ("http://receiver.example.com/", True),
        ("https://u:p@receiver.example.com/", False),
    ],
)
async def test_patch_refuses_hostile_targets_and_keeps_the_old_url(
    client: httpx.AsyncClient, tenant: Tenant, dns: dict[str, list[str]], url: str, private: bool
) -> None:
    created = await client.post(
        BASE, json={"url": "https://receiver.example.com/hook", "event_types": ["*"]}, headers=tenant.headers
    )
    sub_id = created.json()["data"]["id"]
    response = await client.patch(f"{BASE}/{sub_id}", json={"url": url}, headers=tenant.headers)
    assert_invalid_url(response, private=private)
    current = (await client.get(f"{BASE}/{sub_id}", headers=tenant.headers)).json()["data"]
    assert current["url"] == "https://receiver.example.com/hook"


async def test_patch_refuses_a_name_that_now_resolves_privately(
    client: httpx.AsyncClient, tenant: Tenant, dns: dict[str, list[str]]
) -> None:
    created = await client.post(
        BASE, json={"url": "https://receiver.example.com/hook", "event_types": ["*"]}, headers=tenant.headers
    )
    sub_id = created.json()["data"]["id"]
    dns["receiver.example.com"] = ["10.0.0.7"]
    response = await client.patch(
        f"{BASE}/{sub_id}", json={"url": "https://receiver.example.com/v2"}, headers=tenant.headers
    )
    assert_invalid_url(response, private=True)
