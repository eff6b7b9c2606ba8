"""Receiver-side verification of Synchook (and any Standard Webhooks) deliveries.

    from webhooks import WebhookVerificationError, verify

    try:
        event = verify(request_body_bytes, request.headers, "whsec_…")   # or "whpk_…"
    except WebhookVerificationError:
        return 400

Pass the raw body exactly as received: re-serialised JSON will not verify.
Stdlib only (plus ``cryptography`` when verifying ``whpk_`` keys), so integrators can import it cheaply.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["WebhookVerificationError", "verify"]

_SECRET_PREFIX = "whsec_"
_PUBLIC_KEY_PREFIX = "whpk_"
_SIGNING_KEY_PREFIX = "whsk_"
# A header listing more signatures than this is not a rotation, it is an attempt to make us work.
_MAX_SIGNATURES = 16


class WebhookVerificationError(Exception):
    """The delivery is not authentic, not fresh, or not well formed. Messages never contain secrets."""


def _b64decode(value: str) -> bytes:
    return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)


def _header(lowered: Mapping[str, str], name: str) -> str:
    # Svix sends the same values under svix-* names; Standard Webhooks' names win when both are present.
    value = (lowered.get(f"webhook-{name}") or lowered.get(f"svix-{name}") or "").strip()
    if not value:
        raise WebhookVerificationError(f"missing required header webhook-{name}")
    return value


def verify(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: int = 300,
    now: int | None = None,
) -> dict[str, Any]:
    """Verify a delivery's signature and timestamp and return its parsed JSON body."""
    body = payload.encode() if isinstance(payload, str) else bytes(payload)
    lowered = {k.lower(): v for k, v in headers.items()}  # header names are case-insensitive
    msg_id = _header(lowered, "id")
    timestamp_header = _header(lowered, "timestamp")
    signature_header = _header(lowered, "signature")

    if not timestamp_header.isascii() or not timestamp_header.isdigit() or len(timestamp_header) > 15:
        raise WebhookVerificationError("invalid webhook-timestamp header: expected integer Unix seconds")
    timestamp = int(timestamp_header)
    current = int(time.time()) if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError("message timestamp too old")
    if timestamp > current + tolerance:
        raise WebhookVerificationError("message timestamp too new")

    signed_content = f"{msg_id}.{timestamp_header}.".encode() + body
    candidates = signature_header.split()
    if len(candidates) > _MAX_SIGNATURES:
        raise WebhookVerificationError("too many signatures in webhook-signature header")

    if secret.startswith(_PUBLIC_KEY_PREFIX):
        matched = _match_ed25519(_public_key(secret), signed_content, candidates)
    elif secret.startswith(_SIGNING_KEY_PREFIX):
        raise WebhookVerificationError("verify with the whpk_ public key, not the whsk_ private key")
    else:
        matched = _match_hmac(_hmac_key(secret), signed_content, candidates)
    if not matched:
        raise WebhookVerificationError("no matching signature found")

    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise WebhookVerificationError("payload is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise WebhookVerificationError("payload is not a JSON object")
    return parsed


def _hmac_key(secret: str) -> bytes:
    # Like the standardwebhooks libraries, accept the secret with or without its whsec_ prefix.
    encoded = secret.removeprefix(_SECRET_PREFIX)
    try:
        key = _b64decode(encoded)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("secret is not a valid whsec_ secret (bad base64)") from None
    if not key:
        raise WebhookVerificationError("secret is empty")
    return key


def _public_key(secret: str) -> bytes:
    try:
        key = _b64decode(secret[len(_PUBLIC_KEY_PREFIX) :])
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("public key is not a valid whpk_ key (bad base64)") from None
    if len(key) != 32:
        raise WebhookVerificationError("public key is not a valid whpk_ key (expected 32 bytes)")
    return key


def _entries(candidates: list[str], version: str) -> list[bytes]:
    found = []
    for candidate in candidates:
        entry_version, sep, encoded = candidate.partition(",")
        if not sep or entry_version != version:
            continue  # other schemes (or future versions) are not ours to judge
        try:
            found.append(_b64decode(encoded))
        except (binascii.Error, ValueError):
            continue
    return found


def _match_hmac(key: bytes, signed_content: bytes, candidates: list[str]) -> bool:
    expected = hmac.new(key, signed_content, hashlib.sha256).digest()
    # Compare against every entry (no early exit) so timing reveals nothing about which one matched.
    results = [hmac.compare_digest(expected, given) for given in _entries(candidates, "v1")]
    return any(results)


def _match_ed25519(public_key: bytes, signed_content: bytes, candidates: list[str]) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise WebhookVerificationError("public key is not a valid whpk_ key") from None
    for signature in _entries(candidates, "v1a"):
        try:
            key.verify(signature, signed_content)
        except InvalidSignature:
            continue
        return True
    return False
