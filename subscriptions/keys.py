"""Webhook secret and Ed25519 key material, in Standard Webhooks' serialisations.

- ``whsec_`` + base64 of 24-64 random bytes: the HMAC-SHA256 secret (``v1`` signatures).
- ``whsk_`` + base64 of the 32-byte Ed25519 seed: the private signing key (``v1a`` signatures).
- ``whpk_`` + base64 of the 32-byte raw Ed25519 public key: all a receiver needs to verify.

Svix serialises ``whsk_`` as the 64-byte ``seed || public key`` pair; we emit the 32-byte seed
but accept both, so keys move between the two systems unchanged.

Nothing here echoes key material into an exception message: callers log those messages.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"

SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
ED25519_SEED_BYTES = 32
ED25519_PUBLIC_KEY_BYTES = 32


def _b64decode(value: str, what: str) -> bytes:
    # Standard base64; tolerate missing padding as the standardwebhooks libraries do.
    padded = value + "=" * (-len(value) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def generate_webhook_secret() -> str:
    """Return a new ``whsec_`` secret holding 32 random bytes."""
    return SECRET_PREFIX + _b64encode(secrets.token_bytes(SECRET_BYTES))


def secret_bytes(secret: str) -> bytes:
    """Return the raw HMAC key of a ``whsec_`` secret; ValueError (never naming the secret) if malformed."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"webhook secret must start with {SECRET_PREFIX!r}")
    raw = _b64decode(secret[len(SECRET_PREFIX) :], "webhook secret")
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise ValueError(f"webhook secret must hold {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes, got {len(raw)}")
    return raw


def generate_ed25519_keypair() -> tuple[str, str]:
    """Return a new ``(whsk_…, whpk_…)`` Ed25519 key pair."""
    seed = secrets.token_bytes(ED25519_SEED_BYTES)
    signing_key = SIGNING_KEY_PREFIX + _b64encode(seed)
    return signing_key, public_key_for(signing_key)


def signing_key_seed(signing_key: str) -> bytes:
    """Return the 32-byte Ed25519 seed of a ``whsk_`` key (the seed form or Svix's seed+public form)."""
    if not isinstance(signing_key, str) or not signing_key.startswith(SIGNING_KEY_PREFIX):
        raise ValueError(f"signing key must start with {SIGNING_KEY_PREFIX!r}")
    raw = _b64decode(signing_key[len(SIGNING_KEY_PREFIX) :], "signing key")
    if len(raw) == ED25519_SEED_BYTES:
        return raw
    if len(raw) == ED25519_SEED_BYTES + ED25519_PUBLIC_KEY_BYTES:
        seed, public = raw[:ED25519_SEED_BYTES], raw[ED25519_SEED_BYTES:]
        # A pair whose halves disagree would sign with one key and advertise another.
        if not hmac.compare_digest(_raw_public_key(seed), public):
            raise ValueError("signing key's public half does not match its private half")
        return seed
    raise ValueError(f"signing key must hold {ED25519_SEED_BYTES} or {ED25519_SEED_BYTES * 2} bytes, got {len(raw)}")


def public_key_bytes(public_key: str) -> bytes:
    """Return the 32 raw bytes of a ``whpk_`` public key."""
    if not isinstance(public_key, str) or not public_key.startswith(PUBLIC_KEY_PREFIX):
        raise ValueError(f"public key must start with {PUBLIC_KEY_PREFIX!r}")
    raw = _b64decode(public_key[len(PUBLIC_KEY_PREFIX) :], "public key")
    if len(raw) != ED25519_PUBLIC_KEY_BYTES:
        raise ValueError(f"public key must hold {ED25519_PUBLIC_KEY_BYTES} bytes, got {len(raw)}")
    return raw


def public_key_for(signing_key: str) -> str:
    """Return the ``whpk_`` public key of a ``whsk_`` signing key."""
    return PUBLIC_KEY_PREFIX + _b64encode(_raw_public_key(signing_key_seed(signing_key)))


def _raw_public_key(seed: bytes) -> bytes:
    # Imported here so that modules needing only whsec_ secrets stay free of cryptography's import cost.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
