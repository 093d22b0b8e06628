"""Control config TOML: defaults, every key, DERP regions into the DERP map, and clear errors."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from meshctl.control.config import ControlConfig, load_config, parse_listen
from meshctl.control.messages import RegisterRequest, make_rotation_proof, verify_rotation_proof
from meshctl.errors import ConfigError
from meshctl.keys import ControlPrivateKey, NodePrivateKey
from meshctl.wire import HostInfo


def test_defaults() -> None:
    cfg = load_config(None)
    assert cfg.listen == "0.0.0.0:8080" and cfg.state_dir == Path("/var/lib/meshctl/control")
    assert cfg.db_url == "sqlite:////var/lib/meshctl/control/control.db"
    assert cfg.node_key_expiry == 180 * 86400 and cfg.ephemeral_timeout == 300


def test_full_file(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("""
listen = "127.0.0.1:9000"
state_dir = "/tmp/st"
db = "postgresql+psycopg://u@h/db"
domain = "corp.mesh"
ipv4_prefix = "100.96.0.0/12"
ipv6_prefix = "fd7a:115c:a1e0:ab::/64"
node_key_expiry = "90d"
ephemeral_timeout = "10m"
tls_cert = "/etc/c.pem"
tls_key = "/etc/k.pem"
[[derp.regions]]
id = 901
code = "fra"
name = "Frankfurt"
[[derp.regions.nodes]]
name = "901a"
host_name = "derp1.corp"
ipv4 = "198.51.100.1"
derp_port = 8443
stun_port = 3478
plain_http = true
""")
    cfg = load_config(p)
    assert cfg.db_url == "postgresql+psycopg://u@h/db" and cfg.domain == "corp.mesh"
    assert cfg.ipv4_prefix == ipaddress.IPv4Network("100.96.0.0/12")
    assert cfg.node_key_expiry == 90 * 86400 and cfg.ephemeral_timeout == 600
    node = cfg.derp_map.regions[901].nodes[0]
    assert node.plain_http and node.derp_url() == "http://derp1.corp:8443/derp" and node.ipv4 == "198.51.100.1"
    over = cfg.with_overrides(listen="127.0.0.1:1", db=None, state_dir="/x")
    assert over.listen == "127.0.0.1:1" and over.db == cfg.db and over.state_dir == Path("/x")


@pytest.mark.parametrize(("text", "message"), [
    ("bogus = 1", "unknown keys ['bogus']"),
    ('listen = "nope"', "listen: want HOST:PORT"),
    ('node_key_expiry = "soon"', "cannot read 'soon' as a duration"),
    ('ipv4_prefix = "100.64.0.1/10"', "bad prefix"),
    ('tls_cert = "/c"', "tls_cert and tls_key must be given together"),
    ("[[derp.regions]]\nid = 1", "id must be in 900-999"),
    ("[[derp.regions]]\nid = 900\n[[derp.regions.nodes]]\nname = 'a'", "host_name (or ipv4) is required"),
    ("domain = 5", "domain must be a string"),
    ("listen = [", "cannot read config"),
])
def test_bad_config(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert message in str(info.value) and str(p) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_parse_listen() -> None:
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    assert ControlConfig().with_overrides(tls_cert="/a").tls_cert == Path("/a")


def test_rotation_proof() -> None:
    ctrl = ControlPrivateKey.generate()
    old, new = NodePrivateKey.generate(), NodePrivateKey.generate()
    proof = make_rotation_proof(old, new.public_key(), ctrl.public_key(), 1000.0)
    assert verify_rotation_proof(proof, old.public_key(), new.public_key(), ctrl, 1000.0, 120) is None
    assert "different new node key" in str(verify_rotation_proof(proof, old.public_key(),
                                                                 NodePrivateKey.generate().public_key(), ctrl, 1000, 120))
    assert "not proven" in str(verify_rotation_proof(proof, NodePrivateKey.generate().public_key(), new.public_key(),
                                                     ctrl, 1000, 120))
    assert "stale" in str(verify_rotation_proof(proof, old.public_key(), new.public_key(), ctrl, 2000, 120))
    assert "not proven" in str(verify_rotation_proof("zz", old.public_key(), new.public_key(), ctrl, 1000, 120))


def test_register_request_repr_hides_auth_key() -> None:
    req = RegisterRequest(node_key=NodePrivateKey.generate().public_key(), hostinfo=HostInfo(),
                          auth_key="mskey-auth-abc-secret")
    assert "secret" not in repr(req)
    assert RegisterRequest.from_json(req.to_json()) == req
