"""Relay configuration: defaults, TOML file, flag overrides winning, and one-line errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.derp.config import DEFAULT_KEY_FILE, RelayConfig, load_config, parse_hostport
from meshctl.errors import ConfigError


def test_defaults() -> None:
    cfg = load_config()
    assert cfg == RelayConfig()
    assert (cfg.listen, cfg.stun_listen, cfg.key_file) == ("0.0.0.0:443", "0.0.0.0:3478", DEFAULT_KEY_FILE)
    assert cfg.verify_fail_open is False


def test_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "derp.toml"
    path.write_text('listen = "0.0.0.0:8443"\nstun_listen = "0.0.0.0:3478"\nkey_file = "/tmp/k"\nregion_id = 901\n'
                    'verify_url = "http://c:8080/derp/verify"\nverify_token_file = "/etc/meshctl/derp-token"\n'
                    'verify_fail_open = true\nmesh_with = ["http://a:8443/derp", "http://b:8443/derp"]\n'
                    'mesh_key_file = "/etc/meshctl/derp-mesh.key"\n')
    cfg = load_config(path, {"listen": "127.0.0.1:9443", "verify_fail_open": False, "region_id": None})
    assert cfg.listen == "127.0.0.1:9443"          # flag wins
    assert cfg.verify_fail_open is False           # an explicit --verify-fail-closed wins too
    assert cfg.region_id == 901                    # None means "flag not given"
    assert cfg.mesh_with == ("http://a:8443/derp", "http://b:8443/derp")
    assert cfg.key_file == Path("/tmp/k") and cfg.mesh_key_file == Path("/etc/meshctl/derp-mesh.key")


def test_mesh_with_from_the_command_line_is_comma_separated() -> None:
    cfg = load_config(None, {"mesh_with": "http://a/derp, http://b/derp", "mesh_key_file": "/k"})
    assert cfg.mesh_with == ("http://a/derp", "http://b/derp")


@pytest.mark.parametrize(("text", "message"), [
    ("listen = 443\n", "listen must be a string, got int"),
    ("region_id = 0\n", "region_id must be between 1 and 2^53-1, got 0"),
    ('region_id = "900"\n', "region_id must be an integer"),
    ('verify_fail_open = "yes"\n', "verify_fail_open must be true or false"),
    ("mesh_with = [1]\n", "mesh_with must be a list of URLs"),
    ('verify_url = "ftp://x"\nverify_token_file = "/t"\n', "verify_url must be an http(s) URL, got 'ftp://x'"),
    ("listen = \n", "is not valid TOML"),
    ('stun_listen = "localhost"\n', "stun_listen: want HOST:PORT, got 'localhost'"),
])
def test_bad_values(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "derp.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert message in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_empty_stun_listen_disables_stun() -> None:
    assert load_config(None, {"stun_listen": ""}).stun_listen == ""


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.1:8443", ("127.0.0.1", 8443)),
    ("[::1]:3478", ("::1", 3478)),
    (":443", ("0.0.0.0", 443)),
])
def test_parse_hostport(text: str, want: tuple[str, int]) -> None:
    assert parse_hostport(text) == want
