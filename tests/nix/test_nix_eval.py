"""nix/module.nix evaluated with nixpkgs' lib.evalModules (tests/nix/harness.nix stubs the NixOS options it sets).

Needs NIXPKGS_LIB (a nixpkgs lib/ directory); skipped with that reason without it. Checks what a NixOS
user relies on: the rendered units (ExecStart, credentials, capabilities, hardening), firewall ports,
config files, and that bad configurations fail with a readable message — a secret given as a Nix path
literal or a store path above all, since it would end up world-readable in /nix/store.
"""

from __future__ import annotations

import datetime
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from .nixtool import HARNESS, REPO, Nix, NixError, NixPath, harness_expr, nix_path, render_unit, to_nix, write_toml

PKG = "/nix/store/0000000000000000000000000000000a-meshctl"
MESHCTL = f"{PKG}/bin/meshctl"
CTRLKEY = "ctrlkey:" + "ab" * 32
NODE = {"enable": True, "controlUrl": "https://control.example.com", "controlKey": CTRLKEY}


class Harness:
    def __init__(self, nix: Nix, lib: Path) -> None:
        self.nix = nix
        self.lib = lib

    def eval(self, module: dict[str, Any], select: str = "", entry: str = "eval") -> Any:
        return self.nix.eval(harness_expr(self.lib, entry, module, select))

    def failed(self, module: dict[str, Any]) -> list[str]:
        """Messages of the assertions that fail for `module`."""
        return list(self.eval(module, ".assertions"))

    def error(self, module: dict[str, Any], select: str = "") -> str:
        """Nix's error message for a module that must not evaluate."""
        with pytest.raises(NixError) as info:
            self.eval(module, select)
        return " ".join(info.value.stderr.split())

    def attr(self, expr: str) -> Any:
        """`expr` evaluated on the harness set, e.g. `vmNode "node1"`."""
        return self.nix.eval(f"(import {nix_path(HARNESS)} {{ libPath = {nix_path(self.lib)}; }}).{expr}")

    @property
    def has_external_path(self) -> bool:
        """Whether this lib has types.externalPath (else the module falls back to str + assertion)."""
        return bool(self.attr("hasExternalPath"))


@pytest.fixture(scope="module")
def h(nix: Nix, nixpkgs_lib: Path) -> Harness:
    return Harness(nix, nixpkgs_lib)


def argv(exec_start: str) -> list[str]:
    return shlex.split(exec_start)


# ---------------------------------------------------------------- nothing enabled


def test_nix_module_inert_when_nothing_enabled(h: Harness) -> None:
    out = h.eval({})
    assert out["services"] == {}
    assert out["timers"] == {}
    assert out["firewall"] == {"allowedTCPPorts": [], "allowedUDPPorts": [], "trustedInterfaces": []}
    assert out["systemPackages"] == []
    assert out["etc"] == {}
    assert out["assertions"] == []


# ---------------------------------------------------------------- node


def test_nix_node_unit_config_and_credentials(h: Harness) -> None:
    out = h.eval({"services.meshctl.node": {**NODE, "authKeyFile": "/run/secrets/meshctl-authkey"}})
    assert out["assertions"] == []
    unit = out["services"]["meshctl-agent"]
    sc = unit["serviceConfig"]
    conf = out["etc"]["meshctl/agent.toml"]
    assert argv(sc["ExecStart"]) == [MESHCTL, "agent", "run", "--config", conf["path"]]
    # The secret is passed by systemd at run time; the config names the credentials copy, not the source.
    assert sc["LoadCredential"] == ["authkey:/run/secrets/meshctl-authkey"]
    assert conf["settings"] == {
        "control_url": "https://control.example.com",
        "control_key": CTRLKEY,
        "state_dir": "/var/lib/meshctl/agent",
        "auth_key_file": "/run/credentials/meshctl-agent.service/authkey",
        "interface": "mesh0",
        "port": 41641,
        "backend": "auto",
    }
    assert sorted(sc["CapabilityBoundingSet"]) == ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
    assert sorted(sc["AmbientCapabilities"]) == ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
    assert sc["DeviceAllow"] == ["/dev/net/tun rw"] and sc["DevicePolicy"] == "closed"
    assert "AF_NETLINK" in sc["RestrictAddressFamilies"]
    assert sc["StateDirectory"] == "meshctl/agent" and sc["StateDirectoryMode"] == "0700"
    assert "meshctl" in sc["RuntimeDirectory"]  # /run/meshctl/agent.sock
    assert sc["ProtectSystem"] == "strict" and sc["NoNewPrivileges"] is True and sc["ProtectHome"] is True
    tools = {p.split("-", 1)[1] for p in unit["path"]}
    assert {"wireguard-tools", "wireguard-go", "iproute2", "nftables"} <= tools, tools
    assert unit["wantedBy"] == ["multi-user.target"]
    # Closed by default: no ports, interface not trusted.
    assert out["firewall"] == {"allowedTCPPorts": [], "allowedUDPPorts": [], "trustedInterfaces": []}
    assert out["systemPackages"] == ["meshctl"]


def test_nix_node_without_auth_key_has_no_credential(h: Harness) -> None:
    out = h.eval({"services.meshctl.node": NODE})
    sc = out["services"]["meshctl-agent"]["serviceConfig"]
    assert sc["LoadCredential"] == []
    assert "auth_key_file" not in out["etc"]["meshctl/agent.toml"]["settings"]


def test_nix_node_firewall_interface_and_extra_args(h: Harness) -> None:
    out = h.eval({"services.meshctl.node": {
        **NODE, "openFirewall": True, "trustInterface": True, "interfaceName": "wgmesh", "port": 51000,
        "backend": "userspace", "extraArgs": ["--log-level", "debug 100%", "$HOME"],
    }})
    assert out["firewall"]["allowedUDPPorts"] == [51000, 51001]  # WireGuard, then the disco/STUN socket
    assert out["firewall"]["trustedInterfaces"] == ["wgmesh"]
    settings = out["etc"]["meshctl/agent.toml"]["settings"]
    assert (settings["interface"], settings["port"], settings["backend"]) == ("wgmesh", 51000, "userspace")
    exec_start = out["services"]["meshctl-agent"]["serviceConfig"]["ExecStart"]
    # systemd would expand % and $: user values reach the program literally.
    assert exec_start.endswith(' --log-level "debug 100%%" "$$HOME"')


def test_nix_node_requires_control_url_and_key(h: Harness) -> None:
    failed = h.failed({"services.meshctl.node.enable": True})
    assert any("services.meshctl.node.enable is set but controlUrl is not" in m for m in failed), failed
    assert any("services.meshctl.node.enable is set but controlKey is not" in m and "ctrlkey:" in m
               for m in failed), failed
    assert len(failed) == 2


def test_nix_node_control_url_scheme_checked(h: Harness) -> None:
    failed = h.failed({"services.meshctl.node": {**NODE, "controlUrl": "control.example.com:8080"}})
    assert failed == ['services.meshctl.node.controlUrl = "control.example.com:8080": want an http:// or '
                      "https:// URL."]


def test_nix_node_control_key_must_be_a_ctrlkey(h: Harness) -> None:
    err = h.error({"services.meshctl.node": {**NODE, "controlKey": "nodekey:" + "ab" * 32}})
    assert "services.meshctl.node.controlKey" in err and "is not of type" in err


def test_nix_secret_path_literal_rejected(h: Harness) -> None:
    # `./authkey` would be copied into the world-readable store: a type error, whatever lib version.
    err = h.error({"services.meshctl.node": {**NODE, "authKeyFile": NixPath("./authkey")}})
    assert "services.meshctl.node.authKeyFile" in err and "is not of type" in err and "Nix store" in err, err


def test_nix_secret_under_store_dir_caught_by_assertion(h: Harness) -> None:
    # Not a well-formed store path, so types.externalPath lets it through; the assertion still refuses it.
    failed = h.failed({"services.meshctl.node": {**NODE, "authKeyFile": "/nix/store/abc-authkey"}})
    assert failed == ['services.meshctl.node.authKeyFile = "/nix/store/abc-authkey": a secret must be an absolute '
                      "path outside /nix/store (a file in the Nix store is world-readable); point it at e.g. "
                      "/run/secrets/… or /etc/meshctl/…."]


def test_nix_secret_store_path_rejected(h: Harness) -> None:
    module = {"services.meshctl.derp": {"enable": True, "meshWith": ["https://derp2.example.com"],
                                        "meshKeyFile": "/nix/store/0000000000000000000000000000000b-mesh.key"}}
    if h.has_external_path:
        err = h.error(module)
        assert "services.meshctl.derp.meshKeyFile" in err and "not in the Nix store" in err, err
    else:
        failed = h.failed(module)
        assert len(failed) == 1 and failed[0].startswith(
            'services.meshctl.derp.meshKeyFile = "/nix/store/0000000000000000000000000000000b-mesh.key": '
            "a secret must be an absolute path outside /nix/store"), failed


def test_nix_secret_relative_path_rejected(h: Harness) -> None:
    module = {"services.meshctl.control": {"enable": True, "tls": {"certFile": "certs/cert.pem",
                                                                   "keyFile": "/etc/ssl/key.pem"}}}
    if h.has_external_path:
        err = h.error(module)
        assert "services.meshctl.control.tls.certFile" in err and "absolute path" in err, err
    else:
        failed = h.failed(module)
        assert len(failed) == 1 and failed[0].startswith('services.meshctl.control.tls.certFile = "certs/cert.pem"')


# ---------------------------------------------------------------- control


def test_nix_control_defaults(h: Harness) -> None:
    out = h.eval({"services.meshctl.control.enable": True})
    assert out["assertions"] == []
    sc = out["services"]["meshctl-control"]["serviceConfig"]
    conf = out["etc"]["meshctl/control.toml"]
    assert argv(sc["ExecStart"]) == [MESHCTL, "control", "serve", "--config", conf["path"],
                                      "--state-dir", "/var/lib/meshctl/control", "--listen", "127.0.0.1:8080"]
    assert sc["User"] == "meshctl-control" and sc["StateDirectory"] == "meshctl/control"
    assert sc["CapabilityBoundingSet"] == [""] and sc["AmbientCapabilities"] == []
    assert sc["PrivateDevices"] is True and sc["LoadCredential"] == []
    assert "AF_NETLINK" not in sc["RestrictAddressFamilies"]
    assert out["users"]["meshctl-control"]["isSystemUser"] is True
    assert "meshctl-control" in out["groups"]
    assert out["firewall"]["allowedTCPPorts"] == []
    assert conf["settings"] == {"listen": "127.0.0.1:8080", "state_dir": "/var/lib/meshctl/control"}


def test_nix_control_settings_must_not_contradict_flags(h: Harness) -> None:
    failed = h.failed({"services.meshctl.control": {"enable": True, "settings": {"listen": "0.0.0.0:9999"}}})
    assert failed == ["services.meshctl.control.settings: set listen, state_dir, db and domain through "
                      "services.meshctl.control.{listen,database,domain} (the unit passes them as flags), not in "
                      "settings."]
    # Without the option, the domain may come from settings.
    out = h.eval({"services.meshctl.control": {"enable": True, "settings": {"domain": "corp.example"}}})
    assert out["assertions"] == []
    assert out["etc"]["meshctl/control.toml"]["settings"]["domain"] == "corp.example"


def test_nix_control_tls_db_firewall_settings(h: Harness) -> None:
    out = h.eval({"services.meshctl.control": {
        "enable": True, "listen": "0.0.0.0:443", "openFirewall": True, "domain": "mesh.example.com",
        "database": "postgresql+psycopg:///meshctl?host=/run/postgresql",
        "tls": {"certFile": "/var/lib/acme/c/fullchain.pem", "keyFile": "/var/lib/acme/c/key.pem"},
        "settings": {"node_key_expiry": "90d", "derp": {"regions": [{"id": 900, "code": "fra"}]}},
    }})
    assert out["assertions"] == []
    sc = out["services"]["meshctl-control"]["serviceConfig"]
    args = argv(sc["ExecStart"])
    assert args[args.index("--listen") + 1] == "0.0.0.0:443"
    assert args[args.index("--db") + 1] == "postgresql+psycopg:///meshctl?host=/run/postgresql"
    assert args[args.index("--tls-cert") + 1] == "%d/tls-cert" and args[args.index("--tls-key") + 1] == "%d/tls-key"
    assert sc["LoadCredential"] == ["tls-cert:/var/lib/acme/c/fullchain.pem", "tls-key:/var/lib/acme/c/key.pem"]
    assert sc["CapabilityBoundingSet"] == ["", "CAP_NET_BIND_SERVICE"]
    assert sc["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert out["firewall"]["allowedTCPPorts"] == [443]
    assert "postgresql.service" in out["services"]["meshctl-control"]["after"]
    # The file repeats the flags, so local admin commands (`--config /etc/meshctl/control.toml`) use the same store.
    assert out["etc"]["meshctl/control.toml"]["settings"] == {
        "listen": "0.0.0.0:443", "state_dir": "/var/lib/meshctl/control",
        "db": "postgresql+psycopg:///meshctl?host=/run/postgresql",
        "domain": "mesh.example.com", "node_key_expiry": "90d", "derp": {"regions": [{"id": 900, "code": "fra"}]},
    }


def test_nix_control_sqlite_path_becomes_url(h: Harness) -> None:
    out = h.eval({"services.meshctl.control": {"enable": True, "database": "/srv/meshctl/control.db"}})
    args = argv(out["services"]["meshctl-control"]["serviceConfig"]["ExecStart"])
    assert args[args.index("--db") + 1] == "sqlite:////srv/meshctl/control.db"


def test_nix_control_database_password_refused(h: Harness) -> None:
    failed = h.failed({"services.meshctl.control": {
        "enable": True, "database": "postgresql+psycopg://meshctl:hunter2@db.example.com/meshctl"}})
    assert len(failed) == 1 and "holds a password" in failed[0] and "world-readable" in failed[0], failed


def test_nix_control_tls_needs_both_files(h: Harness) -> None:
    failed = h.failed({"services.meshctl.control": {"enable": True, "tls": {"certFile": "/etc/ssl/c.pem"}}})
    assert failed == ["services.meshctl.control.tls: set both certFile and keyFile, or neither (got only certFile)."]


def test_nix_control_listen_checked(h: Harness) -> None:
    err = h.error({"services.meshctl.control": {"enable": True, "listen": "8080"}})
    assert "services.meshctl.control.listen" in err and "is not of type" in err
    failed = h.failed({"services.meshctl.control": {"enable": True, "listen": "0.0.0.0:70000"}})
    assert failed == ['services.meshctl.control.listen = "0.0.0.0:70000": the port must be between 1 and 65535.']
    out = h.eval({"services.meshctl.control": {"enable": True, "listen": "[::1]:8080"}}, ".services")
    assert argv(out["meshctl-control"]["serviceConfig"]["ExecStart"])[-1] == "[::1]:8080"


# ---------------------------------------------------------------- DERP


def test_nix_derp_full(h: Harness) -> None:
    out = h.eval({"services.meshctl.derp": {
        "enable": True, "regionId": 901, "regionCode": "fra", "openFirewall": True,
        "verifyUrl": "https://control.example.com/derp/verify", "verifyTokenFile": "/etc/meshctl/derp-token",
        "meshWith": ["https://derp2.example.com", "https://derp3.example.com"],
        "meshKeyFile": "/etc/meshctl/derp-mesh.key",
        "tls": {"certFile": "/var/lib/acme/d/fullchain.pem", "keyFile": "/var/lib/acme/d/key.pem"},
    }})
    assert out["assertions"] == []
    unit = out["services"]["meshctl-derp"]
    sc = unit["serviceConfig"]
    assert argv(sc["ExecStart"]) == [
        MESHCTL, "derp", "serve", "--listen", "0.0.0.0:443", "--stun-listen", "0.0.0.0:3478",
        "--key-file", "/var/lib/meshctl/derp/derp.key", "--region-id", "901",
        "--tls-cert", "%d/tls-cert", "--tls-key", "%d/tls-key",
        "--verify-url", "https://control.example.com/derp/verify", "--verify-token-file", "%d/verify-token",
        "--mesh-with", "https://derp2.example.com,https://derp3.example.com", "--mesh-key-file", "%d/mesh-key",
    ]
    assert sorted(sc["LoadCredential"]) == sorted([
        "tls-cert:/var/lib/acme/d/fullchain.pem", "tls-key:/var/lib/acme/d/key.pem",
        "verify-token:/etc/meshctl/derp-token", "mesh-key:/etc/meshctl/derp-mesh.key"])
    assert sc["User"] == "meshctl-derp" and sc["StateDirectory"] == "meshctl/derp"
    assert sc["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert "region 901 fra" in unit["description"]
    assert "--verify-fail-open" not in argv(sc["ExecStart"])  # fail closed unless asked
    fail_open = h.eval({"services.meshctl.derp": {
        "enable": True, "verifyUrl": "https://control.example.com/derp/verify",
        "verifyTokenFile": "/etc/meshctl/derp-token", "verifyFailOpen": True}}, ".services.meshctl-derp")
    assert argv(fail_open["serviceConfig"]["ExecStart"])[-1] == "--verify-fail-open"
    assert out["firewall"]["allowedTCPPorts"] == [443, 80]
    assert out["firewall"]["allowedUDPPorts"] == [3478]


def test_nix_derp_unprivileged_ports(h: Harness) -> None:
    out = h.eval({"services.meshctl.derp": {"enable": True, "listen": "10.0.0.5:8443", "stunPort": 3479,
                                            "openFirewall": True}})
    sc = out["services"]["meshctl-derp"]["serviceConfig"]
    args = argv(sc["ExecStart"])
    assert args[args.index("--stun-listen") + 1] == "10.0.0.5:3479"
    assert "--verify-url" not in args and "--mesh-with" not in args and "--tls-cert" not in args
    assert "--verify-fail-open" not in args
    assert sc["CapabilityBoundingSet"] == [""] and sc["AmbientCapabilities"] == []
    assert out["firewall"]["allowedTCPPorts"] == [8443, 80]
    assert out["firewall"]["allowedUDPPorts"] == [3479]


def test_nix_derp_mesh_needs_key_and_verify_needs_token(h: Harness) -> None:
    failed = h.failed({"services.meshctl.derp": {"enable": True, "meshWith": ["https://derp2.example.com"],
                                                 "verifyUrl": "https://control.example.com/derp/verify"}})
    assert len(failed) == 2, failed
    assert any(m.startswith("services.meshctl.derp.meshWith is set but meshKeyFile is not") for m in failed)
    assert any(m.startswith("services.meshctl.derp: verifyUrl and verifyTokenFile go together") for m in failed)


def test_nix_derp_region_id_range(h: Harness) -> None:
    err = h.error({"services.meshctl.derp": {"enable": True, "regionId": 42}})
    assert "services.meshctl.derp.regionId" in err and "is not of type" in err


# ---------------------------------------------------------------- rotation


def test_nix_rotation_timer_and_job(h: Harness) -> None:
    out = h.eval({"services.meshctl.node": NODE, "services.meshctl.rotation": {
        "enable": True, "schedule": "*-*-* 03:00:00", "nodeKeyMaxAge": "90d", "sshHostCertRenewBefore": "7d"}})
    assert out["assertions"] == []
    job = out["services"]["meshctl-rotate"]
    policy = out["etc"]["meshctl/rotation.toml"]
    assert argv(job["serviceConfig"]["ExecStart"]) == [
        MESHCTL, "agent", "rotate", "--if-due", "--config", out["etc"]["meshctl/agent.toml"]["path"],
        "--policy", policy["path"]]
    assert policy["settings"] == {"rotation": {"node_key_max_age": "90d", "host_cert_renew_before": "7d"}}
    assert job["serviceConfig"]["Type"] == "oneshot"
    assert "meshctl-agent.service" in job["after"]
    # Host certificates and the sshd drop-in go to /etc/ssh; everything else stays read-only.
    assert "-/etc/ssh" in job["serviceConfig"]["ReadWritePaths"]
    assert job["serviceConfig"]["ProtectSystem"] == "strict"
    assert out["timers"]["meshctl-rotate"]["timerConfig"]["OnCalendar"] == "*-*-* 03:00:00"
    assert out["timers"]["meshctl-rotate"]["wantedBy"] == ["timers.target"]
    # sshd is not managed by this configuration: its config is left alone.
    assert out["sshdExtraConfig"] == ""


def test_nix_rotation_includes_the_sshd_dropin(h: Harness) -> None:
    base = {"services.meshctl.node": NODE, "services.openssh.enable": True,
            "services.openssh.extraConfig": "Match User backup\n  ForceCommand /bin/false"}
    out = h.eval({**base, "services.meshctl.rotation.enable": True})
    # First, so a user's Match block does not swallow it.
    assert out["sshdExtraConfig"].startswith("Include /etc/ssh/sshd_config.d/meshctl*.conf\n")
    assert out["sshdExtraConfig"].endswith("ForceCommand /bin/false")
    off = h.eval({**base, "services.meshctl.rotation": {"enable": True, "sshdInclude": False}})
    assert "meshctl" not in off["sshdExtraConfig"]


def test_nix_rotation_needs_node(h: Harness) -> None:
    failed = h.failed({"services.meshctl.rotation.enable": True})
    assert len(failed) == 1 and failed[0].startswith(
        "services.meshctl.rotation.enable needs services.meshctl.node.enable"), failed


def test_nix_rotation_duration_checked(h: Harness) -> None:
    err = h.error({"services.meshctl.node": NODE, "services.meshctl.rotation": {"enable": True,
                                                                                 "nodeKeyMaxAge": "90 days"}})
    assert "services.meshctl.rotation.nodeKeyMaxAge" in err


# ---------------------------------------------------------------- flake wiring


def test_nix_flake_module_sets_package_with_mkdefault(h: Harness) -> None:
    # nixosModules.default builds nix/package.nix (the harness' callPackage stands in for the build) ...
    out = h.eval({"services.meshctl.node": NODE}, entry="evalFlake")
    assert out["package"] == "meshctl-from-package.nix"
    exec_start = out["services"]["meshctl-agent"]["serviceConfig"]["ExecStart"]
    assert exec_start.startswith("/nix/store/0000000000000000000000000000000a-meshctl-from-package.nix/bin/meshctl ")
    # ... and a user's own package still wins.
    mine = {"type": "derivation", "name": "my-meshctl", "outPath": "/nix/store/0000000000000000000000000000000c-my",
            "meta.mainProgram": "meshctl"}
    out = h.eval({"services.meshctl.node": NODE, "services.meshctl.package": mine}, entry="evalFlake")
    assert out["package"] == "my-meshctl"


# ---------------------------------------------------------------- package


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _nixpkgs_name(requirement: str) -> str:
    """nixpkgs' python attribute of a requirement: the PEP 503 name, extras and versions dropped."""
    name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_nix_package_matches_pyproject(nix: Nix, nixpkgs_lib: Path) -> None:
    project = _pyproject()
    wanted = sorted({_nixpkgs_name(r) for r in project["project"]["dependencies"]})
    names = [*wanted, "hatchling"]
    # The fake python3Packages holds only these names: a dependency package.nix names that
    # pyproject.toml does not ask for fails to evaluate, and one it forgets fails the comparison.
    pkg = nix.eval(f"(import {nix_path(HARNESS)} {{ libPath = {nix_path(nixpkgs_lib)}; "
                   f"pythonNames = {to_nix(names)}; }}).package")
    assert sorted(pkg["dependencies"]) == wanted
    assert project["build-system"]["build-backend"] == "hatchling.build" and pkg["build-system"] == ["hatchling"]
    assert pkg["pyproject"] is True
    assert pkg["version"] == project["project"]["version"]
    assert pkg["pythonImportsCheck"] == ["meshctl"]
    assert set(pkg["pythonRelaxDeps"]) <= set(wanted)
    assert pkg["meta"]["mainProgram"] in project["project"]["scripts"]


@pytest.mark.parametrize(("rel", "included"), [
    ("pyproject.toml", True), ("README.md", True), ("toolkit/meshctl/__init__.py", True),
    ("roles/control/deploy.py", True), ("inventories/lab.py", True),  # force-included into the wheel
    (".venv", False), (".git", False), ("toolkit/meshctl/__pycache__", False), ("build", False), ("result", False),
])
def test_nix_package_source_filter(h: Harness, rel: str, included: bool) -> None:
    assert h.attr(f'sourceIncludes {to_nix(rel)} "regular"') is included


# ---------------------------------------------------------------- the VM test's machines


def test_nix_vm_test_machines_evaluate(h: Harness) -> None:
    # Without KVM the VM test cannot boot here, but its machines' configurations can be evaluated.
    nodes = h.attr("vmNodeNames")
    assert nodes == ["control", "derp", "node1", "node2"]
    machines = {n: h.attr(f"vmNode {to_nix(n)}") for n in nodes}
    for name, out in machines.items():
        assert out["assertions"] == [], (name, out["assertions"])
    control = machines["control"]
    region = control["etc"]["meshctl/control.toml"]["settings"]["derp"]["regions"][0]
    derp_args = argv(machines["derp"]["services"]["meshctl-derp"]["serviceConfig"]["ExecStart"])
    # The DERP map the control server publishes points at the relay as it is configured.
    assert region["id"] == int(derp_args[derp_args.index("--region-id") + 1])
    assert f"0.0.0.0:{region['nodes'][0]['derp_port']}" == derp_args[derp_args.index("--listen") + 1]
    assert 8080 in control["firewall"]["allowedTCPPorts"]
    # The relay asks control before admitting a node, with a token read through LoadCredential; it is
    # started by the script once the token file exists.
    assert derp_args[derp_args.index("--verify-url") + 1] == "http://control:8080/derp/verify"
    assert machines["derp"]["services"]["meshctl-derp"]["serviceConfig"]["LoadCredential"] == [
        "verify-token:/etc/meshctl/derp-token"]
    assert machines["derp"]["services"]["meshctl-derp"]["wantedBy"] == []
    for n in ("node1", "node2"):
        agent = machines[n]["etc"]["meshctl/agent.toml"]["settings"]
        assert agent["control_url"] == "http://control:8080"
        assert agent["control_key"].startswith("ctrlkey:")
        # Started by the script once the auth key file exists.
        assert machines[n]["services"]["meshctl-agent"]["wantedBy"] == []


def test_nix_vm_test_script_compiles(h: Harness) -> None:
    script = h.attr("vmTestScript")
    compile(script, "vm.nix testScript", "exec")
    key = re.search(r'served\["controlKey"\] == "(ctrlkey:[0-9a-f]{64})"', script)
    assert key is not None, "the script checks the served control key"
    node = h.attr('vmNode "node1"')
    assert node["etc"]["meshctl/agent.toml"]["settings"]["control_key"] == key.group(1)
    assert "ping -c1" in script


def test_nix_module_package_default_without_flake(h: Harness) -> None:
    # Imported by path: pkgs.meshctl when an overlay provides it, else a build of nix/package.nix.
    assert h.eval({"services.meshctl.node": NODE}, ".package") == "meshctl"
    assert h.eval({"services.meshctl.node": NODE}, ".package", entry="evalNoOverlay") == "meshctl-from-package.nix"


# ---------------------------------------------------------------- the units as systemd reads them


def systemd_complaints(path: Path) -> list[str]:
    proc = subprocess.run(["systemd-analyze", "verify", "--man=false", str(path)], capture_output=True, text=True,
                          timeout=60)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()] + (
        [f"exit {proc.returncode}"] if proc.returncode else [])


def test_nix_units_accepted_by_systemd(h: Harness, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # The checker notices a misspelt directive, so silence below means systemd knows every line.
    bad = tmp_path / "meshctl-bad.service"
    bad.write_text("[Service]\nExecStart=/bin/true\nProtectKernelLog=true\n")
    assert any("Unknown key" in c for c in systemd_complaints(bad))

    out = h.eval({
        "services.meshctl.control": {"enable": True, "listen": "0.0.0.0:443", "database": "/srv/control.db",
                                     "tls": {"certFile": "/etc/ssl/c.pem", "keyFile": "/etc/ssl/k.pem"}},
        "services.meshctl.derp": {"enable": True, "verifyUrl": "http://c/derp/verify",
                                  "verifyTokenFile": "/etc/meshctl/derp-token", "meshWith": ["https://d2"],
                                  "meshKeyFile": "/etc/meshctl/derp-mesh.key"},
        "services.meshctl.node": {**NODE, "authKeyFile": "/etc/meshctl/authkey", "extraArgs": ["a b%", "$HOME"]},
        "services.meshctl.rotation.enable": True,
    })
    assert sorted(out["services"]) == ["meshctl-agent", "meshctl-control", "meshctl-derp", "meshctl-rotate"]
    complaints = {}
    for name, unit in out["services"].items():
        path = tmp_path / f"{name}.service"
        path.write_text(render_unit(unit, {MESHCTL: "/bin/true"}))
        if found := systemd_complaints(path):
            complaints[name] = found
    assert complaints == {}


# ---------------------------------------------------------------- the commands as meshctl reads them


def self_signed(tmp: Path) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mesh.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_nix_rendered_commands_accepted_by_meshctl(h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each unit's ExecStart, with its rendered config and credentials, run through the real meshctl CLI up to
    the point where the daemon would start: flags and config keys the module writes are ones meshctl reads."""
    from typer.testing import CliRunner

    import meshctl.agent.daemon
    import meshctl.control.server
    import meshctl.derp.service
    import meshctl.rotate.hostjob
    from meshctl.cli.app import app
    from meshctl.keys import generate_token

    out = h.eval({
        "services.meshctl.control": {"enable": True, "listen": "0.0.0.0:443", "domain": "mesh.test",
                                     "database": "postgresql+psycopg:///meshctl?host=/run/postgresql",
                                     "tls": {"certFile": "/etc/ssl/c.pem", "keyFile": "/etc/ssl/k.pem"},
                                     "settings": {"node_key_expiry": "90d", "derp": {"regions": [{
                                         "id": 901, "code": "fra", "nodes": [{
                                             "host_name": "derp.mesh.test", "derp_port": 443, "stun_port": 3478}]}]}}},
        "services.meshctl.derp": {"enable": True, "regionId": 901, "verifyUrl": "https://c.mesh.test/derp/verify",
                                  "verifyTokenFile": "/etc/meshctl/derp-token", "verifyFailOpen": True,
                                  "meshWith": ["https://derp2.mesh.test"], "meshKeyFile": "/etc/meshctl/derp-mesh.key",
                                  "tls": {"certFile": "/etc/ssl/c.pem", "keyFile": "/etc/ssl/k.pem"}},
        "services.meshctl.node": {**NODE, "controlKey": "ctrlkey:" + "ab" * 32, "authKeyFile": "/etc/meshctl/authkey",
                                  "interfaceName": "wg7", "port": 51820, "backend": "userspace"},
        "services.meshctl.rotation": {"enable": True, "nodeKeyMaxAge": "30d", "sshHostCertRenewBefore": "3d"},
    })
    assert out["assertions"] == []
    cert, key = self_signed(tmp_path)
    secrets = {"tls-cert": cert, "tls-key": key, "verify-token": generate_token("derp").text.encode(),
               "mesh-key": b"ab" * 32 + b"\n", "authkey": generate_token("auth").text.encode()}
    # Store paths of rendered configs -> real files with the same data.
    files = {}
    for name, entry in out["etc"].items():
        files[entry["path"]] = tmp_path / name.replace("/", "-")
        write_toml(files[entry["path"]], entry["settings"])

    captured: dict[str, Any] = {}

    async def fake_agent(cfg: Any) -> None:
        captured["agent"] = cfg

    monkeypatch.setattr(meshctl.control.server, "serve", lambda cfg: captured.setdefault("control", cfg))
    monkeypatch.setattr(meshctl.derp.service, "run", lambda cfg: captured.setdefault("derp", cfg))
    monkeypatch.setattr(meshctl.agent.daemon, "run_agent", fake_agent)

    async def fake_jobs(cfg: Any, policy: Any, now: float, **kw: Any) -> list[Any]:
        captured["rotate"] = (cfg, policy, kw)
        return []

    monkeypatch.setattr(meshctl.rotate.hostjob, "run_host_jobs", fake_jobs)

    runner = CliRunner()
    for unit_name in ("meshctl-control", "meshctl-derp", "meshctl-agent", "meshctl-rotate"):
        sc = out["services"][unit_name]["serviceConfig"]
        creds = tmp_path / "credentials" / unit_name  # what systemd's %d is for this unit
        creds.mkdir(parents=True)
        for spec in sc.get("LoadCredential", []):
            name = spec.split(":", 1)[0]
            (creds / name).write_bytes(secrets[name])
            (creds / name).chmod(0o400)
        args = [files.get(a, a).__str__() for a in argv(sc["ExecStart"].replace("%d", str(creds)))]
        assert args[0] == MESHCTL
        result = runner.invoke(app, args[1:])
        assert result.exit_code == 0, (unit_name, args, result.output)

    control = captured["control"]
    assert (control.listen, control.db_url, control.domain) == (
        "0.0.0.0:443", "postgresql+psycopg:///meshctl?host=/run/postgresql", "mesh.test")
    assert str(control.state_dir) == "/var/lib/meshctl/control"
    assert control.tls_cert is not None and control.tls_cert.read_bytes() == cert
    assert control.node_key_expiry == 90 * 86400
    assert 901 in control.derp_map.regions

    derp = captured["derp"]
    assert (derp.listen, derp.stun_listen, derp.region_id) == ("0.0.0.0:443", "0.0.0.0:3478", 901)
    assert str(derp.key_file) == "/var/lib/meshctl/derp/derp.key"
    assert derp.verify_url == "https://c.mesh.test/derp/verify" and derp.verify_fail_open is True
    assert Path(derp.verify_token_file).read_bytes() == secrets["verify-token"]
    assert Path(derp.mesh_key_file).read_bytes() == secrets["mesh-key"]
    assert list(derp.mesh_with) == ["https://derp2.mesh.test"]

    agent = captured["agent"]
    assert agent.control_url == "https://control.example.com"
    assert agent.control_key.to_text() == "ctrlkey:" + "ab" * 32
    assert (agent.interface, agent.port, agent.backend) == ("wg7", 51820, "userspace")
    assert str(agent.auth_key_file) == "/run/credentials/meshctl-agent.service/authkey"
    assert str(agent.socket) == "/run/meshctl/agent.sock"  # RuntimeDirectory=meshctl

    _, policy, kw = captured["rotate"]
    assert (policy.node_key_max_age, policy.host_cert_renew_before) == (30 * 86400, 3 * 86400)
    assert kw["if_due"] is True


def test_nix_flake_outputs(h: Harness) -> None:
    flake = h.attr("flakeSummary")
    for system in ("x86_64-linux", "aarch64-linux"):
        assert flake["packages"][system] == {"default": "meshctl-from-package.nix", "meshctl": "meshctl-from-package.nix"}
        # The VM test is a flake check: control, DERP and two nodes.
        assert flake["checks"][system] == {"vm": {"name": "meshctl", "nodes": ["control", "derp", "node1", "node2"]}}
    assert flake["overlay"] == "meshctl-from-package.nix"
    assert "default" in flake["nixosModules"]
