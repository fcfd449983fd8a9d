"""What operators do with the command line, with no key at hand: accounts and projects, and
the keys of an account (listed and revoked without a calling key). Each function runs in the
caller's transaction (`Database.transaction()`)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from apikeys.domain import COMMAND_LINE, KEY_REVOKED, ApiKeyInfo
from apikeys.errors import Conflict, NotFound
from apikeys.security import SecretKeeper
from apikeys.storage import repository
from apikeys.storage.database import AsyncConnection, AsyncSession
from apikeys.storage.repository import AccountRecord, AuditRow, ProjectRecord

# Pages the listing reads the keys in; the command line shows them all.
_KEY_PAGE = 200


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


async def list_accounts(session: AsyncSession) -> list[AccountRecord]:
    return await repository.list_accounts(session)


async def list_projects(session: AsyncSession, account_id: int) -> list[ProjectRecord]:
    if not await repository.account_exists(session, account_id):
        raise NotFound(f"Account {account_id} was not found")
    return await repository.list_projects(session, account_id)


async def list_account_keys(
    session: AsyncSession, account_id: int, *, include_revoked: bool
) -> list[ApiKeyInfo]:
    """Every key of the account, newest first, as an operator sees them: no scope applies."""
    if not await repository.account_exists(session, account_id):
        raise NotFound(f"Account {account_id} was not found")
    found: list[ApiKeyInfo] = []
    while True:
        after = (found[-1].created_at, found[-1].id) if found else None
        page = await repository.list_keys(
            session,
            account_id,
            scope=None,
            include_revoked=include_revoked,
            after=after,
            limit=_KEY_PAGE,
        )
        found += page
        if len(page) < _KEY_PAGE:
            return found


async def revoke_account_key(session: AsyncSession, account_id: int, key: str) -> ApiKeyInfo:
    """Revoke any key of the account, owner keys too, for good; the audit event names no acting
    key. Revoking a revoked key changes nothing. Returns the key as it now stands.

    Other processes refuse the key once their key cache lets go of it (APIKEYS_AUTH_CACHE_TTL).
    """
    target = await repository.get_key(session, account_id, key, scope=None)
    if target is None:
        raise NotFound(f"API key {key} was not found in account {account_id}")
    now = datetime.now(UTC)
    if await repository.revoke_key(session, target.id, now):
        await repository.add_audit_event(
            session,
            AuditRow(
                account_id=account_id,
                action=KEY_REVOKED,
                actor_key_id=None,
                actor_key=None,
                target_key_id=target.id,
                target_key=target.key,
                related_key=None,
                role=target.role.value,
                projects=sorted(target.project_ids) if target.project_ids is not None else None,
                client_address=COMMAND_LINE.client_address,
                request_id=COMMAND_LINE.request_id,
                created_at=now,
            ),
        )
    revoked = await repository.get_key(session, account_id, key, scope=None)
    assert revoked is not None
    return revoked


async def key_by_secret(
    connection: AsyncConnection, keeper: SecretKeeper, secret: str
) -> ApiKeyInfo | None:
    """The key whose secret this is under this master key, if any (revoked and expired too)."""
    if not secret:
        return None
    stored = await repository.find_credential_by_digest(connection, keeper.digest(secret))
    return stored.info if stored else None
