"""Every query the service runs. Functions take the caller's session (or, on the hot paths
of authentication and key creation, a bare connection running Core statements) and never
commit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql import Executable

from apikeys.domain import ApiKeyInfo, KeyType, Role
from apikeys.storage.models import (
    Account,
    ApiKey,
    ApiKeyProject,
    AuditEvent,
    Base,
    IdempotencyRecord,
    Project,
)

# What runs a statement: the caller's session, or a bare connection for Core-only work.
Executor = AsyncSession | AsyncConnection


@dataclass(frozen=True, slots=True)
class StoredCredential:
    """A key's metadata plus what verifying its secret needs."""

    info: ApiKeyInfo
    secret_ciphertext: bytes | None


@dataclass(frozen=True, slots=True)
class NewKeyRow:
    key: str
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
    ApiKey.key.label("key"),
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


def _table(model: type[Base]) -> Table:
    return Base.metadata.tables[model.__tablename__]


def _credential_by(column: InstrumentedAttribute[Any]) -> Executable:
    return select(*_KEY_COLUMNS, ApiKey.secret_ciphertext).where(column == bindparam("value"))


# Built once, so SQLAlchemy reuses each one's compiled form. Core inserts into the tables,
# not ORM-enabled ones, which cost far more per row.
_PROJECTS_OF_ACCOUNTS = (
    select(Account.id, Project.id)
    .outerjoin(
        Project,
        and_(
            Project.account_id == Account.id,
            Project.id.in_(bindparam("project_ids", expanding=True)),
        ),
    )
    .where(Account.id.in_(bindparam("account_ids", expanding=True)))
)

_ACCOUNT_OF_PROJECT = select(Project.account_id).where(Project.id == bindparam("project_id"))

# A cache miss on authentication: one indexed lookup, plus the projects of a limited key.
_CREDENTIAL_BY_KEY = _credential_by(ApiKey.key)
_CREDENTIAL_BY_DIGEST = _credential_by(ApiKey.secret_digest)
_PROJECT_IDS = select(ApiKeyProject.project_id).where(
    ApiKeyProject.api_key_id == bindparam("row_id")
)
_INSERT_KEYS = insert(_table(ApiKey))
_IDS_OF_KEYS = select(ApiKey.key, ApiKey.id).where(
    ApiKey.key.in_(bindparam("keys", expanding=True))
)
_INSERT_LINKS = insert(_table(ApiKeyProject))
_INSERT_AUDIT_EVENT = insert(_table(AuditEvent))
_IDEMPOTENCY = _table(IdempotencyRecord)
_COMPLETE_IDEMPOTENCY_RECORD = (
    update(_IDEMPOTENCY)
    .where(_IDEMPOTENCY.c.id == bindparam("record_id"))
    .values(response=bindparam("new_response"), api_key_id=bindparam("new_api_key_id"))
)


def info_of(columns: Mapping[Any, Any], project_ids: frozenset[int] | None) -> ApiKeyInfo:
    """The one mapper from a key's columns (a row's mapping, or the values just inserted)
    to its metadata; `project_ids` is ignored for an all-projects key."""
    return ApiKeyInfo(
        id=columns["id"],
        key=columns["key"],
        account_id=columns["account_id"],
        name=columns["name"],
        type=KeyType(columns["type"]),
        role=Role(columns["role"]),
        project_ids=None if columns["all_projects"] else project_ids,
        secret_hint=columns["secret_hint"],
        created_at=columns["created_at"],
        expires_at=columns["expires_at"],
        last_used_at=columns["last_used_at"],
        revoked_at=columns["revoked_at"],
    )


async def _advance_id_sequence(session: AsyncSession, table: str) -> None:
    """After an insert with an explicit id, move PostgreSQL's sequence past it so later
    inserts without one do not collide. (SQLite already picks max(id) + 1.)"""
    if session.get_bind().dialect.name == "postgresql":
        # Serialised per table until commit: a second writer then sees the first's row in
        # MAX(id), so two explicit ids inserted together cannot move the sequence backwards.
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:table))"), {"table": table}
        )
        await session.execute(
            text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), MAX(id)) FROM {table}")
        )


async def add_account(
    session: AsyncSession, name: str, created_at: datetime, account_id: int | None = None
) -> int:
    # An id of None must be left out, not sent: PostgreSQL would store NULL, not use the sequence.
    explicit_id = {} if account_id is None else {"id": account_id}
    result = await session.execute(
        insert(Account)
        .values(**explicit_id, name=name, created_at=created_at)
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
    explicit_id = {} if project_id is None else {"id": project_id}
    result = await session.execute(
        insert(Project)
        .values(**explicit_id, account_id=account_id, name=name, created_at=created_at)
        .returning(Project.id)
    )
    if project_id is not None:
        await _advance_id_sequence(session, Project.__tablename__)
    return result.scalar_one()


async def account_exists(session: AsyncSession, account_id: int) -> bool:
    result = await session.execute(select(Account.id).where(Account.id == account_id))
    return result.first() is not None


@dataclass(frozen=True, slots=True)
class AccountRecord:
    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    id: int
    account_id: int
    name: str
    created_at: datetime


async def list_accounts(session: AsyncSession) -> list[AccountRecord]:
    result = await session.execute(
        select(Account.id, Account.name, Account.created_at).order_by(Account.id)
    )
    return [AccountRecord(row.id, row.name, row.created_at) for row in result]


async def list_projects(session: AsyncSession, account_id: int) -> list[ProjectRecord]:
    result = await session.execute(
        select(Project.id, Project.account_id, Project.name, Project.created_at)
        .where(Project.account_id == account_id)
        .order_by(Project.id)
    )
    return [ProjectRecord(row.id, row.account_id, row.name, row.created_at) for row in result]


async def projects_of_accounts(
    connection: AsyncConnection, account_ids: Iterable[int], project_ids: Iterable[int]
) -> dict[int, set[int]]:
    """Each of `account_ids` that exists, with those of `project_ids` that are its projects."""
    result = await connection.execute(
        _PROJECTS_OF_ACCOUNTS,
        {"account_ids": list(account_ids), "project_ids": list(project_ids)},
    )
    found: dict[int, set[int]] = {}
    for account_id, project_id in result:
        projects = found.setdefault(account_id, set())
        if project_id is not None:
            projects.add(project_id)
    return found


async def account_of_project(connection: AsyncConnection, project_id: int) -> int | None:
    """The account the project belongs to, or None when there is no such project."""
    result = await connection.execute(_ACCOUNT_OF_PROJECT, {"project_id": project_id})
    return result.scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One audit event as stored. `target_key_id` is None for a key inserted in the same
    statement batch: its id is known only once the key row is in."""

    account_id: int
    action: str
    actor_key_id: int | None
    actor_key: str | None
    target_key_id: int | None
    target_key: str
    related_key: str | None
    role: str
    projects: list[int] | None
    client_address: str | None
    request_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class IdempotencyCompletion:
    """The answer to keep in an idempotency record once its key is in."""

    record_id: int
    response: bytes


@dataclass(frozen=True, slots=True)
class NewKey:
    """The rows that create one key: the key itself, its creation's audit event, and for a
    request with an Idempotency-Key the answer its record keeps."""

    row: NewKeyRow
    audit: AuditRow
    idempotency: IdempotencyCompletion | None = None


async def add_keys(executor: Executor, new_keys: Sequence[NewKey]) -> list[ApiKeyInfo]:
    """Insert keys, their project links and their audit events; a few statements for any
    number of keys."""
    await executor.execute(_INSERT_KEYS, [_key_values(new_key.row) for new_key in new_keys])
    # The ids read back in one query: with RETURNING in the rows' order, SQLite's driver
    # would insert one row per statement.
    keys = [new_key.row.key for new_key in new_keys]
    result = await executor.execute(_IDS_OF_KEYS, {"keys": keys})
    id_of: dict[str, int] = {key: row_id for key, row_id in result}
    infos = [
        info_of(
            {
                **_key_values(new_key.row),
                "id": id_of[new_key.row.key],
                "last_used_at": None,
                "revoked_at": None,
            },
            new_key.row.project_ids,
        )
        for new_key in new_keys
    ]
    links = [
        {"api_key_id": info.id, "project_id": project}
        for info in infos
        for project in sorted(info.project_ids or ())
    ]
    if links:
        await executor.execute(_INSERT_LINKS, links)
    await executor.execute(
        _INSERT_AUDIT_EVENT,
        [
            _audit_values(new_key.audit, target_key_id=info.id)
            for new_key, info in zip(new_keys, infos, strict=True)
        ],
    )
    completions = [
        {
            "record_id": new_key.idempotency.record_id,
            "new_response": new_key.idempotency.response,
            "new_api_key_id": info.id,
        }
        for new_key, info in zip(new_keys, infos, strict=True)
        if new_key.idempotency is not None
    ]
    if completions:
        await executor.execute(_COMPLETE_IDEMPOTENCY_RECORD, completions)
    return infos


def _key_values(row: NewKeyRow) -> dict[str, Any]:
    return {
        "key": row.key,
        "account_id": row.account_id,
        "name": row.name,
        "type": row.type.value,
        "role": row.role.value,
        "all_projects": row.project_ids is None,
        "secret_digest": row.secret_digest,
        "secret_ciphertext": row.secret_ciphertext,
        "secret_hint": row.secret_hint,
        "created_by_id": row.created_by_id,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
    }


async def _project_ids(executor: Executor, row_id: int) -> frozenset[int]:
    result = await executor.execute(_PROJECT_IDS, {"row_id": row_id})
    return frozenset(result.scalars())


async def _find_credential(
    connection: AsyncConnection, statement: Executable, value: str | bytes
) -> StoredCredential | None:
    row = (await connection.execute(statement, {"value": value})).first()
    if row is None:
        return None
    project_ids = None if row.all_projects else await _project_ids(connection, row.id)
    return StoredCredential(info_of(row._mapping, project_ids), row.secret_ciphertext)


async def find_credential_by_key(connection: AsyncConnection, key: str) -> StoredCredential | None:
    return await _find_credential(connection, _CREDENTIAL_BY_KEY, key)


async def find_credential_by_digest(
    connection: AsyncConnection, digest: bytes
) -> StoredCredential | None:
    return await _find_credential(connection, _CREDENTIAL_BY_DIGEST, digest)


# A position in a newest-first listing: the (created_at, id) of the last row already seen.
Position = tuple[datetime, int]


def _within_scope(scope: frozenset[int] | None) -> ColumnElement[bool]:
    """Keys whose projects all lie inside `scope` (None: no limit)."""
    if scope is None:
        return ApiKey.id.is_not(None)
    outside = exists().where(
        ApiKeyProject.api_key_id == ApiKey.id, ApiKeyProject.project_id.not_in(sorted(scope))
    )
    return and_(ApiKey.all_projects.is_(False), ~outside)


def _before(
    created_at: InstrumentedAttribute[datetime], row_id: InstrumentedAttribute[int], after: Position
) -> ColumnElement[bool]:
    return or_(created_at < after[0], and_(created_at == after[0], row_id < after[1]))


async def _project_ids_of(executor: Executor, row_ids: list[int]) -> dict[int, frozenset[int]]:
    if not row_ids:
        return {}
    result = await executor.execute(
        select(ApiKeyProject.api_key_id, ApiKeyProject.project_id).where(
            ApiKeyProject.api_key_id.in_(row_ids)
        )
    )
    grouped: dict[int, set[int]] = {}
    for row_id, project_id in result:
        grouped.setdefault(row_id, set()).add(project_id)
    return {row_id: frozenset(projects) for row_id, projects in grouped.items()}


async def list_keys(
    executor: Executor,
    account_id: int,
    *,
    scope: frozenset[int] | None,
    include_revoked: bool,
    after: Position | None,
    limit: int,
) -> list[ApiKeyInfo]:
    """Newest first, at most `limit` keys, starting after `after`."""
    query = select(*_KEY_COLUMNS).where(ApiKey.account_id == account_id, _within_scope(scope))
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    if after is not None:
        query = query.where(_before(ApiKey.created_at, ApiKey.id, after))
    query = query.order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).limit(limit)
    rows = (await executor.execute(query)).all()
    projects = await _project_ids_of(executor, [row.id for row in rows if not row.all_projects])
    return [info_of(row._mapping, projects.get(row.id, frozenset())) for row in rows]


async def get_key(
    executor: Executor, account_id: int, key: str, *, scope: frozenset[int] | None
) -> ApiKeyInfo | None:
    result = await executor.execute(
        select(*_KEY_COLUMNS).where(
            ApiKey.account_id == account_id, ApiKey.key == key, _within_scope(scope)
        )
    )
    row = result.first()
    if row is None:
        return None
    return info_of(row._mapping, None if row.all_projects else await _project_ids(executor, row.id))


async def revoke_key(executor: Executor, row_id: int, revoked_at: datetime) -> bool:
    """Set revoked_at once; False when the key was already revoked."""
    return await update_key(executor, row_id, revoked_at=revoked_at)


async def update_key(executor: Executor, row_id: int, **values: Any) -> bool:
    """Change columns of a key not revoked; False when it is revoked (nothing changes)."""
    result = await executor.execute(
        update(ApiKey).where(ApiKey.id == row_id, ApiKey.revoked_at.is_(None)).values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def touch_last_used(
    session: AsyncSession, row_id: int, used_at: datetime, every: float
) -> None:
    """Record a use unless one within `every` seconds is already recorded."""
    await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == row_id,
            or_(
                ApiKey.last_used_at.is_(None),
                ApiKey.last_used_at < used_at - timedelta(seconds=every),
            ),
        )
        .values(last_used_at=used_at)
    )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    account_id: int
    action: str
    actor_key: str | None
    target_key: str
    related_key: str | None
    role: str
    projects: list[int] | None
    client_address: str | None
    request_id: str | None
    created_at: datetime


async def add_audit_event(executor: Executor, audit: AuditRow) -> None:
    await executor.execute(_INSERT_AUDIT_EVENT, _audit_values(audit, audit.target_key_id))


def _audit_values(audit: AuditRow, target_key_id: int | None) -> dict[str, Any]:
    return {
        "account_id": audit.account_id,
        "action": audit.action,
        "actor_key_id": audit.actor_key_id,
        "actor_key": audit.actor_key,
        "target_key_id": target_key_id,
        "target_key": audit.target_key,
        "related_key": audit.related_key,
        "role": audit.role,
        "projects": audit.projects,
        "client_address": audit.client_address,
        "request_id": audit.request_id,
        "created_at": audit.created_at,
    }


async def list_audit_events(
    executor: Executor, account_id: int, *, after: Position | None, limit: int
) -> list[AuditRecord]:
    query = select(*_AUDIT_COLUMNS).where(AuditEvent.account_id == account_id)
    if after is not None:
        query = query.where(_before(AuditEvent.created_at, AuditEvent.id, after))
    query = query.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(limit)
    return [AuditRecord(**row._mapping) for row in await executor.execute(query)]


_AUDIT_COLUMNS = (
    AuditEvent.id,
    AuditEvent.account_id,
    AuditEvent.action,
    AuditEvent.actor_key,
    AuditEvent.target_key,
    AuditEvent.related_key,
    AuditEvent.role,
    AuditEvent.projects,
    AuditEvent.client_address,
    AuditEvent.request_id,
    AuditEvent.created_at,
)


@dataclass(frozen=True, slots=True)
class StoredIdempotency:
    id: int
    fingerprint: bytes
    response: bytes | None
    api_key_id: int | None
    created_at: datetime
    expires_at: datetime


async def add_idempotency_record(
    executor: Executor,
    caller_key_id: int,
    idempotency_key: str,
    fingerprint: bytes,
    created_at: datetime,
    expires_at: datetime,
) -> int:
    """A new record, in flight (no response yet); IntegrityError if the caller already holds
    one under this key."""
    result = await executor.execute(
        insert(_IDEMPOTENCY)
        .values(
            caller_key_id=caller_key_id,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            created_at=created_at,
            expires_at=expires_at,
        )
        .returning(_IDEMPOTENCY.c.id)
    )
    record_id: int = result.scalar_one()
    return record_id


async def find_idempotency_record(
    executor: Executor, caller_key_id: int, idempotency_key: str
) -> StoredIdempotency | None:
    row = (
        await executor.execute(
            select(
                IdempotencyRecord.id,
                IdempotencyRecord.fingerprint,
                IdempotencyRecord.response,
                IdempotencyRecord.api_key_id,
                IdempotencyRecord.created_at,
                IdempotencyRecord.expires_at,
            ).where(
                IdempotencyRecord.caller_key_id == caller_key_id,
                IdempotencyRecord.idempotency_key == idempotency_key,
            )
        )
    ).first()
    return None if row is None else StoredIdempotency(**row._mapping)


async def restart_idempotency_record(
    executor: Executor, record_id: int, was_started_at: datetime, started_at: datetime
) -> bool:
    """Take over an abandoned record; False when another request took it first."""
    result = await executor.execute(
        update(IdempotencyRecord)
        .where(
            IdempotencyRecord.id == record_id,
            IdempotencyRecord.created_at == was_started_at,
            IdempotencyRecord.response.is_(None),
        )
        .values(created_at=started_at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def delete_idempotency_record(executor: Executor, record_id: int) -> None:
    await executor.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id))


async def delete_expired_idempotency_records(executor: Executor, now: datetime) -> int:
    result = await executor.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
