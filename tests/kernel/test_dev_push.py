"""`synchook dev` and push (CONTRACT §7): on by itself with the fake providers on loopback, off (and said so)
with the real providers, which cannot reach a loopback address, and whatever SYNCHOOK_PUBLIC_URL says when set."""

from __future__ import annotations

from pathlib import Path

import pytest

from synchook.queue import free_port
from synchook.root.dev import describe_push, dev_settings

FAKES = {
    "SYNCHOOK_GOOGLE_API_URL": "http://127.0.0.1:9100/google",
    "SYNCHOOK_MICROSOFT_GRAPH_URL": "http://localhost:9100/graph/v1.0",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("SYNCHOOK_PUBLIC_URL", "SYNCHOOK_GOOGLE_API_URL", "SYNCHOOK_MICROSOFT_GRAPH_URL", "SYNCHOOK_HOST"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_with_the_fakes_on_loopback_push_defaults_to_the_dev_servers_own_url(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in FAKES.items():
        env.setenv(name, value)
    port = free_port()
    settings = dev_settings(tmp_path, port=port)
    assert settings.public_url == f"http://127.0.0.1:{port}"
    assert describe_push(settings).startswith(f"Push: on, providers notify http://127.0.0.1:{port}/v1/providers/")


def test_listening_on_every_interface_still_gives_a_loopback_url(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in FAKES.items():
        env.setenv(name, value)
    port = free_port()
    assert dev_settings(tmp_path, host="0.0.0.0", port=port).public_url == f"http://127.0.0.1:{port}"


def test_with_the_real_providers_push_stays_off_and_says_how_to_turn_it_on(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = dev_settings(tmp_path, port=free_port())
    assert settings.public_url is None
    assert describe_push(settings).startswith("Push: off (set SYNCHOOK_PUBLIC_URL")


def test_one_fake_and_one_real_provider_is_not_loopback(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("SYNCHOOK_GOOGLE_API_URL", FAKES["SYNCHOOK_GOOGLE_API_URL"])
    assert dev_settings(tmp_path, port=free_port()).public_url is None


def test_an_explicit_public_url_wins(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in FAKES.items():
        env.setenv(name, value)
    env.setenv("SYNCHOOK_PUBLIC_URL", "https://tunnel.example.com/")
    settings = dev_settings(tmp_path, port=free_port())
    assert settings.public_url == "https://tunnel.example.com"
    assert "https://tunnel.example.com/v1/providers/" in describe_push(settings)
