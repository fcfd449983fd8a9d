"""Every query the service runs. Functions take the caller's session and never commit."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from apikeys.domain import ApiKeyInfo, KeyType, Role
from apikeys.storage.models import Account, ApiKey, ApiKeyProject, Project


@dataclass(frozen=True, slots=True)
class StoredCredential:
    """A key's metadata plus what verifying its secret needs."""

    info: ApiKeyInfo
    secret_ciphertext: bytes | None


@dataclass(frozen=True, slots=True)
class NewKeyRow:
    public_id: str
    account_id: int
    name: str
    type: KeyType
    role: Role
    project_ids: frozenset[int] | None
    secret_digest: bytes
    secret_ciphertext: bytes | None
    secret_hint: str
    created_by_id: int | None
    created_at: datetime
    expires_at: datetime | None


_KEY_COLUMNS = (
    ApiKey.id,
    ApiKey.public_id,
    ApiKey.account_id,
    ApiKey.name,
    ApiKey.type,
    ApiKey.role,
    ApiKey.all_projects,
    ApiKey.secret_hint,
    ApiKey.created_at,
    ApiKey.expires_at,
    ApiKey.last_used_at,
    ApiKey.revoked_at,
)


def _info(row: Any, project_ids: frozenset[int] | None) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        key=row.public_id,
        account_id=row.account_id,
        name=row.name,
        type=KeyType(row.type),
        role=Role(row.role),
        project_ids=None if row.all_projects else project_ids,
        secret_hint=row.secret_hint,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


async def _advance_id_sequence(session: AsyncSession, table: str) -> None:
    """After an insert with an explicit id, move PostgreSQL's sequence past it so later
    inserts without one do not collide. (SQLite already picks max(id) + 1.)"""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), MAX(id)) FROM {table}")
        )


async def add_account(
    session: AsyncSession, name: str, created_at: datetime, account_id: int | None = None
) -> int:
    result = await session.execute(
        insert(Account)
        .values(id=account_id, name=name, created_at=created_at)
        .returning(Account.id)
    )
    if account_id is not None:
        await _advance_id_sequence(session, Account.__tablename__)
    return result.scalar_one()


async def add_project(
    session: AsyncSession,
    account_id: int,
    name: str,
    created_at: datetime,
    project_id: int | None = None,
) -> int:
    result = await session.execute(
        insert(Project)
        .values(id=project_id, account_id=account_id, name=name, created_at=created_at)
        .returning(Project.id)
    )
    if project_id is not None:
        await _advance_id_sequence(session, Project.__tablename__)
    return result.scalar_one()


async def account_exists(session: AsyncSession, account_id: int) -> bool:
    result = await session.execute(select(Account.id).where(Account.id == account_id))
    return result.first() is not None


async def projects_of_account(
    session: AsyncSession, account_id: int, project_ids: Iterable[int]
) -> set[int]:
    """The subset of `project_ids` that are projects of the account."""
    result = await session.execute(
        select(Project.id).where(
            Project.account_id == account_id, Project.id.in_(list(project_ids))
        )
    )
    return set(result.scalars())


async def add_key(session: AsyncSession, row: NewKeyRow) -> ApiKeyInfo:
    result = await session.execute(
        insert(ApiKey)
        .values(
            public_id=row.public_id,
            account_id=row.account_id,
            name=row.name,
            type=row.type.value,
            role=row.role.value,
            all_projects=row.project_ids is None,
            secret_digest=row.secret_digest,
            secret_ciphertext=row.secret_ciphertext,
            secret_hint=row.secret_hint,
            created_by_id=row.created_by_id,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )
        .returning(ApiKey.id)
    )
    key_id = result.scalar_one()
    if row.project_ids:
        await session.execute(
            insert(ApiKeyProject),
            [{"api_key_id": key_id, "project_id": project} for project in sorted(row.project_ids)],
        )
    return ApiKeyInfo(
        id=key_id,
        key=row.public_id,
        account_id=row.account_id,
        name=row.name,
        type=row.type,
        role=row.role,
        project_ids=row.project_ids,
        secret_hint=row.secret_hint,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=None,
        revoked_at=None,
    )


async def _project_ids(session: AsyncSession, api_key_id: int) -> frozenset[int]:
    result = await session.execute(
        select(ApiKeyProject.project_id).where(ApiKeyProject.api_key_id == api_key_id)
    )
    return frozenset(result.scalars())


async def _find_credential(session: AsyncSession, condition: object) -> StoredCredential | None:
    result = await session.execute(select(*_KEY_COLUMNS, ApiKey.secret_ciphertext).where(condition))  # type: ignore[arg-type]
    row = result.first()
    if row is None:
        return None
    project_ids = None if row.all_projects else await _project_ids(session, row.id)
    return StoredCredential(_info(row, project_ids), row.secret_ciphertext)


async def find_credential_by_public_id(
    session: AsyncSession, public_id: str
) -> StoredCredential | None:
    return await _find_credential(session, ApiKey.public_id == public_id)


async def find_credential_by_digest(
    session: AsyncSession, digest: bytes
) -> StoredCredential | None:
    return await _find_credential(session, ApiKey.secret_digest == digest)
