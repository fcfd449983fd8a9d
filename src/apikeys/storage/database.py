"""Engine and sessions: the one way the service talks to its database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from contextlib import asynccontextmanager, nullcontext
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

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


__all__ = ["AsyncConnection", "AsyncSession", "Database"]
