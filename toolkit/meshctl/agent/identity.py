"""The node's keys on disk and its registration with the control server.

- machine key: `state_dir/machine.key`, created on first start and kept for the machine's life;
- node key (= WireGuard key): `state_dir/node.key`, created at first registration, replaced by rotation
  (the next key is written to `node.key.next` first, so a crash mid-rotation loses nothing);
- disco key: in memory, new at every start;
- auth key: read from `auth_key_file` only when the node is not registered yet, deleted after the
  control server accepted it, never needed again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from .. import __version__
from ..control.client import ControlClient, ControlHTTPError, RegisterResult
from ..keys import (
    DiscoPrivateKey,
    MachinePrivateKey,
    NodePrivateKey,
    ensure_private_dir,
    load_or_create_private_key,
    load_private_key,
    write_private_key,
)
from ..wire import HostInfo
from .config import AgentConfig
from .errors import AgentConfigError, RegistrationError

__all__ = ["Identity", "hostinfo", "load_identity", "register", "rotate", "rotation_due"]

log = logging.getLogger(__name__)


@dataclass
class Identity:
    machine: MachinePrivateKey
    node: NodePrivateKey | None
    disco: DiscoPrivateKey


def load_identity(cfg: AgentConfig) -> Identity:
    ensure_private_dir(cfg.state_dir)
    machine, created = load_or_create_private_key(cfg.machine_key_path, MachinePrivateKey)
    if created:
        log.info("identity: created machine key %s", machine.public_key().short())
    node = load_private_key(cfg.node_key_path, NodePrivateKey) if cfg.node_key_path.exists() else None
    return Identity(machine, node, DiscoPrivateKey.generate())


def hostinfo(cfg: AgentConfig) -> HostInfo:
    keys: list[str] = []
    for p in sorted(Path("/etc/ssh").glob("ssh_host_*_key.pub")) if Path("/etc/ssh").is_dir() else []:
        try:
            keys.append(p.read_text().strip())
        except OSError:
            continue
    return HostInfo(hostname=cfg.effective_hostname(), os=os.uname().sysname.lower(),
                    os_version=os.uname().release, agent_version=__version__, ssh_host_keys=tuple(keys))


def rotation_due(key_expiry: datetime | None, now: datetime, margin: timedelta) -> bool:
    """Whether the node key should be rotated now: it expires within `margin` (or already has).
    A node whose expiry is disabled (None) never rotates on its own."""
    return key_expiry is not None and key_expiry - now < margin


def _read_auth_key(cfg: AgentConfig) -> str | None:
    path = cfg.auth_key_file
    if not path.exists():
        return None
    st = path.stat()
    if st.st_mode & 0o077:
        raise AgentConfigError(f"auth key file is readable by others (mode {st.st_mode & 0o777:04o})",
                               path=str(path), hint=f"chmod 600 {path}")
    return path.read_text().strip() or None


def _delete(path: Path) -> None:
    path.unlink(missing_ok=True)


async def register(cfg: AgentConfig, ident: Identity, client: ControlClient, *,
                   discard: Callable[[Path], None] = _delete) -> RegisterResult:
    """Register (or confirm) this node; on first registration consume the auth key file (`discard`)."""
    info = hostinfo(cfg)
    next_path = cfg.node_key_path.with_name("node.key.next")
    if next_path.exists():
        # a rotation was interrupted: the server holds either the old key or the next one
        nxt = load_private_key(next_path, NodePrivateKey)
        try:
            res = await client.register(nxt, hostinfo=info)
            if res.machine_authorized and res.node is not None and res.node.node_key == nxt.public_key():
                next_path.replace(cfg.node_key_path)
                ident.node = nxt
                return res
        except ControlHTTPError as err:  # refused: the server holds the old key (unreachable: retry later)
            log.warning("identity: interrupted rotation not accepted (%s); keeping the old key", err)
        next_path.unlink(missing_ok=True)
    expired = False
    if ident.node is not None:
        res = await client.register(ident.node, hostinfo=info)
        if res.machine_authorized and not res.node_key_expired:
            return res
        expired = res.node_key_expired
    auth_key = _read_auth_key(cfg)
    if expired and auth_key is None:
        # An expired key cannot renew itself (the server refuses rotation then): a new auth key is needed.
        raise RegistrationError(f"this node's key has expired and {cfg.auth_key_file} does not exist",
                                hint="put a new one-off auth key there (meshctl deploy mints one for such nodes)")
    if ident.node is None or expired:
        if auth_key is None:
            raise RegistrationError(f"this node is not registered and {cfg.auth_key_file} does not exist",
                                    hint="mint a one-off auth key (meshctl control authkey) into that file")
        candidate = NodePrivateKey.generate()
    else:
        candidate = ident.node
    res = await client.register(candidate, auth_key=auth_key, hostinfo=info)
    if not res.machine_authorized:
        raise RegistrationError("control server did not authorize this machine (pending approval?)",
                                hint="approve it with meshctl nodes approve, or use a valid auth key")
    if candidate is not ident.node:
        # node.key is written only once the server accepted it: its presence means "registered"
        # (the deploy relies on that to decide whether a node needs an auth key)
        write_private_key(cfg.node_key_path, candidate)
        ident.node = candidate
    if auth_key is not None:
        try:
            discard(cfg.auth_key_file)
            log.info("identity: registered as %s; auth key file consumed", res.node.name if res.node else "?")
        except OSError as err:
            # e.g. a read-only systemd credential: the key is spent at the server anyway, and a restart
            # never reads it again because node.key now exists
            log.warning("identity: registered, but could not delete %s (%s)", cfg.auth_key_file, err.strerror)
    return res


async def rotate(cfg: AgentConfig, ident: Identity, client: ControlClient) -> RegisterResult:
    """A new node key, registered with proof of the current one; returns after the server accepted it."""
    old = ident.node
    if old is None:
        raise RegistrationError("cannot rotate: this node has no node key yet")
    new = NodePrivateKey.generate()
    next_path = cfg.node_key_path.with_name("node.key.next")
    write_private_key(next_path, new)
    try:
        res = await client.register(new, old_node_key=old, hostinfo=hostinfo(cfg))
    except ControlHTTPError:
        next_path.unlink(missing_ok=True)  # a definite refusal: the server kept the old key
        raise
    # Any other failure (connection lost, cancelled) leaves it unknown whether the server switched keys:
    # node.key.next stays, and the next register() asks the server which of the two keys it holds.
    if not res.machine_authorized:
        next_path.unlink(missing_ok=True)
        raise RegistrationError("control server refused the rotated node key")
    next_path.replace(cfg.node_key_path)
    ident.node = new
    log.info("identity: node key rotated %s -> %s", old.public_key().short(), new.public_key().short())
    return res


