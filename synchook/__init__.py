"""Synchook: calendar sync triggers whose lifecycle events are delivered as signed webhooks."""

from __future__ import annotations

__version__ = "0.1.0"
