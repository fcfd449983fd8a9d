"""The vocabulary every layer shares: roles, key types and a key's public metadata."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

# Every id (accounts, projects, keys, events) is a 32-bit signed integer in the database.
MAX_ID = 2**31 - 1


class KeyType(StrEnum):
    REQUEST_SIGNING = "requestSigning"
    SECRET_KEY = "secretKey"


class Role(StrEnum):
    """Convert's published roles, plus owner; ranked in the order written here (Convert
    publishes the names, not the order)."""

    BROWSE = "browse"
    REVIEW = "review"
    EDIT = "edit"
    PUBLISH = "publish"
    ACCOUNT_MANAGER = "account_manager"
    ADMIN = "admin"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return _ROLE_RANKS[self]

    def outranks(self, other: Role) -> bool:
        return self.rank > other.rank


_ROLE_RANKS = {role: rank for rank, role in enumerate(Role)}


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """A key as its owner may see it: everything but the secret."""

    id: int
    key: str
    account_id: int
    name: str
    type: KeyType
    role: Role
    project_ids: frozenset[int] | None  # None: every project of the account, now and future
    secret_hint: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    def is_active(self, now: float) -> bool:
        """Neither revoked nor expired at `now`, in UNIX seconds."""
        return self.revoked_at is None and (
            self.expires_at is None or now < self.expires_at.timestamp()
        )


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a change came from, for the audit trail."""

    client_address: str | None
    request_id: str | None


COMMAND_LINE = Origin(client_address="command line", request_id=None)

# The actions of the audit trail.
KEY_CREATED = "api_key.created"
KEY_REVOKED = "api_key.revoked"
KEY_UPDATED = "api_key.updated"
KEY_ROLLED = "api_key.rolled"
