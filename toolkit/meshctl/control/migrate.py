"""Schema migrations: apply Alembic revisions shipped inside the package and compare with the database.

Works from an installed wheel: the script location is this package's `migrations/` directory, and
the connection is handed to env.py through `config.attributes` (no alembic.ini needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from .errors import SchemaError

__all__ = ["SchemaStatus", "check_schema", "schema_status", "upgrade"]

_SCRIPTS = Path(__file__).with_name("migrations")


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    current: str | None
    head: str
    known: bool  # the current revision is one this meshctl ships

    @property
    def is_current(self) -> bool:
        return self.current == self.head


def schema_status(engine: sa.Engine) -> SchemaStatus:
    script = ScriptDirectory.from_config(_config())
    head = script.get_current_head()
    assert head is not None
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    known = current is None or any(rev.revision == current for rev in script.walk_revisions())
    return SchemaStatus(current, head, known)


def check_schema(engine: sa.Engine) -> SchemaStatus:
    """Raise SchemaError if the database was migrated by a newer meshctl than this one."""
    status = schema_status(engine)
    if not status.known:
        raise SchemaError(
            f"database schema revision {status.current} is newer than this meshctl knows (head {status.head})",
            hint="upgrade meshctl on this host; never run an older control server on a newer database",
        )
    return status


def upgrade(engine: sa.Engine) -> SchemaStatus:
    """Apply every pending migration (refusing a database newer than this code)."""
    check_schema(engine)
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return schema_status(engine)
