"""The store on SQLite and PostgreSQL: migrations (append-only, applied from the installed package, refusing
a newer schema), WAL on SQLite, and data surviving an upgrade from an older revision."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from meshctl.control import migrate
from meshctl.control.errors import SchemaError, StoreError
from meshctl.control.records import NodeRecord
from meshctl.control.store import Store, create_engine
from meshctl.keys import MachinePrivateKey, NodePrivateKey

pytestmark = pytest.mark.integration
VERSIONS = Path(migrate.__file__).with_name("migrations") / "versions"

# Applied migrations are never edited: a changed file here means a schema change that must be a NEW revision.
APPLIED = {"0001_initial.py": "0a5d41843e15d80da1427c0c2a8c4990a6004157a78e9c0d74a97eb84ed4fd03"}


def test_applied_migrations_are_unchanged_and_form_one_chain() -> None:
    for name, digest in APPLIED.items():
        assert hashlib.sha256((VERSIONS / name).read_bytes()).hexdigest() == digest, (
            f"{name} was edited; append a new revision instead")
    cfg = Config()
    cfg.set_main_option("script_location", str(VERSIONS.parent))
    script = ScriptDirectory.from_config(cfg)
    assert len(script.get_heads()) == 1, "migrations must form a single chain"
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
    assert {f.name for f in VERSIONS.glob("*.py")} >= set(APPLIED)


def test_upgrade_from_an_older_revision_keeps_data(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(VERSIONS.parent))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")  # the oldest schema
        old = Store(engine)
        now = time.time()
        user = old.create_user("alice", now)
        rec = old.insert_node(NodeRecord(id=0, machine_key=MachinePrivateKey.generate().public_key(),
                                         node_key=NodePrivateKey.generate().public_key(), name="old", ipv4="100.64.0.1",
                                         ipv6="fd7a:115c:a1e0::1", created_at=now, user_id=user.id, authorized=True))
        status = migrate.upgrade(engine)
        assert status.is_current
        nodes = Store(engine).list_nodes()
        assert [(n.id, n.name, n.ipv4, n.node_key) for n in nodes] == [(rec.id, "old", "100.64.0.1", rec.node_key)]
    finally:
        engine.dispose()


def test_newer_schema_is_refused(db_url: str) -> None:
    store = Store.open(db_url)
    with store.engine.begin() as c:
        c.execute(sa.text("UPDATE alembic_version SET version_num = '0099_future'"))
    store.close()
    with pytest.raises(SchemaError, match="schema revision 0099_future is newer than this meshctl knows"):
        Store.open(db_url)
    engine = create_engine(db_url)
    try:
        with pytest.raises(SchemaError):
            migrate.upgrade(engine)
        with engine.connect() as c:  # untouched
            assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0099_future"
    finally:
        engine.dispose()


def test_open_without_migrating_requires_current_schema(db_url: str) -> None:
    with pytest.raises(SchemaError, match="database schema is at None, this meshctl needs 0001") as info:
        Store.open(db_url, migrate_schema=False)
    assert info.value.hint == "run: meshctl control migrate"
    Store.open(db_url).close()
    Store.open(db_url, migrate_schema=False).close()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with store.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        store.close()


def test_unreachable_database_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        Store.open("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert "cannot open database postgresql+psycopg://nobody@127.0.0.1:1/none" in str(info.value)
