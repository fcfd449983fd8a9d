"""Telling a database that is unavailable apart from a statement that one request's data
made fail: the first is a 503 for everyone until it returns, the second that request's own
4xx or 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

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

# PostgreSQL SQLSTATEs of a server that cannot serve anyone right now, whatever was asked:
# a lost or refused connection (08), resources exhausted: disk, memory, connection slots
# (53), starting up, shutting down or recovering from a crash (57P), an I/O error (58), and a
# standby that only reads (25006). asyncpg raises the starting-up family on connect, and the
# driver adapter passes them on as plain DBAPIErrors.
_READ_ONLY_SQLSTATE = "25006"
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P", "58", _READ_ONLY_SQLSTATE)
_DISK_FULL_SQLSTATE = "53100"
_SQLITE_FULL = "SQLITE_FULL"
_SQLITE_READONLY = "SQLITE_READONLY"
_SQLITE_UNAVAILABLE = (_SQLITE_FULL, "SQLITE_IOERR", _SQLITE_READONLY, "SQLITE_CANTOPEN")


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, the driver's error it wraps, and what caused each, nearest first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        yield current
        original = current.orig if isinstance(current, DBAPIError) else None
        current = original if isinstance(original, BaseException) else current.__cause__


def _sqlstate(error: BaseException) -> str:
    for cause in _causes(error):
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str):
            return state
    return ""


def _sqlite_error_name(error: BaseException) -> str:
    for cause in _causes(error):
        name = getattr(cause, "sqlite_errorname", None)
        if isinstance(name, str):
            return name
    return ""


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached or used now, whatever was asked.

    A connection lost in the middle of a statement counts: the pool replaces it."""
    if isinstance(error, UNAVAILABLE_ERRORS):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return _sqlstate(error).startswith(_UNAVAILABLE_SQLSTATE_PREFIXES) or _sqlite_error_name(
        error
    ).startswith(_SQLITE_UNAVAILABLE)


def is_full(error: BaseException) -> bool:
    """Whether `error` says the database's storage is full: it may still answer reads, but
    no write succeeds until space is freed."""
    return _sqlstate(error) == _DISK_FULL_SQLSTATE or _sqlite_error_name(error) == _SQLITE_FULL


def is_read_only(error: BaseException) -> bool:
    """Whether `error` says the database answers reads but takes no writes now (a standby,
    a read-only file)."""
    return _sqlstate(error) == _READ_ONLY_SQLSTATE or _sqlite_error_name(error).startswith(
        _SQLITE_READONLY
    )


def error_name(error: BaseException) -> str:
    """The class name of the driver's own error under any wrapping (CannotConnectNowError
    rather than DBAPIError): for logs, which must not carry the error's text (it can hold
    SQL or the URL). A timeout names itself, not the cancellation it was raised from."""
    innermost = error
    for cause in _causes(error):
        if isinstance(cause, asyncio.CancelledError):
            break
        innermost = cause
    return type(innermost).__name__
