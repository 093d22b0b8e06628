"""The control store: SQLAlchemy Core over SQLite (WAL, default) or PostgreSQL (`postgresql+psycopg://`).

Synchronous and small on purpose: the server calls it from its event loop (each call is one short
transaction) and keeps the node set in memory (`registry`). Invariants that must hold even across
processes live in the database: a one-off auth key is consumed by a conditional UPDATE in the same
transaction as the node insert, and UNIQUE constraints guard node keys, machine keys, names and
addresses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from ..keys import DiscoPublicKey, MachinePublicKey, NodePublicKey, generate_token, parse_token, verify_secret
from ..keys.errors import KeyFormatError
from ..wire import HostInfo
from . import migrate
from .errors import SchemaError, StoreError
from .records import ApiKeyRecord, AuthKeyRecord, NodeRecord, UserRecord
from .schema import api_keys, auth_keys, derp_tokens, nodes, users

__all__ = ["AuthKeyConsumedError", "Store", "StoreConflictError", "create_engine"]


class StoreConflictError(StoreError):
    """A uniqueness rule would be broken (name taken, key already registered, ...)."""


class AuthKeyConsumedError(StoreError):
    """A one-off auth key was already used (possibly by a concurrent registration)."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"auth key {key_id} was already used (one-off keys register a single node)")
        self.key_id = key_id


def create_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 15})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _node(row: Any) -> NodeRecord:
    return NodeRecord(
        id=row.id, machine_key=MachinePublicKey.from_text(row.machine_key),
        node_key=NodePublicKey.from_text(row.node_key), name=row.name, ipv4=row.ipv4, ipv6=row.ipv6,
        created_at=row.created_at, user_id=row.user_id,
        disco_key=DiscoPublicKey.from_text(row.disco_key) if row.disco_key else None,
        tags=tuple(json.loads(row.tags)), authorized=bool(row.authorized), ephemeral=bool(row.ephemeral),
        key_expiry=row.key_expiry, expiry_disabled=bool(row.expiry_disabled),
        hostinfo=HostInfo.from_json(json.loads(row.hostinfo)), endpoints=tuple(json.loads(row.endpoints)),
        home_derp=row.home_derp, last_seen=row.last_seen, auth_key_id=row.auth_key_id,
    )


def _node_cols(rec: NodeRecord) -> dict[str, Any]:
    return {
        "machine_key": rec.machine_key.to_text(), "node_key": rec.node_key.to_text(),
        "disco_key": None if rec.disco_key is None else rec.disco_key.to_text(), "name": rec.name,
        "user_id": rec.user_id, "tags": json.dumps(list(rec.tags)), "ipv4": rec.ipv4, "ipv6": rec.ipv6,
        "authorized": rec.authorized, "ephemeral": rec.ephemeral, "key_expiry": rec.key_expiry,
        "expiry_disabled": rec.expiry_disabled, "hostinfo": json.dumps(rec.hostinfo.to_json()),
        "endpoints": json.dumps(list(rec.endpoints)), "home_derp": rec.home_derp, "last_seen": rec.last_seen,
        "created_at": rec.created_at, "auth_key_id": rec.auth_key_id,
    }


def _auth_key(row: Any) -> AuthKeyRecord:
    return AuthKeyRecord(id=row.id, user_id=row.user_id, reusable=bool(row.reusable), ephemeral=bool(row.ephemeral),
                         tags=tuple(json.loads(row.tags)), expires_at=row.expires_at, used=bool(row.used),
                         revoked=bool(row.revoked), created_at=row.created_at, secret_hash=row.secret_hash)


def _api_key(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(id=row.id, expires_at=row.expires_at, revoked=bool(row.revoked), created_at=row.created_at,
                        last_used_at=row.last_used_at, secret_hash=row.secret_hash)


class Store:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str, *, migrate_schema: bool = True) -> Store:
        """Open the database; apply pending migrations (default) or require the schema to be current."""
        engine = create_engine(url)
        try:
            status = migrate.upgrade(engine) if migrate_schema else migrate.check_schema(engine)
        except sa.exc.OperationalError as err:
            engine.dispose()
            raise StoreError(f"cannot open database {engine.url.render_as_string(hide_password=True)}: "
                             f"{str(err.orig).strip()}") from None
        except SchemaError:
            engine.dispose()
            raise
        if not status.is_current:
            engine.dispose()
            raise SchemaError(f"database schema is at {status.current}, this meshctl needs {status.head}",
                              hint="run: meshctl control migrate")
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- users -----------------------------------------------------------------------------------
    def list_users(self) -> list[UserRecord]:
        with self.engine.connect() as c:
            return [UserRecord(r.id, r.name, r.created_at) for r in c.execute(sa.select(users).order_by(users.c.id))]

    def user_by_name(self, name: str) -> UserRecord | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(users).where(users.c.name == name)).first()
        return None if r is None else UserRecord(r.id, r.name, r.created_at)

    def create_user(self, name: str, now: float) -> UserRecord:
        try:
            with self.engine.begin() as c:
                uid = _pk(c.execute(sa.insert(users).values(name=name, created_at=now)))
        except sa.exc.IntegrityError:
            raise StoreConflictError(f"user {name!r} already exists") from None
        return UserRecord(int(uid), name, now)

    def get_or_create_user(self, name: str, now: float) -> UserRecord:
        return self.user_by_name(name) or self.create_user(name, now)

    def delete_user(self, name: str) -> None:
        with self.engine.begin() as c:
            u = c.execute(sa.select(users.c.id).where(users.c.name == name)).first()
            if u is None:
                raise StoreError(f"no user named {name!r}")
            if c.execute(sa.select(sa.func.count()).select_from(nodes).where(nodes.c.user_id == u.id)).scalar():
                raise StoreConflictError(f"user {name!r} still owns nodes; delete them first")
            c.execute(sa.delete(auth_keys).where(auth_keys.c.user_id == u.id))
            c.execute(sa.delete(users).where(users.c.id == u.id))

    # --- nodes -----------------------------------------------------------------------------------
    def list_nodes(self) -> list[NodeRecord]:
        with self.engine.connect() as c:
            return [_node(r) for r in c.execute(sa.select(nodes).order_by(nodes.c.id))]

    def _consume(self, c: sa.Connection, key_id: str | None) -> None:
        if key_id is None:
            return
        res = c.execute(sa.update(auth_keys)
                        .where(auth_keys.c.id == key_id, auth_keys.c.used.is_(False), auth_keys.c.reusable.is_(False))
                        .values(used=True))
        if res.rowcount != 1:
            raise AuthKeyConsumedError(key_id)

    def insert_node(self, rec: NodeRecord, *, consume_auth_key: str | None = None) -> NodeRecord:
        """Insert a node (rec.id ignored); consume a one-off auth key in the same transaction."""
        cols = _node_cols(rec)
        try:
            with self.engine.begin() as c:
                self._consume(c, consume_auth_key)
                new_id = _pk(c.execute(sa.insert(nodes).values(**cols)))
        except sa.exc.IntegrityError as err:
            raise StoreConflictError(f"node conflicts with an existing one: {str(err.orig).splitlines()[0]}") from None
        return _replace_id(rec, int(new_id))

    def update_node(self, rec: NodeRecord, fields: Iterable[str], *, consume_auth_key: str | None = None) -> None:
        cols = _node_cols(rec)
        values = {f: cols[f] for f in fields}
        try:
            with self.engine.begin() as c:
                self._consume(c, consume_auth_key)
                res = c.execute(sa.update(nodes).where(nodes.c.id == rec.id).values(**values))
                if res.rowcount != 1:
                    raise StoreError(f"node {rec.id} does not exist")
        except sa.exc.IntegrityError as err:
            raise StoreConflictError(f"update conflicts with another node: {str(err.orig).splitlines()[0]}") from None

    def delete_node(self, node_id: int) -> None:
        with self.engine.begin() as c:
            c.execute(sa.delete(nodes).where(nodes.c.id == node_id))

    # --- auth keys -------------------------------------------------------------------------------
    def create_auth_key(self, user_id: int, *, reusable: bool, ephemeral: bool, tags: tuple[str, ...],
                        expires_at: float, now: float) -> tuple[AuthKeyRecord, str]:
        tok = generate_token("auth")
        rec = AuthKeyRecord(id=tok.id, user_id=user_id, reusable=reusable, ephemeral=ephemeral, tags=tags,
                            expires_at=expires_at, used=False, revoked=False, created_at=now,
                            secret_hash=tok.secret_hash)
        with self.engine.begin() as c:
            c.execute(sa.insert(auth_keys).values(
                id=rec.id, secret_hash=rec.secret_hash, user_id=user_id, reusable=reusable, ephemeral=ephemeral,
                tags=json.dumps(list(tags)), expires_at=expires_at, used=False, revoked=False, created_at=now))
        return rec, tok.text

    def auth_key(self, key_id: str) -> AuthKeyRecord | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(auth_keys).where(auth_keys.c.id == key_id)).first()
        return None if r is None else _auth_key(r)

    def find_auth_key(self, text: str) -> AuthKeyRecord | None:
        """The auth key a presented token names, if its secret matches (constant-time)."""
        try:
            key_id, secret = parse_token(text, "auth")
        except KeyFormatError:
            return None
        rec = self.auth_key(key_id)
        if rec is None or not verify_secret(secret, rec.secret_hash):
            return None
        return rec

    def list_auth_keys(self) -> list[AuthKeyRecord]:
        with self.engine.connect() as c:
            return [_auth_key(r) for r in c.execute(sa.select(auth_keys).order_by(auth_keys.c.created_at))]

    def expire_auth_key(self, key_id: str, now: float) -> bool:
        with self.engine.begin() as c:
            res = c.execute(sa.update(auth_keys).where(auth_keys.c.id == key_id).values(revoked=True, expires_at=now))
        return bool(res.rowcount)

    # --- API keys --------------------------------------------------------------------------------
    def create_api_key(self, expires_at: float | None, now: float) -> tuple[ApiKeyRecord, str]:
        tok = generate_token("api")
        with self.engine.begin() as c:
            c.execute(sa.insert(api_keys).values(id=tok.id, secret_hash=tok.secret_hash, expires_at=expires_at,
                                                 revoked=False, created_at=now))
        return ApiKeyRecord(tok.id, expires_at, False, now, None, tok.secret_hash), tok.text

    def list_api_keys(self) -> list[ApiKeyRecord]:
        with self.engine.connect() as c:
            return [_api_key(r) for r in c.execute(sa.select(api_keys).order_by(api_keys.c.created_at))]

    def expire_api_key(self, key_id: str, now: float) -> bool:
        with self.engine.begin() as c:
            res = c.execute(sa.update(api_keys).where(api_keys.c.id == key_id).values(revoked=True, expires_at=now))
        return bool(res.rowcount)

    def check_api_key(self, text: str, now: float) -> ApiKeyRecord | None:
        try:
            key_id, secret = parse_token(text, "api")
        except KeyFormatError:
            return None
        with self.engine.connect() as c:
            r = c.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        if r is None or not verify_secret(secret, r.secret_hash):
            return None
        rec = _api_key(r)
        if rec.revoked or (rec.expires_at is not None and now >= rec.expires_at):
            return None
        return rec

    # --- DERP admission tokens -------------------------------------------------------------------
    def create_derp_token(self, now: float) -> str:
        tok = generate_token("derp")
        with self.engine.begin() as c:
            c.execute(sa.insert(derp_tokens).values(id=tok.id, secret_hash=tok.secret_hash, revoked=False,
                                                    created_at=now))
        return tok.text

    def check_derp_token(self, text: str) -> bool:
        try:
            key_id, secret = parse_token(text, "derp")
        except KeyFormatError:
            return False
        with self.engine.connect() as c:
            r = c.execute(sa.select(derp_tokens).where(derp_tokens.c.id == key_id)).first()
        return r is not None and not r.revoked and verify_secret(secret, r.secret_hash)

    # --- status ----------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self.engine.connect() as c:
            return {t.name: int(c.execute(sa.select(sa.func.count()).select_from(t)).scalar() or 0)
                    for t in (users, nodes, auth_keys, api_keys, derp_tokens)}


def _replace_id(rec: NodeRecord, new_id: int) -> NodeRecord:
    return replace(rec, id=new_id)


def _pk(result: sa.CursorResult[Any]) -> int:
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])
