"""Bootstrap operations run on the control host against the store directly (no API key needed yet).

These back `meshctl control admin-key|authkey|derp-token|migrate|status`; the deploy tooling runs
them over SSH. Each new secret is returned once and stored only as a hash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MeshctlError
from . import migrate
from .config import ControlConfig
from .errors import SchemaError
from .server import read_control_pub
from .service import DEFAULT_USER, check_tags
from .store import Store, create_engine

__all__ = ["LocalStatus", "create_admin_key", "create_auth_key", "create_derp_token", "local_status", "run_migrate"]


def _store(cfg: ControlConfig) -> Store:
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Store.open(cfg.db_url)


def create_admin_key(cfg: ControlConfig, expiry: float | None = None) -> str:
    store = _store(cfg)
    try:
        now = time.time()
        return store.create_api_key(None if expiry is None else now + expiry, now)[1]
    finally:
        store.close()


def create_auth_key(cfg: ControlConfig, *, reusable: bool, ephemeral: bool, tags: list[str], expiry: float,
                    user: str = DEFAULT_USER) -> dict[str, Any]:
    try:
        clean = check_tags(tags)
    except MeshctlError as err:
        raise MeshctlError(str(err)) from None
    store = _store(cfg)
    try:
        now = time.time()
        u = store.get_or_create_user(user, now)
        rec, text = store.create_auth_key(u.id, reusable=reusable, ephemeral=ephemeral, tags=clean,
                                          expires_at=now + expiry, now=now)
        return {"key": text, "id": rec.id, "user": user, "reusable": reusable, "ephemeral": ephemeral,
                "tags": list(clean), "expiresAt": rec.expires_at}
    finally:
        store.close()


def create_derp_token(cfg: ControlConfig) -> str:
    store = _store(cfg)
    try:
        return store.create_derp_token(time.time())
    finally:
        store.close()


def run_migrate(cfg: ControlConfig, *, check: bool) -> migrate.SchemaStatus:
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = create_engine(cfg.db_url)
    try:
        if check:
            status = migrate.check_schema(engine)
            if not status.is_current:
                raise SchemaError(f"database schema is at {status.current or 'nothing'}, head is {status.head}",
                                  hint="run: meshctl control migrate")
            return status
        return migrate.upgrade(engine)
    finally:
        engine.dispose()


@dataclass(frozen=True, slots=True)
class LocalStatus:
    revision: str | None
    head: str
    nodes: int
    expired_listed: int
    pending: int
    control_key: str | None

    def to_json(self) -> dict[str, Any]:
        return {"schemaRevision": self.revision, "schemaHead": self.head, "schemaCurrent": self.revision == self.head,
                "nodes": self.nodes, "expiredButListed": self.expired_listed, "pending": self.pending,
                "controlKey": self.control_key}


def local_status(cfg: ControlConfig) -> LocalStatus:
    engine = create_engine(cfg.db_url)
    try:
        schema = migrate.check_schema(engine)
        nodes, expired, pending = 0, 0, 0
        if schema.current is not None:
            store = Store(engine)
            now = time.time()
            for n in store.list_nodes():
                nodes += 1
                expired += n.is_expired(now)
                pending += not n.authorized
    finally:
        engine.dispose()
    pub: Path = cfg.state_dir / "control.pub"
    return LocalStatus(schema.current, schema.head, nodes, expired, pending,
                       read_control_pub(cfg.state_dir).to_text() if pub.exists() else None)
