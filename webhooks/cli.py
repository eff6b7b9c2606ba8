"""`synchook deliveries …` and `synchook replay …` (filled in by the admin work)."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    """Add this domain's commands to the `synchook` parser."""
