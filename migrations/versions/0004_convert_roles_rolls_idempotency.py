"""Convert's whole set of roles, audit events that name a related key, idempotency records

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = "role IN ('browse', 'review', 'edit', 'publish', 'account_manager', 'admin', 'owner')"
OLD_ROLES = "role IN ('browse', 'edit', 'publish', 'admin', 'owner')"
# Going back, each role the old set lacks becomes the next lower one it has, so no key
# gains power: review -> browse, account_manager -> publish.
DOWNGRADED = {"review": "browse", "account_manager": "publish"}


def upgrade() -> None:
    # Every stored role is in the new set already; only the constraint widens.
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint(op.f("ck_api_keys_role"), type_="check")
        batch.create_check_constraint(op.f("ck_api_keys_role"), ROLES)
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("related_key", sa.String(length=64), nullable=True))
    op.create_table(
        "idempotency_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("caller_key_id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(length=32), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["caller_key_id"],
            ["api_keys.id"],
            name=op.f("fk_idempotency_records_caller_key_id_api_keys"),
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_idempotency_records_api_key_id_api_keys"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_records")),
        sa.UniqueConstraint(
            "caller_key_id",
            "idempotency_key",
            name=op.f("uq_idempotency_records_caller_key_id"),
        ),
    )
    op.create_index(
        op.f("ix_idempotency_records_expires_at"), "idempotency_records", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_idempotency_records_expires_at"), table_name="idempotency_records")
    op.drop_table("idempotency_records")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("related_key")
    api_keys = sa.table("api_keys", sa.column("role", sa.String))
    for role, lower in DOWNGRADED.items():
        op.execute(api_keys.update().where(api_keys.c.role == role).values(role=lower))
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint(op.f("ck_api_keys_role"), type_="check")
        batch.create_check_constraint(op.f("ck_api_keys_role"), OLD_ROLES)
