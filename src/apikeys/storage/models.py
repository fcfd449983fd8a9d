"""SQLAlchemy models. Alembic migrations, not these classes, create and change the schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints, so Alembic produces the same names on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, also on SQLite, which keeps no offset."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime}


ROLE_CHECK = "role IN ('browse', 'review', 'edit', 'publish', 'account_manager', 'admin', 'owner')"


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("type IN ('requestSigning', 'secretKey')", name="type"),
        CheckConstraint(ROLE_CHECK, name="role"),
        # A signing key must be recoverable to check signatures; a Bearer secret must not be.
        CheckConstraint(
            "(type = 'requestSigning') = (secret_ciphertext IS NOT NULL)", name="ciphertext"
        ),
        # Newest-first listing pages through (created_at, id) within one account.
        Index("ix_api_keys_account_created", "account_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The key's public identifier. Its column keeps the first release's name: renaming it
    # would stop replicas of the previous release during a rolling upgrade.
    key: Mapped[str] = mapped_column("public_id", String(64), key="key", unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    all_projects: Mapped[bool] = mapped_column(Boolean)
    # HMAC-SHA256(digest key, secret): the Bearer lookup is one query on this unique index.
    secret_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    # nonce || AES-256-GCM(secret), associated data = key; signing keys only.
    secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    secret_hint: Mapped[str] = mapped_column(String(8))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class ApiKeyProject(Base):
    __tablename__ = "api_key_projects"

    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True, index=True)


class AuditEvent(Base):
    """One change to a key (created, updated, rolled, revoked), written in the same
    transaction as the change."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_account_created", "account_id", "created_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    action: Mapped[str] = mapped_column(String(32))
    # Public ids are kept beside the foreign keys so the trail reads without joins.
    actor_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    actor_key: Mapped[str | None] = mapped_column(String(64))
    target_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    target_key: Mapped[str] = mapped_column(String(64))
    # A roll's two events name each other: the old key's names the new, and back.
    related_key: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    projects: Mapped[list[int] | None] = mapped_column(JSON)
    client_address: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]


class UsedSignature(Base):
    """A signature that authenticated a request, bound to that request's method."""

    __tablename__ = "used_signatures"
    __table_args__ = (Index("ix_used_signatures_forget_at", "forget_at"),)

    # Lower-case hex of the HMAC-SHA256.
    signature: Mapped[str] = mapped_column(String(64), primary_key=True)
    method: Mapped[str] = mapped_column(String(16))
    # UNIX seconds: the signature's Expires plus the clock skew, past which it is deleted.
    forget_at: Mapped[int] = mapped_column(Integer)


class AuthFailure(Base):
    """Failed authentications from one client address in one second (UNIX seconds)."""

    __tablename__ = "auth_failures"
    __table_args__ = (Index("ix_auth_failures_second", "second"),)

    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    second: Mapped[int] = mapped_column(Integer, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)


class AuthBlock(Base):
    """A client address past the failure limit, refused until `until` (UNIX seconds)."""

    __tablename__ = "auth_blocks"
    __table_args__ = (Index("ix_auth_blocks_until", "until"),)

    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    until: Mapped[int] = mapped_column(Integer)


class IdempotencyRecord(Base):
    """A create or roll sent with an `Idempotency-Key`, kept for 24 hours so a retry gets
    the first answer again; `response` is empty while the first request is in flight."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("caller_key_id", "idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    caller_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    # SHA-256 of the operation and its body as parsed JSON.
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    # nonce || AES-256-GCM(the answer, new secret included), associated data = the record's
    # id, as a signing secret's is its key's.
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The key the answer made; set with the answer.
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
