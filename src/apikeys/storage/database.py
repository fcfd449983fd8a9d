"""Engine and sessions: the one way the service talks to its database."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from contextlib import asynccontextmanager, nullcontext
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic_core import to_json
from sqlalchemy import event, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import QueuePool

_READ_ONLY = "apikeys_read_only"

# The loop time by which the database work under way must be done (see task_with_deadline).
_deadline: ContextVar[float | None] = ContextVar("apikeys_database_deadline", default=None)


def task_with_deadline(when: float, work: Awaitable[None]) -> asyncio.Future[None]:
    """A task for `work`, whose database work must be done by `when` (loop time): the key
    writer, working for it in a task of its own, reads the deadline through `deadline_of`.
    Cancelling the task when the time comes is the caller's part."""
    token = _deadline.set(when)
    try:
        # The task runs in a copy of the context as it is now, deadline included.
        return asyncio.ensure_future(work)
    finally:
        _deadline.reset(token)


def deadline_of(seconds: float) -> float:
    """The loop time the current work must be done by: its task's deadline, else `seconds`
    from now."""
    when = _deadline.get()
    return asyncio.get_running_loop().time() + seconds if when is None else when


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so `_on_begin` decides how each one starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL lets readers run beside the single writer; synchronous=NORMAL skips the fsync
        # per commit (a power cut may lose the last commits, never corrupt the file).
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            f"busy_timeout={busy_timeout_ms}",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
        # another writer got in between; IMMEDIATE takes the write lock up front and waits for
        # it instead. Authentication lookups only read, so they keep the cheaper deferred BEGIN.
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


_POSTGRES_READ_ONLY = (
    "SELECT pg_is_in_recovery() OR current_setting('default_transaction_read_only')::bool"
)
# Free space an SQLite database needs to be ready: room for its write-ahead log to fill up
# to the size at which it is checkpointed (1,000 pages), twice over, so that a write admitted
# now does not find the disk full.
SQLITE_FREE_SPACE_NEEDED = 2 * 1000 * 4096


def _sqlite_unready_reason(database: str | None) -> str | None:
    """Whether the file system holding an SQLite database can take writes: one statvfs call,
    rather than a write that would need the very space it looks for."""
    if not database or database == ":memory:":
        return None
    status = os.statvfs(Path(database).resolve().parent)
    if status.f_flag & os.ST_RDONLY:
        return "the database's file system is read-only"
    if status.f_bavail * status.f_frsize < SQLITE_FREE_SPACE_NEEDED:
        return "the database's disk is full"
    return None


class Database:
    """The engine and the one rule for using it: `transaction()` for work that may write,
    committed when the block ends normally and rolled back when it raises; `reads()` for work
    that only reads (a bare connection, rolled back at the end)."""

    def __init__(self, url: URL, timeout: float) -> None:
        # pydantic-core encodes the audit trail's JSON column several times faster than json.
        options: dict[str, Any] = {
            # A statement's parameters (digests, ciphertexts, names) stay out of error texts,
            # which end up in logs.
            "hide_parameters": True,
            "pool_timeout": timeout,
            "json_serializer": lambda value: to_json(value).decode(),
        }
        if url.get_backend_name() == "sqlite":
            options["connect_args"] = {"timeout": timeout}
        else:
            options.update(
                pool_size=10,
                max_overflow=10,
                pool_recycle=1800,
                connect_args={"timeout": timeout, "command_timeout": timeout},
            )
        self.url = url
        self.timeout = timeout
        self.engine = create_async_engine(url, **options)
        if url.get_backend_name() == "sqlite":
            _configure_sqlite(self.engine, int(timeout * 1000))
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._sqlite_write_lock = asyncio.Lock() if url.get_backend_name() == "sqlite" else None
        self._read_engine = self.engine.execution_options(**{_READ_ONLY: True})

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self._write_turn(), self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def writes(self) -> AsyncIterator[AsyncConnection]:
        """`transaction()` on a bare connection, for Core statements only, where a session's
        bookkeeping would cost more than the statements (the key writer)."""
        async with self._write_turn(), self.engine.begin() as connection:
            yield connection

    def _write_turn(self) -> AsyncContextManager[Any]:
        # SQLite has one write lock for the whole file, and a transaction that finds it taken
        # sleeps in SQLite's busy handler, for up to 100 ms a time, however soon it is free:
        # this process's writers take turns here instead, and each starts the moment the one
        # before it ends.
        return self._sqlite_write_lock or nullcontext()

    def reads(self) -> AsyncContextManager[AsyncConnection]:
        return self._read_engine.connect()

    def pool_status(self) -> dict[str, int]:
        """The connection pool's size (as configured), checked-out, idle and overflow
        connections; empty for a pool that does not count them."""
        pool = self.engine.pool
        if not isinstance(pool, QueuePool):
            return {}
        return {
            "size": pool.size(),
            "checked_out": pool.checkedout(),
            "idle": pool.checkedin(),
            "overflow": max(0, pool.overflow()),
        }

    async def unready_reason(self) -> str | None:
        """Why the database cannot serve requests now although it answers (it cannot write),
        or None when it can. Raises the driver's error when it does not answer."""
        async with self.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # A standby, or a server told to refuse writes, answers reads only. (A full disk
                # takes PostgreSQL down, which the connection itself shows.)
                read_only = await connection.scalar(text(_POSTGRES_READ_ONLY))
                return "the database accepts no writes (read-only)" if read_only else None
            await connection.execute(text("SELECT 1"))
        return _sqlite_unready_reason(self.url.database)

    async def dispose(self) -> None:
        await self.engine.dispose()


__all__ = ["AsyncConnection", "AsyncSession", "Database", "deadline_of", "task_with_deadline"]
