"""Keys on disk and registration: machine key kept, node key created once, auth key consumed once, rotation."""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from meshctl.agent import identity
from meshctl.agent.config import AgentConfig
from meshctl.agent.errors import AgentConfigError, RegistrationError
from meshctl.control.client import RegisterResult
from meshctl.control.errors import RegistrationError as ControlRegistrationError
from meshctl.keys import ControlPrivateKey, MachinePrivateKey, NodePrivateKey, NodePublicKey, load_private_key
from meshctl.wire import Node


def cfg(tmp_path: Path) -> AgentConfig:
    return AgentConfig(control_url="http://c", control_key=ControlPrivateKey.generate().public_key(),
                       state_dir=tmp_path / "state", auth_key_file=tmp_path / "authkey", hostname="h1")


def node(key: NodePublicKey) -> Node:
    return Node(id=1, name="h1", fqdn="h1.mesh.", user="u", node_key=key,
                machine_key=MachinePrivateKey.generate().public_key(), addresses=("100.64.0.1/32",),
                allowed_ips=("100.64.0.1/32",))


@dataclass
class FakeControl:
    """Records register calls; accepts a key it knows, or an auth key, or a rotation from the known key."""

    known: NodePublicKey | None = None
    refuse: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def register(self, node_key: NodePrivateKey, *, auth_key: str | None = None,
                       old_node_key: NodePrivateKey | None = None, hostinfo: Any) -> RegisterResult:
        pub = node_key.public_key()
        self.calls.append({"key": pub, "auth": auth_key, "old": old_node_key.public_key() if old_node_key else None,
                           "hostname": hostinfo.hostname})
        if self.refuse:
            raise ControlRegistrationError(self.refuse)
        if pub == self.known or auth_key == "mskey-auth-good":
            self.known = pub
            return RegisterResult(True, False, node(pub))
        if old_node_key is not None and old_node_key.public_key() == self.known:
            self.known = pub
            return RegisterResult(True, False, node(pub))
        return RegisterResult(False, False, None)


def write_auth(c: AgentConfig, text: str = "mskey-auth-good", mode: int = 0o600) -> None:
    c.auth_key_file.write_text(text + "\n")
    os.chmod(c.auth_key_file, mode)


def test_first_start_creates_keys_registers_and_consumes_the_auth_key(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    write_auth(c)
    ident = identity.load_identity(c)
    assert ident.node is None
    ctl = FakeControl()
    res = asyncio.run(identity.register(c, ident, ctl))  # type: ignore[arg-type]
    assert res.machine_authorized and ident.node is not None
    assert ctl.calls == [{"key": ident.node.public_key(), "auth": "mskey-auth-good", "old": None, "hostname": "h1"}]
    assert not c.auth_key_file.exists()
    assert stat.S_IMODE(c.node_key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(c.machine_key_path.stat().st_mode) == 0o600
    assert load_private_key(c.node_key_path, NodePrivateKey) == ident.node


def test_restart_keeps_machine_and_node_key_needs_no_auth_key_and_gets_a_new_disco_key(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    write_auth(c)
    first = identity.load_identity(c)
    ctl = FakeControl()
    asyncio.run(identity.register(c, first, ctl))  # type: ignore[arg-type]
    again = identity.load_identity(c)
    assert again.machine == first.machine and again.node == first.node
    assert again.disco.public_key() != first.disco.public_key()
    asyncio.run(identity.register(c, again, ctl))  # type: ignore[arg-type]
    assert ctl.calls[-1]["auth"] is None and ctl.calls[-1]["key"] == first.node.public_key()  # type: ignore[union-attr]


def test_unregistered_node_without_auth_key_says_what_to_do(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    with pytest.raises(RegistrationError, match=r"not registered and .*authkey does not exist") as err:
        asyncio.run(identity.register(c, identity.load_identity(c), FakeControl()))  # type: ignore[arg-type]
    assert err.value.hint and "auth key" in err.value.hint


def test_readable_auth_key_file_is_refused(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    write_auth(c, mode=0o644)
    with pytest.raises(AgentConfigError, match=r"readable by others \(mode 0644\)"):
        asyncio.run(identity.register(c, identity.load_identity(c), FakeControl()))  # type: ignore[arg-type]
    assert c.auth_key_file.exists()


def test_refused_registration_keeps_the_auth_key_file(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    write_auth(c, "mskey-auth-bad")
    with pytest.raises(RegistrationError, match="did not authorize"):
        asyncio.run(identity.register(c, identity.load_identity(c), FakeControl()))  # type: ignore[arg-type]
    assert c.auth_key_file.exists()
    with pytest.raises(ControlRegistrationError):
        asyncio.run(identity.register(c, identity.load_identity(c), FakeControl(refuse="auth key expired")))  # type: ignore[arg-type]
    assert c.auth_key_file.exists()


def test_rotation_proves_the_old_key_and_replaces_it_on_disk(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    write_auth(c)
    ident = identity.load_identity(c)
    ctl = FakeControl()
    asyncio.run(identity.register(c, ident, ctl))  # type: ignore[arg-type]
    old = ident.node
    assert old is not None
    asyncio.run(identity.rotate(c, ident, ctl))  # type: ignore[arg-type]
    assert ident.node is not None and ident.node != old
    assert ctl.calls[-1]["old"] == old.public_key() and ctl.calls[-1]["key"] == ident.node.public_key()
    assert load_private_key(c.node_key_path, NodePrivateKey) == ident.node
    assert not (c.state_dir / "node.key.next").exists()


def test_refused_rotation_keeps_the_current_key(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    write_auth(c)
    ident = identity.load_identity(c)
    asyncio.run(identity.register(c, ident, FakeControl()))  # type: ignore[arg-type]
    current = ident.node
    with pytest.raises(ControlRegistrationError):
        asyncio.run(identity.rotate(c, ident, FakeControl(refuse="bad proof")))  # type: ignore[arg-type]
    assert ident.node == current
    assert load_private_key(c.node_key_path, NodePrivateKey) == current
    assert not (c.state_dir / "node.key.next").exists()


def test_rotation_interrupted_after_the_server_accepted_is_completed_at_start(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    write_auth(c)
    ident = identity.load_identity(c)
    ctl = FakeControl()
    asyncio.run(identity.register(c, ident, ctl))  # type: ignore[arg-type]
    # crash between "server accepted the next key" and "node.key replaced"
    nxt = NodePrivateKey.generate()
    from meshctl.keys import write_private_key

    write_private_key(c.state_dir / "node.key.next", nxt)
    ctl.known = nxt.public_key()
    again = identity.load_identity(c)
    asyncio.run(identity.register(c, again, ctl))  # type: ignore[arg-type]
    assert again.node == nxt
    assert load_private_key(c.node_key_path, NodePrivateKey) == nxt
    assert not (c.state_dir / "node.key.next").exists()


@pytest.mark.parametrize(("expiry_in", "due"), [
    (None, False), (timedelta(days=30), False), (timedelta(days=1, seconds=1), False),
    (timedelta(hours=23), True), (timedelta(0), True), (-timedelta(hours=1), True),
])
def test_rotation_is_due_a_day_before_expiry(expiry_in: timedelta | None, due: bool) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert identity.rotation_due(None if expiry_in is None else now + expiry_in, now, timedelta(days=1)) is due


def test_auth_key_in_a_read_only_place_does_not_stop_registration(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    write_auth(c)

    def read_only(path: Path) -> None:  # like a systemd credential under /run/credentials
        raise PermissionError(13, "Read-only file system", str(path))

    ident = identity.load_identity(c)
    res = asyncio.run(identity.register(c, ident, FakeControl(), discard=read_only))  # type: ignore[arg-type]
    assert res.machine_authorized and c.auth_key_file.exists()
    # the restart uses node.key and never needs (or re-sends) the spent auth key
    ctl = FakeControl(known=ident.node.public_key() if ident.node else None)
    asyncio.run(identity.register(c, identity.load_identity(c), ctl))  # type: ignore[arg-type]
    assert ctl.calls[-1]["auth"] is None
