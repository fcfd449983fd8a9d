"""used signatures, and failed authentications per client address, shared by all replicas

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "used_signatures",
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("forget_at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("signature", name=op.f("pk_used_signatures")),
    )
    op.create_index("ix_used_signatures_forget_at", "used_signatures", ["forget_at"])
    op.create_table(
        "auth_failures",
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("second", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("address", "second", name=op.f("pk_auth_failures")),
    )
    op.create_index("ix_auth_failures_second", "auth_failures", ["second"])
    op.create_table(
        "auth_blocks",
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("until", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_auth_blocks")),
    )
    op.create_index("ix_auth_blocks_until", "auth_blocks", ["until"])


def downgrade() -> None:
    op.drop_table("auth_blocks")
    op.drop_table("auth_failures")
    op.drop_table("used_signatures")
