"""Initial schema: users, auth keys, nodes, API keys, DERP tokens.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "auth_keys",
        sa.Column("id", sa.String(12), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("reusable", sa.Boolean, nullable=False),
        sa.Column("ephemeral", sa.Boolean, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used", sa.Boolean, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("machine_key", sa.String(80), nullable=False, unique=True),
        sa.Column("node_key", sa.String(80), nullable=False, unique=True),
        sa.Column("disco_key", sa.String(80), nullable=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="RESTRICT"), nullable=True),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("ipv4", sa.String(45), nullable=False, unique=True),
        sa.Column("ipv6", sa.String(45), nullable=False, unique=True),
        sa.Column("authorized", sa.Boolean, nullable=False),
        sa.Column("ephemeral", sa.Boolean, nullable=False),
        sa.Column("key_expiry", sa.Float, nullable=True),
        sa.Column("expiry_disabled", sa.Boolean, nullable=False),
        sa.Column("hostinfo", sa.Text, nullable=False),
        sa.Column("endpoints", sa.Text, nullable=False),
        sa.Column("home_derp", sa.Integer, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("auth_key_id", sa.String(12), nullable=True),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(12), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float, nullable=True),
    )
    op.create_table(
        "derp_tokens",
        sa.Column("id", sa.String(12), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("derp_tokens", "api_keys", "nodes", "auth_keys", "users"):
        op.drop_table(table)
