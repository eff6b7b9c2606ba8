"""Regression (found by the chaos suite): while PostgreSQL was starting up after a restart the API
answered 500, because SQLAlchemy wraps asyncpg's CannotConnectNowError in a generic DBAPIError."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import exc

from synchook.db import is_connection_error


def wrapped(driver_error: Exception) -> exc.DBAPIError:
    # What SQLAlchemy's asyncpg dialect raises: its adapted error, caused by the driver's, inside a DBAPIError.
    class AdaptedError(Exception):
        pass

    adapted = AdaptedError(str(driver_error))
    adapted.__cause__ = driver_error
    return exc.DBAPIError("SELECT 1", {}, adapted)


@pytest.mark.parametrize(
    "driver_error",
    [
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.ConnectionFailureError("connection failure"),
    ],
    ids=["starting-up", "admin-shutdown", "connection-failure"],
)
def test_a_wrapped_server_unavailable_error_is_a_connection_error(driver_error: Exception) -> None:
    assert is_connection_error(wrapped(driver_error))


def test_a_wrapped_unique_violation_is_not() -> None:
    error = asyncpg.exceptions.UniqueViolationError("duplicate key value violates unique constraint")
    assert not is_connection_error(wrapped(error))
