"""Test data built the one way: key metadata and the rows of a new key."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from apikeys import security
from apikeys.domain import KEY_CREATED, ApiKeyInfo, KeyType, Role
from apikeys.storage.repository import AuditRow, NewKey, NewKeyRow

ACCOUNT_ID = 10  # the account tests.conftest makes


def key_info(**changes: Any) -> ApiKeyInfo:
    """A key's metadata, a browse secretKey key of every project unless `changes` say else."""
    info = ApiKeyInfo(
        id=1,
        key=security.generate_key(),
        account_id=ACCOUNT_ID,
        name="k",
        type=KeyType.SECRET_KEY,
        role=Role.BROWSE,
        project_ids=None,
        secret_hint="…abcd",
        created_at=datetime.now(UTC),
        expires_at=None,
        last_used_at=None,
        revoked_at=None,
    )
    return replace(info, **changes)


def creation_audit(row: NewKeyRow) -> AuditRow:
    """The audit event of a key created from the command line."""
    return AuditRow(
        account_id=row.account_id,
        action=KEY_CREATED,
        actor_key_id=None,
        actor_key=None,
        target_key_id=None,
        target_key=row.key,
        related_key=None,
        role=row.role.value,
        projects=sorted(row.project_ids) if row.project_ids is not None else None,
        client_address="command line",
        request_id=None,
        created_at=row.created_at,
    )


def new_key_of(row: NewKeyRow) -> NewKey:
    return NewKey(row, creation_audit(row))
