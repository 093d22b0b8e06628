"""The control server's tables (SQLAlchemy Core). Changes only by appending an Alembic migration.

Times are unix seconds (floats) so SQLite and PostgreSQL behave the same; JSON-ish columns
(tags, hostinfo, endpoints) are TEXT holding JSON. Tokens are stored as id + SHA-256 of the secret.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["api_keys", "auth_keys", "derp_tokens", "metadata", "nodes", "users"]

metadata = sa.MetaData()

users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

auth_keys = sa.Table(
    "auth_keys", metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("reusable", sa.Boolean, nullable=False, default=False),
    sa.Column("ephemeral", sa.Boolean, nullable=False, default=False),
    sa.Column("tags", sa.Text, nullable=False, default="[]"),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used", sa.Boolean, nullable=False, default=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

nodes = sa.Table(
    "nodes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("machine_key", sa.String(80), nullable=False, unique=True),
    sa.Column("node_key", sa.String(80), nullable=False, unique=True),
    sa.Column("disco_key", sa.String(80), nullable=True),
    sa.Column("name", sa.String(63), nullable=False, unique=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="RESTRICT"), nullable=True),
    sa.Column("tags", sa.Text, nullable=False, default="[]"),
    sa.Column("ipv4", sa.String(45), nullable=False, unique=True),
    sa.Column("ipv6", sa.String(45), nullable=False, unique=True),
    sa.Column("authorized", sa.Boolean, nullable=False, default=False),
    sa.Column("ephemeral", sa.Boolean, nullable=False, default=False),
    sa.Column("key_expiry", sa.Float, nullable=True),
    sa.Column("expiry_disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("hostinfo", sa.Text, nullable=False, default="{}"),
    sa.Column("endpoints", sa.Text, nullable=False, default="[]"),
    sa.Column("home_derp", sa.Integer, nullable=False, default=0),
    sa.Column("last_seen", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("auth_key_id", sa.String(12), nullable=True),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_used_at", sa.Float, nullable=True),
)

derp_tokens = sa.Table(
    "derp_tokens", metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
