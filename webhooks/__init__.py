"""Synchook's webhook delivery engine; ``verify`` is the receiver-side helper for integrators."""

from __future__ import annotations

from webhooks.verify import WebhookVerificationError, verify

__all__ = ["WebhookVerificationError", "verify"]
