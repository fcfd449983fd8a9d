"""Accounts and projects: made by operators with the command line. Each function runs in
the caller's transaction (`Database.transaction()`)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from apikeys.errors import Conflict, NotFound
from apikeys.storage import repository
from apikeys.storage.database import AsyncSession


async def create_account(session: AsyncSession, name: str, account_id: int | None) -> int:
    try:
        new_id = await repository.add_account(session, name, datetime.now(UTC), account_id)
    except IntegrityError:
        raise Conflict(f"Account {account_id} already exists") from None
    return new_id


async def create_project(
    session: AsyncSession, account_id: int, name: str, project_id: int | None
) -> int:
    if not await repository.account_exists(session, account_id):
        raise NotFound(f"Account {account_id} was not found")
    try:
        new_id = await repository.add_project(
            session, account_id, name, datetime.now(UTC), project_id
        )
    except IntegrityError:
        raise Conflict(f"Project {project_id} already exists") from None
    return new_id


async def account_exists(session: AsyncSession, account_id: int) -> bool:
    return await repository.account_exists(session, account_id)
