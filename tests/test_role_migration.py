"""Migration 0004 on stored data: keys keep their roles going up, Convert's new roles become
storable, and going back turns them into lower old ones, never higher."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from apikeys.config import async_database_url
from apikeys.storage.database import Database
from apikeys.storage.migrations import alembic_config
from tests.conftest import new_postgres_database

OLD_ROLES = ("browse", "edit", "publish", "admin", "owner")
INSERT_KEY = text(
    "INSERT INTO api_keys (public_id, account_id, name, type, role, all_projects, "
    "secret_digest, secret_hint, created_at) "
    "VALUES (:key, 1, 'k', 'secretKey', :role, true, :digest, '…abcd', :now)"
)


@pytest.fixture
def empty_database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'apikeys.db'}"
        return
    with new_postgres_database() as url:
        yield url


def _to(revision: str, down: bool = False) -> object:
    def migrate(connection: Connection) -> None:
        (command.downgrade if down else command.upgrade)(alembic_config(connection), revision)

    return migrate


async def _add_key(database: Database, key: str, role: str) -> None:
    async with database.writes() as connection:
        await connection.execute(
            INSERT_KEY,
            {"key": key, "role": role, "digest": os.urandom(32), "now": datetime.now(UTC)},
        )


async def _roles(database: Database) -> dict[str, str]:
    async with database.reads() as connection:
        rows = await connection.execute(text("SELECT public_id, role FROM api_keys"))
        return {key: role for key, role in rows}


async def _migrate(database: Database, revision: str, down: bool = False) -> None:
    async with database.engine.begin() as connection:
        await connection.run_sync(_to(revision, down))  # type: ignore[arg-type]


async def test_roles_survive_0004_both_ways_and_new_ones_go_back_lower(
    empty_database: str,
) -> None:
    database = Database(async_database_url(empty_database), 10)
    try:
        await _migrate(database, "0002")
        async with database.writes() as connection:
            await connection.execute(
                text("INSERT INTO accounts (id, name, created_at) VALUES (1, 'a', :now)"),
                {"now": datetime.now(UTC)},
            )
        for role in OLD_ROLES:
            await _add_key(database, f"old-{role}", role)
        with pytest.raises(IntegrityError):
            await _add_key(database, "too-early", "review")

        await _migrate(database, "0004")
        await _add_key(database, "new-review", "review")
        await _add_key(database, "new-account_manager", "account_manager")
        upgraded = await _roles(database)

        await _migrate(database, "0002", down=True)
        downgraded = await _roles(database)
    finally:
        await database.dispose()

    assert {key: upgraded[key] for key in upgraded if key.startswith("old-")} == {
        f"old-{role}": role for role in OLD_ROLES
    }
    assert (upgraded["new-review"], upgraded["new-account_manager"]) == (
        "review", "account_manager",
    )  # fmt: skip
    assert (downgraded["new-review"], downgraded["new-account_manager"]) == ("browse", "publish")
    assert {key: downgraded[key] for key in downgraded if key.startswith("old-")} == {
        f"old-{role}": role for role in OLD_ROLES
    }
