"""The control service: registration, map sessions, key lifecycle and admin operations.

All state changes go store-first (one short transaction), then into the in-memory registry, then
onto the change bus — so a refused or failed write changes nothing anyone can observe. Every method
runs on the server's event loop; `now` comes from the injected clock.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..keys import ControlPrivateKey, ControlPublicKey, NodePublicKey
from ..wire import MapRequest, WireFormatError
from .config import ControlConfig
from .errors import ControlError
from .ipam import Ipam
from .mapper import Mapper
from .messages import RegisterRequest, RegisterResponse, verify_rotation_proof
from .policy import PeerPolicy
from .records import ApiKeyRecord, AuthKeyRecord, NodeRecord, UserRecord
from .registry import Change, MapSession, Registry
from .sealing import TIME_WINDOW, OpenedRequest
from .store import AuthKeyConsumedError, Store, StoreConflictError

__all__ = ["ControlService", "ServiceError", "sanitize_name"]

log = logging.getLogger("meshctl.control")
DEFAULT_USER = "default"
#: machines that may wait for approval at once: registering without an auth key needs no secret, so without
#: a cap anyone who can reach the server could fill the store and the address pool
MAX_PENDING = 64
_TAG = re.compile(r"^tag:[a-z0-9][a-z0-9-]{0,62}$")


class ServiceError(ControlError):
    """A refused request: HTTP `status`, machine-readable `code`, and the one-line message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def sanitize_name(hostname: str) -> str:
    """A DNS label from a hostname: lower-case a-z0-9 and '-', at most 63 characters, never empty."""
    label = re.sub(r"[^a-z0-9-]+", "-", hostname.split(".")[0].lower()).strip("-")[:63].strip("-")
    return label or "node"


def check_tags(tags: Any) -> tuple[str, ...]:
    if not isinstance(tags, list | tuple) or not all(isinstance(t, str) and _TAG.match(t) for t in tags):
        raise ServiceError(400, "bad_tags", "tags must be a list of 'tag:<name>' (a-z, 0-9, '-')")
    return tuple(sorted(set(tags)))


class ControlService:
    def __init__(self, config: ControlConfig, store: Store, control_key: ControlPrivateKey, *,
                 clock: Callable[[], float] = time.time, policy: PeerPolicy | None = None,
                 max_pending: int = MAX_PENDING) -> None:
        self.config = config
        self.max_pending = max_pending
        self.store = store
        self.control_key = control_key
        self.control_public: ControlPublicKey = control_key.public_key()
        self.clock = clock
        self.registry = Registry(policy or PeerPolicy())
        self.mapper = Mapper(config, self.registry)
        self.ipam = Ipam(config.ipv4_prefix, config.ipv6_prefix)
        self.on_change: Callable[[int], None] = lambda touched: None  # metrics hook
        self.reload()

    def reload(self) -> None:
        reg = self.registry
        reg.user_names = {u.id: u.name for u in self.store.list_users()}
        for rec in self.store.list_nodes():
            reg.put(rec)
            if rec.is_expired(self.clock()):
                reg.expired_announced.add(rec.id)

    def _notify(self, node_id: int, kind: Change, *, include_self: bool = True) -> None:
        self.on_change(self.registry.notify(node_id, kind, include_self=include_self))

    def _save(self, old: NodeRecord, new: NodeRecord, kind: Change, *, consume: str | None = None) -> NodeRecord:
        fields = [f for f in ("node_key", "disco_key", "name", "user_id", "tags", "authorized", "ephemeral",
                              "key_expiry", "expiry_disabled", "hostinfo", "endpoints", "home_derp", "last_seen",
                              "auth_key_id")
                  if getattr(old, f) != getattr(new, f)]
        if not fields and consume is None:
            return old
        try:
            self.store.update_node(new, fields, consume_auth_key=consume)
        except StoreConflictError as err:
            raise ServiceError(409, "conflict", str(err)) from None
        except AuthKeyConsumedError as err:
            raise ServiceError(401, "auth_key_used", str(err)) from None
        self.registry.put(new)
        if not new.is_expired(self.clock()):
            self.registry.expired_announced.discard(new.id)
        self._notify(new.id, kind)
        return new

    def _new_expiry(self, now: float, tagged: bool) -> tuple[float | None, bool]:
        if tagged or self.config.node_key_expiry <= 0:
            return None, True
        return now + self.config.node_key_expiry, False

    # --- registration ----------------------------------------------------------------------------
    def _response(self, rec: NodeRecord, now: float) -> RegisterResponse:
        return RegisterResponse(machine_authorized=rec.authorized, node_key_expired=rec.is_expired(now),
                                node=self.mapper.wire_node(rec, now))

    def _valid_auth_key(self, text: str, now: float) -> AuthKeyRecord:
        rec = self.store.find_auth_key(text)
        if rec is None:
            raise ServiceError(401, "invalid_auth_key", "auth key is unknown or malformed")
        if rec.revoked or now >= rec.expires_at:
            raise ServiceError(401, "auth_key_expired", f"auth key {rec.id} has expired")
        if rec.used and not rec.reusable:
            raise ServiceError(401, "auth_key_used", f"auth key {rec.id} was already used (one-off)")
        return rec

    def register(self, opened: OpenedRequest) -> RegisterResponse:
        now = self.clock()
        try:
            req = RegisterRequest.from_json(opened.payload)
        except WireFormatError as err:
            raise ServiceError(400, "bad_request", str(err)) from None
        reg = self.registry
        node = reg.by_machine(opened.machine_key)
        owner = reg.by_node_key(req.node_key)
        if owner is not None and owner.machine_key != opened.machine_key:
            raise ServiceError(409, "node_key_in_use", "node key already belongs to another machine")
        if req.old_node_key is not None:
            return self._rotate(node, req, now)
        if node is not None and node.node_key == req.node_key and (
                req.auth_key is None or (node.authorized and not node.is_expired(now))):
            return self._response(node, now)  # known machine, same key: report its status, consume nothing
        if node is not None and req.auth_key is None:
            raise ServiceError(403, "node_key_changed",
                               "this machine is registered with another node key: rotate with oldNodeKey, "
                               "or re-register with an auth key")
        if req.auth_key is None:
            return self._register_pending(opened, req, now)
        key = self._valid_auth_key(req.auth_key, now)
        consume = None if key.reusable else key.id
        expiry, disabled = self._new_expiry(now, bool(key.tags))
        if node is not None:  # re-registration of a known machine: same id and addresses
            new = replace(node, node_key=req.node_key, authorized=True, user_id=key.user_id, tags=key.tags,
                          ephemeral=key.ephemeral, key_expiry=expiry, expiry_disabled=disabled,
                          hostinfo=req.hostinfo, auth_key_id=key.id)
            new = self._save(node, new, Change.CHANGED, consume=consume)
            log.info("node %d (%s) re-registered with auth key %s", new.id, new.name, key.id)
            return self._response(new, now)
        rec = self._new_node(opened, req, now, user_id=key.user_id, tags=key.tags, authorized=True,
                             ephemeral=key.ephemeral, key_expiry=expiry, expiry_disabled=disabled, auth_key_id=key.id)
        try:
            rec = self.store.insert_node(rec, consume_auth_key=consume)
        except AuthKeyConsumedError as err:
            raise ServiceError(401, "auth_key_used", str(err)) from None
        except StoreConflictError as err:
            raise ServiceError(409, "conflict", str(err)) from None
        self.registry.put(rec)
        self._notify(rec.id, Change.CHANGED)
        log.info("node %d (%s) registered with auth key %s", rec.id, rec.name, key.id)
        return self._response(rec, now)

    def _new_node(self, opened: OpenedRequest, req: RegisterRequest, now: float, **kw: Any) -> NodeRecord:
        reg = self.registry
        v4, v6 = self.ipam.allocate(reg.used4, reg.used6)
        name = reg.unique_name(sanitize_name(req.hostinfo.hostname or "node"))
        return NodeRecord(id=0, machine_key=opened.machine_key, node_key=req.node_key, name=name, ipv4=v4, ipv6=v6,
                          created_at=now, hostinfo=req.hostinfo, **kw)

    def _register_pending(self, opened: OpenedRequest, req: RegisterRequest, now: float) -> RegisterResponse:
        pending = sum(1 for n in self.registry.nodes.values() if not n.authorized)
        if pending >= self.max_pending:
            raise ServiceError(429, "too_many_pending",
                               f"{pending} machines already wait for approval: approve or delete some "
                               "(meshctl nodes list), or register with an auth key")
        rec = self._new_node(opened, req, now, authorized=False)
        try:
            rec = self.store.insert_node(rec)
        except StoreConflictError as err:
            raise ServiceError(409, "conflict", str(err)) from None
        self.registry.put(rec)
        log.info("node %d (%s) is waiting for approval", rec.id, rec.name)
        return self._response(rec, now)

    def _rotate(self, node: NodeRecord | None, req: RegisterRequest, now: float) -> RegisterResponse:
        if node is None or req.old_node_key != node.node_key:
            raise ServiceError(403, "unknown_old_node_key", "oldNodeKey is not this machine's current node key")
        if req.node_key == node.node_key:
            return self._response(node, now)
        # Rotation renews a key that is still good; an expired or unapproved node must register again with an
        # auth key, otherwise whoever holds an old (possibly stolen) node key could keep it alive forever.
        if not node.authorized:
            raise ServiceError(403, "not_authorized", "this machine is not approved yet: an admin must approve it")
        if node.is_expired(now):
            raise ServiceError(403, "node_key_expired",
                               "the node key has expired: register again with a new auth key")
        if not req.old_node_key_proof:
            raise ServiceError(403, "bad_rotation_proof", "rotation needs oldNodeKeyProof")
        problem = verify_rotation_proof(req.old_node_key_proof, node.node_key, req.node_key, self.control_key, now,
                                        TIME_WINDOW)
        if problem is not None:
            raise ServiceError(403, "bad_rotation_proof", problem)
        expiry, disabled = self._new_expiry(now, bool(node.tags))
        if node.expiry_disabled:
            expiry, disabled = None, True
        new = self._save(node, replace(node, node_key=req.node_key, key_expiry=expiry, expiry_disabled=disabled),
                         Change.CHANGED)
        log.info("node %d (%s) rotated its node key to %s", new.id, new.name, new.node_key.short())
        return self._response(new, now)

    # --- map requests ----------------------------------------------------------------------------
    def map_node(self, opened: OpenedRequest) -> tuple[NodeRecord, MapRequest]:
        """Validate a map request and apply what it reports; returns the node to stream to."""
        now = self.clock()
        try:
            req = MapRequest.from_json(opened.payload)
        except WireFormatError as err:
            raise ServiceError(400, "bad_request", str(err)) from None
        node = self.registry.by_machine(opened.machine_key)
        if node is None:
            raise ServiceError(403, "unknown_machine", "this machine is not registered: register first")
        if node.node_key != req.node_key:
            raise ServiceError(403, "unknown_node_key", "nodeKey is not this machine's current node key")
        if not node.authorized:
            raise ServiceError(403, "not_authorized", "this node is waiting for an admin to approve it")
        if node.is_expired(now):
            raise ServiceError(403, "node_key_expired", "this node's key has expired: rotate it")
        new = replace(node, endpoints=req.endpoints, home_derp=req.home_derp,
                      disco_key=req.disco_key or node.disco_key, hostinfo=req.hostinfo or node.hostinfo)
        kind = Change.CHANGED if (new.disco_key, new.hostinfo) != (node.disco_key, node.hostinfo) else Change.PATCH
        return self._save(node, new, kind), req

    def open_stream(self, node: NodeRecord, session: MapSession) -> bytes:
        """Register a stream and build its first (full) frame, with no await in between."""
        now = self.clock()
        if self.registry.open_session(session):
            self._notify(node.id, Change.PRESENCE, include_self=False)
        return self.mapper.full_frame(session, now)

    def close_stream(self, session: MapSession) -> None:
        if not self.registry.close_session(session):
            return
        node = self.registry.nodes.get(session.node_id)
        if node is None:
            return
        now = self.clock()
        self._save(node, replace(node, last_seen=now), Change.PRESENCE)

    # --- housekeeping ----------------------------------------------------------------------------
    def housekeeping(self) -> None:
        """Announce newly expired node keys; delete ephemeral nodes offline longer than the timeout."""
        now = self.clock()
        reg = self.registry
        for rec in list(reg.nodes.values()):
            if rec.is_expired(now) and rec.id not in reg.expired_announced:
                reg.expired_announced.add(rec.id)
                self._notify(rec.id, Change.CHANGED)
                reg.close_streams(rec.id)
                log.info("node %d (%s): node key expired", rec.id, rec.name)
            if rec.ephemeral and not reg.is_online(rec.id):
                since = rec.last_seen if rec.last_seen is not None else rec.created_at
                if now - since >= self.config.ephemeral_timeout:
                    log.info("ephemeral node %d (%s) offline since %.0f s: deleting", rec.id, rec.name, now - since)
                    self.delete_node(rec.id)

    # --- admin: nodes ----------------------------------------------------------------------------
    def node(self, node_id: int) -> NodeRecord:
        rec = self.registry.nodes.get(node_id)
        if rec is None:
            raise ServiceError(404, "not_found", f"no node with id {node_id}")
        return rec

    def delete_node(self, node_id: int) -> None:
        self.node(node_id)
        self.store.delete_node(node_id)
        self.registry.close_streams(node_id)
        self.registry.remove(node_id)
        self._notify(node_id, Change.CHANGED, include_self=False)

    def rename_node(self, node_id: int, name: str) -> NodeRecord:
        node = self.node(node_id)
        clean = sanitize_name(name)
        if clean != name:
            raise ServiceError(400, "bad_name", f"{name!r} is not a DNS label (want a-z, 0-9, '-', at most 63)")
        if self.registry.name_taken(name, node_id):
            raise ServiceError(409, "name_taken", f"name {name!r} is already used by another node")
        return self._save(node, replace(node, name=name), Change.CHANGED)

    def tag_node(self, node_id: int, tags: Any) -> NodeRecord:
        node = self.node(node_id)
        return self._save(node, replace(node, tags=check_tags(tags)), Change.CHANGED)

    def expire_node(self, node_id: int) -> NodeRecord:
        node = self.node(node_id)
        new = self._save(node, replace(node, key_expiry=self.clock(), expiry_disabled=False), Change.CHANGED)
        self.housekeeping()
        return new

    def set_key_expiry(self, node_id: int, disabled: bool) -> NodeRecord:
        node = self.node(node_id)
        now = self.clock()
        expiry = node.key_expiry
        if not disabled and (expiry is None or node.expiry_disabled):
            expiry = now + self.config.node_key_expiry if self.config.node_key_expiry > 0 else None
        return self._save(node, replace(node, expiry_disabled=disabled, key_expiry=expiry), Change.CHANGED)

    def approve_node(self, node_id: int, user: str | None) -> NodeRecord:
        node = self.node(node_id)
        now = self.clock()
        u = self.user(user or DEFAULT_USER, create=True)
        expiry, disabled = self._new_expiry(now, bool(node.tags))
        return self._save(node, replace(node, authorized=True, user_id=u.id, key_expiry=expiry,
                                        expiry_disabled=disabled), Change.CHANGED)

    def node_view(self, rec: NodeRecord) -> dict[str, Any]:
        now = self.clock()
        out = self.mapper.wire_node(rec, now).to_json()
        out.update(ephemeral=rec.ephemeral, keyExpiryDisabled=rec.expiry_disabled,
                   createdAt=rec.created_at)
        return out

    # --- admin: users, keys ----------------------------------------------------------------------
    def user(self, name: str, *, create: bool = False) -> UserRecord:
        u = self.store.get_or_create_user(name, self.clock()) if create else self.store.user_by_name(name)
        if u is None:
            raise ServiceError(404, "not_found", f"no user named {name!r}")
        self.registry.user_names[u.id] = u.name
        return u

    def create_user(self, name: str) -> UserRecord:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", name):
            raise ServiceError(400, "bad_name", f"{name!r} is not a user name (a-z, 0-9, '.', '_', '-')")
        try:
            u = self.store.create_user(name, self.clock())
        except StoreConflictError as err:
            raise ServiceError(409, "conflict", str(err)) from None
        self.registry.user_names[u.id] = u.name
        return u

    def delete_user(self, name: str) -> None:
        self.user(name)
        try:
            self.store.delete_user(name)
        except StoreConflictError as err:
            raise ServiceError(409, "conflict", str(err)) from None

    def create_auth_key(self, *, user: str | None, reusable: bool, ephemeral: bool, tags: Any,
                        expiry: float) -> tuple[AuthKeyRecord, str]:
        if expiry <= 0:
            raise ServiceError(400, "bad_expiry", "expiry must be a positive number of seconds")
        u = self.user(user or DEFAULT_USER, create=True)
        now = self.clock()
        return self.store.create_auth_key(u.id, reusable=reusable, ephemeral=ephemeral, tags=check_tags(tags),
                                          expires_at=now + expiry, now=now)

    def create_api_key(self, expiry: float | None) -> tuple[ApiKeyRecord, str]:
        now = self.clock()
        return self.store.create_api_key(None if expiry is None else now + expiry, now)

    def derp_allows(self, node_key_text: Any) -> bool:
        try:
            key = NodePublicKey.from_text(node_key_text)
        except (ValueError, TypeError):
            return False
        rec = self.registry.by_node_key(key)
        return rec is not None and rec.authorized and not rec.is_expired(self.clock())

    def status(self) -> dict[str, Any]:
        now = self.clock()
        nodes = list(self.registry.nodes.values())
        return {"nodes": len(nodes), "online": sum(1 for n in nodes if self.registry.is_online(n.id)),
                "pending": sum(1 for n in nodes if not n.authorized),
                "expired": sum(1 for n in nodes if n.is_expired(now)),
                "controlKey": self.control_public.to_text()}

