"""Alembic migrations of the control store (append-only; never edit an applied revision)."""
