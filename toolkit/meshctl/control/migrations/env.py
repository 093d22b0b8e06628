"""Alembic environment: runs on the connection `meshctl.control.migrate` passes in `config.attributes`."""

from __future__ import annotations

from alembic import context

from meshctl.control.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via `alembic` CLI with a URL
    raise RuntimeError("run migrations through `meshctl control migrate`")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
