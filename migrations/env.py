"""Alembic environment: runs migrations on the service's own async engine settings."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from apikeys.config import Settings
from apikeys.storage.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite alters tables by copying them; batch mode makes Alembic do that for us.
        render_as_batch=connection.dialect.name == "sqlite",
        # SQLite's DDL is transactional too: one transaction keeps a concurrent upgrade out.
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    engine = create_async_engine(Settings().async_database_url)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=str(Settings().async_database_url), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := context.config.attributes.get("connection")) is not None:
    # apikeys.storage.migrations passes the connection it holds the migration lock on.
    _run(connection)
else:
    asyncio.run(_run_with_own_engine())
