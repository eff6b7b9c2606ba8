"""Errors of the subscriptions domain, all in the kernel's DomainError family."""

from __future__ import annotations

from synchook.errors import NotFound, ValidationFailed


class SubscriptionNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Subscription")


class InvalidURL(ValidationFailed):
    """A webhook URL Synchook refuses to call; the message says why and, where it applies, how to allow it."""

    code = "invalid_url"

    def __init__(self, reason: str) -> None:
        super().__init__(f"url: {reason}", field="url")
