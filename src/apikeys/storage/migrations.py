"""Applying Alembic migrations from the service and the command line."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL

from apikeys.storage.database import Database
from apikeys.storage.faults import error_name, is_unavailable

# Between attempts to reach a database that is not answering yet.
_RETRY_SECONDS = 0.5

# Any fixed 64-bit number: replicas starting together queue on it instead of racing.
_MIGRATION_LOCK_ID = 0x61706B6579730001


def script_location() -> Path:
    """Inside an installed wheel the migrations sit in the package; in a checkout, at the top."""
    packaged = Path(__file__).resolve().parents[1] / "migrations"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def upgrade_to_head(url: URL, timeout: float = 30.0) -> None:
    """Bring the schema to the newest revision, safely when several processes start at once.

    PostgreSQL: a session advisory lock serialises concurrent upgrades. SQLite: the
    migration transaction begins IMMEDIATE (see Database), which does the same.
    """
    database = Database(url, timeout)
    try:
        async with database.engine.connect() as connection:
            is_postgres = connection.dialect.name == "postgresql"
            if is_postgres:
                await connection.execute(
                    text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
                )
                await connection.commit()
            try:
                # One transaction for the whole upgrade; on SQLite it begins IMMEDIATE, so a
                # second process waits for the first to commit before reading the version.
                async with connection.begin():
                    await connection.run_sync(_upgrade)
            finally:
                if is_postgres:
                    await connection.execute(
                        text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID}
                    )
                    await connection.commit()
    finally:
        await database.dispose()


class DatabaseUnavailable(Exception):
    """The database did not answer within the time allowed; the message says which."""


async def wait_for_database(url: URL, within: float, timeout: float) -> None:
    """Return once the database at `url` accepts a connection, trying again every half
    second for up to `within` seconds, each attempt given at most `timeout`; else raise
    DatabaseUnavailable. Down, starting up, shutting down, refusing connections, or frozen:
    all the same to a service about to start."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        database = Database(url, max(0.1, min(timeout, remaining)))
        try:
            async with database.engine.connect():
                return
        except Exception as error:
            if not is_unavailable(error):
                raise
            if time.monotonic() + _RETRY_SECONDS >= deadline:
                # Only the error's class: the driver's text can hold the URL.
                raise DatabaseUnavailable(
                    f"the database at {_where(url)} did not answer within {within:g} s "
                    f"({error_name(error)}); is it running?"
                ) from None
        finally:
            await database.dispose()
        await asyncio.sleep(_RETRY_SECONDS)


def _where(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
