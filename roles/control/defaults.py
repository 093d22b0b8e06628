"""Defaults of the `control` role (inventory data overrides them)."""

from __future__ import annotations

DEFAULTS = {
    "control_listen": "0.0.0.0:8080",
    "control_state_dir": "/var/lib/meshctl/control",
    # SQLite under the state dir; a postgresql+psycopg:// URL for larger deployments
    "control_db": "sqlite:////var/lib/meshctl/control/control.db",
}
