"""Text read from outside (a receiver's answer, a provider's payload) made storable before it is stored.

PostgreSQL text cannot hold NUL, and no database driver encodes a lone surrogate (what a JSON ``\\ud800``
escape, or a header of invalid UTF-8, decodes to). Either one, stored, fails the whole transaction it is in,
and the delivery recorder's transaction holds other tenants' outcomes (CONTRACT §5). Both become U+FFFD.
"""

from __future__ import annotations

import re
from typing import Any, overload

__all__ = ["REPLACEMENT", "storable", "storable_json"]

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@overload
def storable(text: str) -> str: ...


@overload
def storable(text: None) -> None: ...


def storable(text: str | None) -> str | None:
    """``text`` with NUL and lone surrogates replaced by U+FFFD."""
    if text is None:
        return None
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable_json(value: Any) -> Any:
    """Decoded JSON with :func:`storable` applied to every string in it, object keys included."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(k) if isinstance(k, str) else k: storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_json(v) for v in value]
    return value
