"""Key lifecycle and the rules around it: who may manage keys, and what they may grant."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from apikeys import security
from apikeys.domain import (
    COMMAND_LINE,
    KEY_CREATED,
    KEY_REVOKED,
    KEY_ROLLED,
    KEY_UPDATED,
    ApiKeyInfo,
    KeyType,
    Origin,
    Role,
)
from apikeys.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from apikeys.security import SecretKeeper
from apikeys.service.idempotency import Claim, Idempotency, IdempotentRequest
from apikeys.service.pagination import Page, decode_cursor, page_of
from apikeys.storage import repository
from apikeys.storage.database import AsyncSession, Database
from apikeys.storage.repository import AuditRow, NewKey, NewKeyRow
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
    rolled_from: str | None = None  # the key this one replaces, when made by a roll

    def __repr__(self) -> str:
        return f"IssuedKey(info={self.info!r}, secret=<hidden>, rolled_from={self.rolled_from!r})"


@dataclass(frozen=True, slots=True)
class KeyChanges:
    """A merge patch of a key's metadata: only the fields named in `given` change."""

    given: frozenset[str]  # of "name", "expires_at"
    name: str | None = None
    expires_at: datetime | None = None  # None with "expires_at" given: never expires


# How long a rolled key keeps working by default, and at most (Stripe's limit).
ROLL_OVERLAP_DEFAULT = 86_400
ROLL_OVERLAP_MAX = 604_800


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


def _audit_row(
    action: str,
    *,
    actor: ApiKeyInfo | None,
    target_id: int | None,
    target_key: str,
    account_id: int,
    role: Role,
    project_ids: frozenset[int] | None,
    origin: Origin,
    at: datetime,
    related_key: str | None = None,
) -> AuditRow:
    return AuditRow(
        account_id=account_id,
        action=action,
        actor_key_id=actor.id if actor else None,
        actor_key=actor.key if actor else None,
        target_key_id=target_id,
        target_key=target_key,
        related_key=related_key,
        role=role.value,
        projects=sorted(project_ids) if project_ids is not None else None,
        client_address=origin.client_address,
        request_id=origin.request_id,
        created_at=at,
    )


def _audit_of(
    action: str,
    actor: ApiKeyInfo | None,
    target: ApiKeyInfo,
    origin: Origin,
    at: datetime,
    related_key: str | None = None,
) -> AuditRow:
    return _audit_row(
        action,
        actor=actor,
        target_id=target.id,
        target_key=target.key,
        account_id=target.account_id,
        role=target.role,
        project_ids=target.project_ids,
        origin=origin,
        at=at,
        related_key=related_key,
    )


def _revoked(key: ApiKeyInfo) -> Conflict:
    return Conflict(f"API key {key.key} is revoked, and a revoked key stays as it is")


class KeyService:
    """Every operation on keys, with its rules; built once per process (apikeys.services).

    Writes go through the one transaction rule (`Database.transaction()`: committed when the
    operation succeeds, rolled back when it raises), or, for new keys, through the
    group-committing writer; every change is written with its audit event, in the same
    transaction.
    """

    def __init__(
        self,
        database: Database,
        writer: KeyWriter,
        keeper: SecretKeeper,
        prefixes: SecretPrefixes,
        forget: Callable[[str], None],
        idempotency: Idempotency,
    ) -> None:
        self._database = database
        self._idempotency = idempotency
        self._writer = writer
        self._keeper = keeper
        self._prefixes = prefixes
        # Drops a key from this process's authentication cache once a change is committed.
        self._forget = forget

    async def create(
        self,
        caller: ApiKeyInfo,
        account_id: int,
        request: KeyRequest,
        origin: Origin,
        idempotent: IdempotentRequest | None = None,
    ) -> IssuedKey:
        """POST /accounts/{id}/api-keys: the caller's rules, then the key."""
        ensure_can_manage(caller, account_id)
        ensure_within_grant(caller, request)
        return await self._idempotency.run(
            caller,
            idempotent,
            lambda claim: self._issue(account_id, request, caller, origin, claim),
            _replayed,
        )

    async def create_bootstrap(self, account_id: int, request: KeyRequest) -> IssuedKey:
        """The command line's path to a key, any role including owner; no caller to check."""
        return await self._issue(account_id, request, None, COMMAND_LINE, claim=None)

    async def list(
        self,
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
        after = decode_cursor(cursor)
        async with self._database.reads() as connection:
            rows = await repository.list_keys(
                connection,
                account_id,
                scope=caller.project_ids,
                include_revoked=include_revoked,
                after=after,
                limit=limit + 1,
            )
        return page_of(rows, limit)

    async def get(self, caller: ApiKeyInfo, account_id: int, key: str) -> ApiKeyInfo:
        ensure_can_manage(caller, account_id)
        async with self._database.reads() as connection:
            found = await repository.get_key(connection, account_id, key, scope=caller.project_ids)
        if found is None:
            raise NotFound(f"API key {key} was not found in account {account_id}")
        return found

    async def revoke(self, caller: ApiKeyInfo, account_id: int, key: str, origin: Origin) -> None:
        """Revoke a key for good; revoking a revoked key changes nothing.

        Any key may revoke itself, whatever its role: that only ever takes power away.
        """
        async with self._database.transaction() as session:
            if caller.account_id == account_id and key == caller.key:
                target: ApiKeyInfo | None = caller
            else:
                ensure_can_manage(caller, account_id)
                target = await repository.get_key(
                    session, account_id, key, scope=caller.project_ids
                )
            if target is None:
                raise NotFound(f"API key {key} was not found in account {account_id}")
            if target.role.outranks(caller.role):
                raise Forbidden(
                    f"A key with role {caller.role} cannot revoke a key with role {target.role}"
                )
            now = datetime.now(UTC)
            if await repository.revoke_key(session, target.id, now):
                await repository.add_audit_event(
                    session, _audit_of(KEY_REVOKED, caller, target, origin, now)
                )
        # Only once committed, so the very next request with the key is refused.
        self._forget(target.key)

    async def patch(
        self,
        caller: ApiKeyInfo,
        account_id: int,
        key: str,
        changes: KeyChanges,
        origin: Origin,
    ) -> ApiKeyInfo:
        """Rename a key or change its expiry (an expired key may be given a new one).

        Never a key on itself: a leaked key must not be able to extend its own life.
        """
        ensure_can_manage(caller, account_id)
        if key == caller.key:
            raise Forbidden("A key cannot change itself; use another admin or owner key")
        async with self._database.transaction() as session:
            target = await self._target(session, caller, account_id, key, "change")
            values: dict[str, Any] = {
                field: getattr(changes, field)
                for field in ("name", "expires_at")
                if field in changes.given
            }
            if not values:
                return target
            if not await repository.update_key(session, target.id, **values):
                raise _revoked(target)
            updated = replace(target, **values)
            await repository.add_audit_event(
                session, _audit_of(KEY_UPDATED, caller, updated, origin, datetime.now(UTC))
            )
        self._forget(target.key)
        return updated

    async def roll(
        self,
        caller: ApiKeyInfo | None,
        account_id: int,
        key: str,
        expires_in: int,
        origin: Origin,
        idempotent: IdempotentRequest | None = None,
    ) -> IssuedKey:
        """A new key with the old one's name, type, role, projects and expiry; the old key
        then expires `expires_in` seconds from now (never later than it would have), or is
        revoked at once for 0. `caller` None is the command line, which any key may roll.

        The caller must be allowed to create the new key (so only an owner rolls an owner
        key), and no key rolls itself: a leaked key must not mint its own successor.
        """
        if caller is None:
            return await self._roll(None, account_id, key, expires_in, origin, claim=None)
        ensure_can_manage(caller, account_id)
        if key == caller.key:
            raise Forbidden("A key cannot roll itself; use another admin or owner key")
        return await self._idempotency.run(
            caller,
            idempotent,
            lambda claim: self._roll(caller, account_id, key, expires_in, origin, claim),
            _replayed,
        )

    async def _roll(
        self,
        caller: ApiKeyInfo | None,
        account_id: int,
        key: str,
        expires_in: int,
        origin: Origin,
        claim: Claim | None,
    ) -> IssuedKey:
        async with self._database.transaction() as session:
            target = await self._target(session, caller, account_id, key, "roll")
            now = datetime.now(UTC)
            if not target.is_active(now.timestamp()):
                raise Conflict(
                    f"API key {key} has expired; give it a new expires_at first to roll it"
                )
            request = KeyRequest(
                name=target.name,
                type=target.type,
                role=target.role,
                project_ids=target.project_ids,
                expires_at=target.expires_at,
            )
            if caller is not None:
                ensure_within_grant(caller, request)
            new_key, secret = self._new_key(
                account_id, request, caller, origin, claim, rolled_from=target.key
            )
            [info] = await repository.add_keys(session, [new_key])
            old_values: dict[str, Any] = {"revoked_at": now}
            if expires_in:
                overlap_ends = now + timedelta(seconds=expires_in)
                if target.expires_at is None or overlap_ends < target.expires_at:
                    old_values = {"expires_at": overlap_ends}
                else:
                    old_values = {}
            if old_values and not await repository.update_key(session, target.id, **old_values):
                raise _revoked(target)
            await repository.add_audit_event(
                session,
                _audit_of(
                    KEY_ROLLED,
                    caller,
                    replace(target, **old_values),
                    origin,
                    now,
                    related_key=info.key,
                ),
            )
        self._forget(target.key)
        return IssuedKey(info, secret, rolled_from=target.key)

    async def _target(
        self,
        session: AsyncSession,
        caller: ApiKeyInfo | None,
        account_id: int,
        key: str,
        verb: str,
    ) -> ApiKeyInfo:
        """The key to change: in the caller's scope, not above its role, not revoked."""
        scope = caller.project_ids if caller is not None else None
        target = await repository.get_key(session, account_id, key, scope=scope)
        if target is None:
            raise NotFound(f"API key {key} was not found in account {account_id}")
        if caller is not None and target.role.outranks(caller.role):
            raise Forbidden(
                f"A key with role {caller.role} cannot {verb} a key with role {target.role}"
            )
        if target.revoked_at is not None:
            raise _revoked(target)
        return target

    def _new_key(
        self,
        account_id: int,
        request: KeyRequest,
        created_by: ApiKeyInfo | None,
        origin: Origin,
        claim: Claim | None,
        rolled_from: str | None = None,
    ) -> tuple[NewKey, str]:
        """The rows of a new key, its creation's audit event and, for a claimed idempotency
        record, the answer to keep; and the key's secret."""
        key = security.generate_key()
        secret = security.generate_secret(self._prefixes.for_type(request.type))
        signing = request.type is KeyType.REQUEST_SIGNING
        now = datetime.now(UTC)
        project_ids = request.project_ids or None
        row = NewKeyRow(
            key=key,
            account_id=account_id,
            name=request.name,
            type=request.type,
            role=request.role,
            project_ids=project_ids,
            secret_digest=self._keeper.digest(secret),
            secret_ciphertext=self._keeper.encrypt(secret, key) if signing else None,
            secret_hint=security.secret_hint(secret),
            created_by_id=created_by.id if created_by else None,
            created_at=now,
            expires_at=request.expires_at,
        )
        audit = _audit_row(
            KEY_CREATED,
            actor=created_by,
            target_id=None,
            target_key=key,
            account_id=account_id,
            role=request.role,
            project_ids=project_ids,
            origin=origin,
            at=now,
            related_key=rolled_from,
        )
        completion = None if claim is None else claim.completion(_kept(row, secret, rolled_from))
        return NewKey(row, audit, completion), secret

    async def _issue(
        self,
        account_id: int,
        request: KeyRequest,
        created_by: ApiKeyInfo | None,
        origin: Origin,
        claim: Claim | None,
    ) -> IssuedKey:
        """Create a key in the account and return it with its secret, once committed."""
        new_key, secret = self._new_key(account_id, request, created_by, origin, claim)
        try:
            info = await self._writer.add(new_key)
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


def _kept(row: NewKeyRow, secret: str, rolled_from: str | None) -> dict[str, Any]:
    """The answer an idempotency record keeps (encrypted: it holds the secret), as a new key
    is before any use."""
    return {
        "key": row.key,
        "account_id": row.account_id,
        "name": row.name,
        "type": row.type.value,
        "role": row.role.value,
        "project_ids": sorted(row.project_ids) if row.project_ids is not None else None,
        "secret_hint": row.secret_hint,
        "created_at": row.created_at.isoformat(),
        "expires_at": _isoformat(row.expires_at),
        "secret": secret,
        "rolled_from": rolled_from,
    }


def _replayed(kept: dict[str, Any], row_id: int) -> IssuedKey:
    info = ApiKeyInfo(
        id=row_id,
        key=kept["key"],
        account_id=kept["account_id"],
        name=kept["name"],
        type=KeyType(kept["type"]),
        role=Role(kept["role"]),
        project_ids=None if kept["project_ids"] is None else frozenset(kept["project_ids"]),
        secret_hint=kept["secret_hint"],
        created_at=datetime.fromisoformat(kept["created_at"]),
        expires_at=_from_isoformat(kept["expires_at"]),
        last_used_at=None,
        revoked_at=None,
    )
    return IssuedKey(info, kept["secret"], kept["rolled_from"])


def _isoformat(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _from_isoformat(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
