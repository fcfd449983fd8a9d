"""Key lifecycle and the rules around it: who may manage keys, and what they may grant."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from apikeys import security
from apikeys.domain import COMMAND_LINE, KEY_REVOKED, ApiKeyInfo, KeyType, Origin, Role
from apikeys.errors import FieldError, Forbidden, InvalidInput, NotFound
from apikeys.security import SecretKeeper
from apikeys.service.pagination import Page, decode_cursor, page_of
from apikeys.storage import repository
from apikeys.storage.database import AsyncSession
from apikeys.storage.repository import NewKey, NewKeyRow
from apikeys.storage.writer import KeyRefused, KeyWriter, UnknownAccount, UnknownProjects


@dataclass(frozen=True, slots=True)
class KeyRequest:
    name: str
    type: KeyType
    role: Role
    project_ids: frozenset[int] | None  # None: every project of the account
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly created key with its secret: the only moment the secret exists in clear."""

    info: ApiKeyInfo
    secret: str

    def __repr__(self) -> str:
        return f"IssuedKey(info={self.info!r}, secret=<hidden>)"


@dataclass(frozen=True, slots=True)
class SecretPrefixes:
    secret_key: str
    request_signing: str

    def for_type(self, key_type: KeyType) -> str:
        return self.request_signing if key_type is KeyType.REQUEST_SIGNING else self.secret_key


def ensure_can_manage(caller: ApiKeyInfo, account_id: int) -> None:
    """Managing keys takes admin or owner, inside the caller's own account only."""
    if caller.account_id != account_id:
        # The same answer as for an account that does not exist: no probing for accounts.
        raise NotFound(f"Account {account_id} was not found")
    if Role.ADMIN.outranks(caller.role):
        raise Forbidden(
            f"Managing API keys needs the admin or owner role; this key has {caller.role}"
        )


def ensure_within_grant(caller: ApiKeyInfo, request: KeyRequest) -> None:
    """A caller cannot mint more power than it holds."""
    if request.role.outranks(caller.role):
        raise Forbidden(
            f"A key with role {caller.role} cannot create a key with role {request.role}"
        )
    if caller.project_ids is None:
        return
    if not request.project_ids:
        raise Forbidden(
            "This key is limited to some projects, so the new key must list a non-empty "
            "subset of them; an empty or missing list would mean every project"
        )
    beyond = request.project_ids - caller.project_ids
    if beyond:
        raise Forbidden(
            "This key cannot grant access to projects outside its own scope: "
            + ", ".join(map(str, sorted(beyond)))
        )


async def issue_key(
    writer: KeyWriter,
    keeper: SecretKeeper,
    prefixes: SecretPrefixes,
    account_id: int,
    request: KeyRequest,
    created_by: ApiKeyInfo | None,
    origin: Origin,
) -> IssuedKey:
    """Create a key in the account and return it with its secret, once committed."""
    public_id = security.generate_key_id()
    secret = security.generate_secret(prefixes.for_type(request.type))
    signing = request.type is KeyType.REQUEST_SIGNING
    row = NewKeyRow(
        public_id=public_id,
        account_id=account_id,
        name=request.name,
        type=request.type,
        role=request.role,
        project_ids=request.project_ids or None,
        secret_digest=keeper.digest(secret),
        secret_ciphertext=keeper.encrypt(secret, public_id) if signing else None,
        secret_hint=security.secret_hint(secret),
        created_by_id=created_by.id if created_by else None,
        created_at=datetime.now(UTC),
        expires_at=request.expires_at,
    )
    try:
        info = await writer.add(NewKey(row, created_by, origin))
    except UnknownAccount:
        raise NotFound(f"Account {account_id} was not found") from None
    except KeyRefused:
        raise InvalidInput(
            "The key's values could not be stored: a name, project id or expiry is outside "
            "what the service accepts"
        ) from None
    except UnknownProjects as error:
        listed = ", ".join(map(str, error.project_ids))
        raise InvalidInput(
            f"These project ids are not projects of account {account_id}: {listed}",
            [FieldError(("body", "projects"), f"unknown project ids: {listed}")],
        ) from None
    return IssuedKey(info, secret)


async def create_key(
    writer: KeyWriter,
    keeper: SecretKeeper,
    prefixes: SecretPrefixes,
    caller: ApiKeyInfo,
    account_id: int,
    request: KeyRequest,
    origin: Origin,
) -> IssuedKey:
    """POST /accounts/{id}/api-keys: the caller's rules, then the key."""
    ensure_can_manage(caller, account_id)
    ensure_within_grant(caller, request)
    return await issue_key(
        writer, keeper, prefixes, account_id, request, created_by=caller, origin=origin
    )


async def create_bootstrap_key(
    writer: KeyWriter,
    keeper: SecretKeeper,
    prefixes: SecretPrefixes,
    account_id: int,
    request: KeyRequest,
) -> IssuedKey:
    """The command line's path to a key, any role including owner; no caller to check."""
    return await issue_key(
        writer, keeper, prefixes, account_id, request, created_by=None, origin=COMMAND_LINE
    )


async def list_keys(
    session: AsyncSession,
    caller: ApiKeyInfo,
    account_id: int,
    *,
    limit: int,
    cursor: str | None,
    include_revoked: bool,
) -> Page[ApiKeyInfo]:
    """The keys the caller may see, newest first: a project-limited caller sees only keys
    whose projects all lie inside its own."""
    ensure_can_manage(caller, account_id)
    rows = await repository.list_keys(
        session,
        account_id,
        scope=caller.project_ids,
        include_revoked=include_revoked,
        after=decode_cursor(cursor),
        limit=limit + 1,
    )
    return page_of(rows, limit)


async def get_key(
    session: AsyncSession, caller: ApiKeyInfo, account_id: int, public_id: str
) -> ApiKeyInfo:
    ensure_can_manage(caller, account_id)
    key = await repository.get_key(session, account_id, public_id, scope=caller.project_ids)
    if key is None:
        raise NotFound(f"API key {public_id} was not found in account {account_id}")
    return key


async def revoke_key(
    session: AsyncSession,
    caller: ApiKeyInfo,
    account_id: int,
    public_id: str,
    origin: Origin,
    forget: Callable[[str], None],
) -> None:
    """Revoke a key for good; revoking a revoked key changes nothing. Commits.

    Any key may revoke itself, whatever its role: that only ever takes power away.
    `forget` drops the key from this process's authentication cache once the revocation is
    committed, so the very next request with it is refused.
    """
    revoking_itself = caller.account_id == account_id and public_id == caller.key
    if revoking_itself:
        target: ApiKeyInfo | None = caller
    else:
        ensure_can_manage(caller, account_id)
        target = await repository.get_key(session, account_id, public_id, scope=caller.project_ids)
    if target is None:
        raise NotFound(f"API key {public_id} was not found in account {account_id}")
    if target.role.outranks(caller.role):
        raise Forbidden(
            f"A key with role {caller.role} cannot revoke a key with role {target.role}"
        )
    now = datetime.now(UTC)
    if await repository.revoke_key(session, target.id, now):
        await repository.add_audit_event(
            session,
            action=KEY_REVOKED,
            actor=caller,
            target=target,
            origin=origin,
            created_at=now,
        )
    await session.commit()
    forget(target.key)
