"""Standard Webhooks signatures (https://www.standardwebhooks.com), pure and hot-path fast.

Signed content is ``f"{msg_id}.{timestamp}."`` followed by the exact body bytes sent.
Each ``whsec_`` secret yields ``v1,<base64 HMAC-SHA256>``; each ``whsk_`` key yields
``v1a,<base64 Ed25519 signature>``; the header carries them all, space-separated, so a
receiver holding any one of them (e.g. during secret rotation) can verify.

Build one :class:`Signer` per subscription and reuse it: key decoding and the HMAC key
schedule happen once, each message then costs one ``hmac.copy()`` and two updates.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from subscriptions.keys import secret_bytes, signing_key_seed

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["Signer", "build_headers", "sign", "signer_for"]

# Characters that would let a msg_id forge another signed content ("." splits the fields) or
# break out of the header line.
_FORBIDDEN_ID_CHARS = frozenset(". \t\r\n,")


class Signer:
    """Signs messages with a fixed set of secrets; built once per subscription, reused per message."""

    __slots__ = ("_ed25519", "_hmacs")

    def __init__(self, secrets: Sequence[str] = (), signing_keys: Sequence[str] = ()) -> None:
        if isinstance(secrets, str) or isinstance(signing_keys, str):
            # A bare string is a sequence of one-character "secrets": always a caller bug.
            raise TypeError("secrets and signing_keys must be sequences of strings, not a string")
        self._hmacs = tuple(hmac.new(secret_bytes(s), digestmod=hashlib.sha256) for s in secrets)
        self._ed25519: tuple[Ed25519PrivateKey, ...] = ()
        if signing_keys:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            self._ed25519 = tuple(Ed25519PrivateKey.from_private_bytes(signing_key_seed(k)) for k in signing_keys)
        if not self._hmacs and not self._ed25519:
            raise ValueError("a signer needs at least one secret or signing key")

    def __repr__(self) -> str:
        # Counts only: key material never reaches a repr, and so never a log line or traceback.
        return f"Signer(hmac_secrets={len(self._hmacs)}, ed25519_keys={len(self._ed25519)})"

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """Return the ``webhook-signature`` header value for one message."""
        if not msg_id or not _FORBIDDEN_ID_CHARS.isdisjoint(msg_id):
            raise ValueError("msg_id must be non-empty and contain no '.', ',' or whitespace")
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
            raise ValueError("timestamp must be a non-negative integer (Unix seconds)")
        prefix = f"{msg_id}.{timestamp}.".encode()
        parts: list[str] = []
        for base in self._hmacs:
            mac = base.copy()
            mac.update(prefix)
            mac.update(body)
            parts.append("v1," + base64.b64encode(mac.digest()).decode("ascii"))
        if self._ed25519:
            content = prefix + body
            parts.extend("v1a," + base64.b64encode(key.sign(content)).decode("ascii") for key in self._ed25519)
        return " ".join(parts)


@lru_cache(maxsize=4096)
def signer_for(secrets: tuple[str, ...], signing_keys: tuple[str, ...] = ()) -> Signer:
    """Return a cached :class:`Signer` for these secrets (tuples, so they can key the cache)."""
    return Signer(secrets, signing_keys)


def sign(*, msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str], signing_keys: Sequence[str] = ()) -> str:
    """Return the full ``webhook-signature`` header value: one entry per secret and per signing key."""
    if isinstance(secrets, str) or isinstance(signing_keys, str):
        raise TypeError("secrets and signing_keys must be sequences of strings, not a string")
    return signer_for(tuple(secrets), tuple(signing_keys)).sign(msg_id, timestamp, body)


def build_headers(msg_id: str, timestamp: int, body: bytes, signer: Signer, user_agent: str) -> dict[str, str]:
    """Return the Standard Webhooks request headers for one delivery attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signer.sign(msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": user_agent,
    }
