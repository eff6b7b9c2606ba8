"""One domain-error family; the HTTP layer maps it to the error envelope in one place."""

from __future__ import annotations


class DomainError(Exception):
    code = "error"
    status = 400

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.field = field


class ValidationFailed(DomainError):
    code = "validation_error"
    status = 422


class InvalidKey(DomainError):
    code = "invalid_key"
    status = 401

    def __init__(self, message: str = "Invalid or expired API key") -> None:
        super().__init__(message)


class InsufficientPermissions(DomainError):
    code = "insufficient_permissions"
    status = 403


class NotFound(DomainError):
    code = "not_found"
    status = 404

    def __init__(self, what: str = "Resource") -> None:
        super().__init__(f"{what} not found")


class Conflict(DomainError):
    code = "conflict"
    status = 409


class RateLimited(DomainError):
    code = "rate_limited"
    status = 429


class PayloadTooLarge(DomainError):
    code = "payload_too_large"
    status = 413


class Unavailable(DomainError):
    code = "unavailable"
    status = 503
