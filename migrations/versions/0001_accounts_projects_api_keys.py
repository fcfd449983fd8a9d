"""accounts, projects, api keys and the key-project link

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_projects_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
    )
    op.create_index(op.f("ix_projects_account_id"), "projects", ["account_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("all_projects", sa.Boolean(), nullable=False),
        sa.Column("secret_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("secret_hint", sa.String(length=8), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        _timestamp("created_at"),
        _timestamp("expires_at", nullable=True),
        _timestamp("last_used_at", nullable=True),
        _timestamp("revoked_at", nullable=True),
        sa.CheckConstraint(
            "(type = 'requestSigning') = (secret_ciphertext IS NOT NULL)",
            name=op.f("ck_api_keys_ciphertext"),
        ),
        sa.CheckConstraint(
            "role IN ('browse', 'edit', 'publish', 'admin', 'owner')", name=op.f("ck_api_keys_role")
        ),
        sa.CheckConstraint(
            "type IN ('requestSigning', 'secretKey')", name=op.f("ck_api_keys_type")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_api_keys_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["api_keys.id"], name=op.f("fk_api_keys_created_by_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("public_id", name=op.f("uq_api_keys_public_id")),
        sa.UniqueConstraint("secret_digest", name=op.f("uq_api_keys_secret_digest")),
    )
    op.create_index("ix_api_keys_account_created", "api_keys", ["account_id", "created_at", "id"])
    op.create_table(
        "api_key_projects",
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_api_key_projects_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_api_key_projects_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("api_key_id", "project_id", name=op.f("pk_api_key_projects")),
    )
    op.create_index(op.f("ix_api_key_projects_project_id"), "api_key_projects", ["project_id"])


def downgrade() -> None:
    op.drop_table("api_key_projects")
    op.drop_table("api_keys")
    op.drop_table("projects")
    op.drop_table("accounts")
