"""Secrets at rest: AES-256-GCM under the master key list; the first key encrypts, all decrypt."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets as _secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"


class DecryptionError(Exception):
    """A sealed value could not be opened with any configured key."""


class Sealed(str):
    """A ciphertext string; distinct type so plaintext is never stored by accident."""


class Revealed:
    """A plaintext secret held in memory; its repr and str never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Revealed('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Revealed) and _secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"synchook-key-id" + key).hexdigest()[:8]


class SecretBox:
    __slots__ = ("_ciphers",)

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("SecretBox needs at least one key")
        self._ciphers = [(_key_id(k), AESGCM(k)) for k in keys]

    def __repr__(self) -> str:
        return f"SecretBox(keys={len(self._ciphers)})"

    @property
    def current_key_id(self) -> str:
        return self._ciphers[0][0]

    def seal(self, plaintext: str, *, context: str = "") -> Sealed:
        """Encrypt; `context` (e.g. a row id) is bound as associated data so ciphertexts cannot be swapped."""
        key_id, cipher = self._ciphers[0]
        nonce = os.urandom(12)
        blob = cipher.encrypt(nonce, plaintext.encode(), context.encode())
        return Sealed(f"{_VERSION}:{key_id}:{base64.urlsafe_b64encode(nonce + blob).decode()}")

    def open(self, sealed: str, *, context: str = "") -> str:
        try:
            version, key_id, payload = sealed.split(":", 2)
            raw = base64.urlsafe_b64decode(payload)
        except ValueError as exc:
            raise DecryptionError("malformed sealed value") from exc
        if version != _VERSION:
            raise DecryptionError("unknown sealed value version")
        # Try the key named in the value first, then the rest (ids could collide in theory).
        ordered = sorted(self._ciphers, key=lambda kc: kc[0] != key_id)
        for _, cipher in ordered:
            try:
                return cipher.decrypt(raw[:12], raw[12:], context.encode()).decode()
            except InvalidTag:
                continue
        raise DecryptionError("no configured key opens this value")

    def needs_reseal(self, sealed: str) -> bool:
        return not sealed.startswith(f"{_VERSION}:{self.current_key_id}:")

    def reseal(self, sealed: str, *, context: str = "") -> Sealed:
        return self.seal(self.open(sealed, context=context), context=context)


def generate_master_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()
