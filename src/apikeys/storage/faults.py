"""Telling a database that is unavailable apart from a statement that one request's data
made fail: the first is a 503 for everyone until it returns, the second that request's own
4xx or 500."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# What a database that is down, unreachable or too slow raises.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeoutError,
    OSError,
    TimeoutError,
)


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached or used now, whatever was asked.

    A connection lost in the middle of a statement counts: the pool replaces it."""
    if isinstance(error, UNAVAILABLE_ERRORS):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated
