from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from subscriptions.keys import (
    generate_ed25519_keypair,
    generate_webhook_secret,
    public_key_bytes,
    public_key_for,
    secret_bytes,
    signing_key_seed,
)


def test_generated_secret_is_whsec_and_32_random_bytes() -> None:
    secret = generate_webhook_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert secret_bytes(secret) == base64.b64decode(secret.removeprefix("whsec_"))
    assert generate_webhook_secret() != secret


@pytest.mark.parametrize("size", [24, 32, 64])
def test_secret_bytes_accepts_24_to_64_bytes(size: int) -> None:
    raw = bytes(range(size))
    assert secret_bytes("whsec_" + base64.b64encode(raw).decode()) == raw


def test_secret_bytes_accepts_unpadded_base64() -> None:
    raw = bytes(range(25))
    assert secret_bytes("whsec_" + base64.b64encode(raw).decode().rstrip("=")) == raw


@pytest.mark.parametrize("size", [0, 16, 23, 65])
def test_secret_bytes_rejects_bad_lengths(size: int) -> None:
    with pytest.raises(ValueError, match="24-64 bytes"):
        secret_bytes("whsec_" + base64.b64encode(b"x" * size).decode())


def test_secret_bytes_rejects_missing_prefix_without_echoing() -> None:
    bare = base64.b64encode(b"k" * 32).decode()
    with pytest.raises(ValueError) as excinfo:
        secret_bytes(bare)
    assert bare not in str(excinfo.value)


def test_secret_bytes_rejects_bad_base64_without_echoing() -> None:
    secret = "whsec_not*base64!!TOPSECRETVALUE"
    with pytest.raises(ValueError) as excinfo:
        secret_bytes(secret)
    assert "TOPSECRET" not in str(excinfo.value)


def test_keypair_is_whsk_seed_and_whpk_raw_public_key() -> None:
    whsk, whpk = generate_ed25519_keypair()
    assert whsk.startswith("whsk_") and whpk.startswith("whpk_")
    seed = base64.b64decode(whsk.removeprefix("whsk_"))
    assert len(seed) == 32
    expected = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public_key_bytes(whpk) == expected
    assert public_key_for(whsk) == whpk


def test_svix_style_64_byte_signing_key_is_accepted() -> None:
    whsk, whpk = generate_ed25519_keypair()
    seed = signing_key_seed(whsk)
    pair = "whsk_" + base64.b64encode(seed + public_key_bytes(whpk)).decode()
    assert signing_key_seed(pair) == seed
    assert public_key_for(pair) == whpk


def test_64_byte_signing_key_with_mismatched_halves_is_rejected() -> None:
    whsk, _ = generate_ed25519_keypair()
    _, other_whpk = generate_ed25519_keypair()
    pair = "whsk_" + base64.b64encode(signing_key_seed(whsk) + public_key_bytes(other_whpk)).decode()
    with pytest.raises(ValueError, match="does not match"):
        signing_key_seed(pair)


@pytest.mark.parametrize("bad", ["whpk_" + base64.b64encode(b"x" * 31).decode(), "whsec_AAAA", "whpk_***"])
def test_public_key_bytes_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        public_key_bytes(bad)


def test_public_key_for_rejects_a_public_key() -> None:
    _, whpk = generate_ed25519_keypair()
    with pytest.raises(ValueError, match="whsk_"):
        public_key_for(whpk)
