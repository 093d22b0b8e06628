"""Reusable testinfra checks per role: each takes a testinfra `host` and raises CheckFailed with what it found.

Usable from `meshctl verify` and from your own pytest suite with testinfra's `host` fixture:

    from meshctl.verify import checks
    def test_agent(host):
        checks.agent_active(host)
        checks.node_peers_handshake(host)

Failure messages say what was found and what was wanted ("peer node3 last handshake 14m ago, want < 3m").
Paths and units are the ones in docs/contracts.md.
"""

from __future__ import annotations

import json
import shlex
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testinfra.host import Host

from .. import __version__
from .errors import CheckFailed, CheckWarning

__all__ = [
    "DEFAULT_CONTEXT",
    "ROLE_CHECKS",
    "CheckContext",
    "agent_active",
    "control_db_schema_current",
    "control_healthz",
    "control_listening",
    "control_no_expired_listed",
    "control_service_active",
    "derp_admission_refuses_unknown",
    "derp_service_active",
    "derp_upgrade_required",
    "meshctl_version",
    "no_private_key_world_readable",
    "node_key_expiry",
    "node_magicdns",
    "node_mesh_interface",
    "node_peers_handshake",
    "node_wireguard_peers_match",
    "secret_files_private",
    "unit_files_present",
]

MESHCTL = "/opt/meshctl/bin/meshctl"
PYTHON = "/opt/meshctl/bin/python"
CONFIG_DIRS = ("/etc/meshctl", "/var/lib/meshctl")
SECRET_NAMES = ("*.key", "derp-token", "derp-mesh.key", "authkey", "api-key", "ssh_ca", "control.db*")
PRIVATE_MARKERS = "privkey:|mprivkey:|ctrlprivkey:|discoprivkey:|PRIVATE KEY|mskey-(auth|api|derp)-"


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What the checks compare against; the defaults suit a deployment made by `meshctl deploy`."""

    version: str = __version__
    handshake_max_age: float = 180.0
    key_expiry_warn: float = 14 * 86400.0
    role: str = "node"


DEFAULT_CONTEXT = CheckContext()


def _run(host: Host, cmd: str) -> str:
    r = host.run(cmd)
    if r.rc != 0:
        raise CheckFailed(f"`{cmd}` failed (exit {r.rc}): {(r.stderr or r.stdout).strip()[:200]}")
    return str(r.stdout)


def _toml(host: Host, path: str) -> dict[str, Any]:
    f = host.file(path)
    if not f.exists:
        raise CheckFailed(f"{path} is missing, want the config written by the deploy")
    try:
        return tomllib.loads(f.content_string)
    except tomllib.TOMLDecodeError as e:
        raise CheckFailed(f"{path} is not valid TOML: {e}") from None


def _ago(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.0f}h"
    if seconds >= 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def _port(listen: str, default: int) -> int:
    try:
        return int(str(listen).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return default


# ---- every host -------------------------------------------------------------------------------------


def meshctl_version(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    out = _run(host, f"{MESHCTL} --version").strip()
    found = out.split()[-1] if out else "nothing"
    if found != ctx.version:
        raise CheckFailed(f"meshctl {found} installed, want {ctx.version} (the operator's); re-run meshctl deploy")
    return out


def unit_files_present(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    unit = {"control": "meshctl-control", "derp": "meshctl-derp", "node": "meshctl-agent"}[ctx.role]
    r = host.run(f"systemctl cat {unit}.service")
    if r.rc != 0:
        raise CheckFailed(f"unit {unit}.service not installed, want it from the {ctx.role} role")
    return f"{unit}.service"


def secret_files_private(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    names = " -o ".join(f"-name {shlex.quote(n)}" for n in SECRET_NAMES)
    out = _run(host, f"find {' '.join(CONFIG_DIRS)} -type f \\( {names} \\) -printf '%m %u %p\\n' 2>/dev/null; true")
    bad, count = [], 0
    for line in out.splitlines():
        mode, user, path = line.split(" ", 2)
        count += 1
        if int(mode, 8) & 0o077 or user != "root":
            bad.append(f"{path} is {int(mode, 8):04o} {user}")
    if bad:
        raise CheckFailed("; ".join(bad) + ", want 0600 root")
    return f"{count} secret files 0600 root"


def no_private_key_world_readable(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    cmd = (f"find {' '.join(CONFIG_DIRS)} -type f -perm -o+r -print0 2>/dev/null"
           f" | xargs -0 -r grep -lE {shlex.quote(PRIVATE_MARKERS)} 2>/dev/null; true")
    found = _run(host, cmd).split()
    if found:
        raise CheckFailed(f"private key material in world-readable {', '.join(found)}, want none")
    return "none"


# ---- control ----------------------------------------------------------------------------------------


def control_service_active(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    return _service(host, "meshctl-control")


def _service(host: Host, unit: str) -> str:
    svc = host.service(unit)
    if not svc.is_running:
        state = host.run(f"systemctl is-active {unit}").stdout.strip()
        raise CheckFailed(f"{unit} is {state or 'not running'}, want active")
    if not svc.is_enabled:
        raise CheckFailed(f"{unit} is not enabled, want enabled (starts at boot)")
    return "active, enabled"


def control_listening(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    listen = str(_toml(host, "/etc/meshctl/control.toml").get("listen", "0.0.0.0:8080"))
    port = _port(listen, 8080)
    if not host.socket(f"tcp://{port}").is_listening and not host.socket(f"tcp://0.0.0.0:{port}").is_listening:
        raise CheckFailed(f"nothing listens on tcp {listen}, want meshctl-control")
    return listen


def control_url_local(host: Host) -> str:
    listen = str(_toml(host, "/etc/meshctl/control.toml").get("listen", "0.0.0.0:8080"))
    return f"http://127.0.0.1:{_port(listen, 8080)}"


def control_healthz(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    url = control_url_local(host) + "/healthz"
    r = host.run(f"curl -fsS -m 5 {url}")
    if r.rc != 0:
        raise CheckFailed(f"GET {url} failed (curl exit {r.rc}), want 200")
    return "ok"


def served_control_key(host: Host) -> str:
    out = _run(host, f"curl -fsS -m 5 {control_url_local(host)}/key")
    try:
        return str(json.loads(out)["controlKey"])
    except (ValueError, KeyError):
        raise CheckFailed(f"/key answered {out[:80]!r}, want {{\"controlKey\": \"ctrlkey:…\"}}") from None


def control_db_schema_current(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    r = host.run(f"{MESHCTL} control migrate --state-dir /var/lib/meshctl/control --check")
    if r.rc != 0:
        raise CheckFailed(f"database schema not current: {(r.stderr or r.stdout).strip()[:200]}")
    return "current"


def control_no_expired_listed(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    out = _run(host, f"{MESHCTL} control status --state-dir /var/lib/meshctl/control --json")
    status = json.loads(out)
    n = int(status.get("expired_listed", status.get("expiredListed", 0)))
    if n:
        raise CheckFailed(f"{n} expired node(s) still listed in peers' maps, want 0")
    return f"{status.get('nodes', '?')} nodes, none expired-but-listed"


# ---- derp -------------------------------------------------------------------------------------------


def derp_service_active(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    return _service(host, "meshctl-derp")


def derp_local_url(host: Host) -> str:
    conf = _toml(host, "/etc/meshctl/derp.toml")
    scheme = "https" if conf.get("tls_cert") else "http"
    return f"{scheme}://127.0.0.1:{_port(str(conf.get('listen', '0.0.0.0:443')), 443)}"


def derp_upgrade_required(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    url = derp_local_url(host) + "/derp"
    code = _run(host, f"curl -ks -m 5 -o /dev/null -w '%{{http_code}}' {url}").strip()
    if code != "426":
        raise CheckFailed(f"GET {url} without upgrade answered {code}, want 426")
    return "426 without upgrade"


def derp_admission_refuses_unknown(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    url = derp_local_url(host) + "/derp"
    r = host.run(f"{PYTHON} -m meshctl.verify.probes derp-unknown {url}")
    if r.rc != 0:
        raise CheckFailed(f"an unregistered node key was not refused by {url}: {(r.stdout + r.stderr).strip()[:200]}")
    return str(r.stdout).strip()


# ---- node -------------------------------------------------------------------------------------------


def agent_active(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    return _service(host, "meshctl-agent")


def agent_status(host: Host) -> dict[str, Any]:
    out = _run(host, f"{MESHCTL} status --json")
    try:
        data = json.loads(out)
    except ValueError:
        raise CheckFailed(f"`meshctl status --json` printed {out[:80]!r}, want JSON") from None
    if not isinstance(data, dict):
        raise CheckFailed("`meshctl status --json` did not print an object")
    return data


def node_mesh_interface(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    status = agent_status(host)
    iface = str(status.get("self", {}).get("interface", "mesh0"))
    want = {a.split("/")[0] for a in status.get("self", {}).get("addresses", [])}
    r = host.run(f"ip -j addr show dev {iface}")
    if r.rc != 0:
        raise CheckFailed(f"interface {iface} missing, want it up with {sorted(want)}")
    info = json.loads(r.stdout)[0]
    have = {a["local"] for a in info.get("addr_info", [])}
    if "UP" not in info.get("flags", []):
        raise CheckFailed(f"{iface} is down, want up")
    if not want or not want <= have:
        raise CheckFailed(f"{iface} has {sorted(have)}, want {sorted(want)}")
    return f"{iface} up with {', '.join(sorted(want))}"


def _wg(host: Host, what: str, iface: str = "mesh0") -> list[list[str]]:
    return [line.split() for line in _run(host, f"wg show {iface} {what}").splitlines() if line.strip()]


def _peer_matches(peer: dict[str, Any], wg_key: str) -> bool:
    """Does a status peer correspond to a WireGuard (base64) key? Status may give the full node key or
    only its short fingerprint `[abcde]` (the first 5 base64 characters)."""
    from ..keys import NodePublicKey

    key = str(peer.get("wireguard") or peer.get("nodeKey") or "")
    if key.startswith("[") and key.endswith("]"):
        return wg_key.startswith(key[1:-1])
    if key.startswith(NodePublicKey.PREFIX):
        return NodePublicKey.from_text(key).to_wireguard_base64() == wg_key
    return key == wg_key


def _match_peers(status: dict[str, Any], wg_keys: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """(wg key -> peer name, netmap peers missing from WireGuard, WireGuard keys unknown to the netmap)."""
    matched: dict[str, str] = {}
    missing = []
    for p in status.get("peers", []):
        hit = next((k for k in wg_keys if _peer_matches(p, k) and k not in matched), None)
        if hit is None:
            missing.append(str(p.get("name", "?")))
        else:
            matched[hit] = str(p.get("name", "?"))
    unknown = [k for k in wg_keys if k not in matched]
    return matched, missing, unknown


def node_wireguard_peers_match(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    status = agent_status(host)
    matched, missing, unknown = _match_peers(status, [row[0] for row in _wg(host, "peers")])
    if missing or unknown:
        raise CheckFailed(f"WireGuard lacks peers {missing} and has {len(unknown)} unknown, want exactly the "
                          f"netmap's {len(status.get('peers', []))} peers")
    return f"{len(matched)} peers"


def node_peers_handshake(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    status = agent_status(host)
    rows = _wg(host, "latest-handshakes")
    names, _, _ = _match_peers(status, [r[0] for r in rows])
    # a peer without persistent keepalive and without traffic is idle by design: WireGuard only
    # handshakes when there is something to send
    keepalive = {r[0]: r[1] for r in _wg(host, "persistent-keepalive")}
    # a peer control reports offline (its agent is not connected) cannot answer a handshake: not this host's fault
    offline = {k for k, name in names.items()
               if any(p.get("name") == name and p.get("online") is False for p in status.get("peers", []))}
    remote_now = float(_run(host, "date +%s").strip())
    stale, idle = [], []
    for key, ts in rows:
        if key not in names:
            continue
        age = remote_now - int(ts) if int(ts) else None
        if age is not None and age <= ctx.handshake_max_age:
            continue
        if key in offline:
            idle.append(f"{names[key]} (offline)")
            continue
        if keepalive.get(key, "off") == "off":
            idle.append(names[key])
        elif age is None:
            stale.append(f"peer {names[key]} never completed a handshake")
        else:
            stale.append(f"peer {names[key]} last handshake {_ago(age)} ago")
    if stale:
        raise CheckFailed("; ".join(stale) + f", want < {_ago(ctx.handshake_max_age)}")
    fresh = len(names) - len(idle)
    return f"{fresh} peers handshaked within {_ago(ctx.handshake_max_age)}" + (
        f", {len(idle)} idle by design ({', '.join(idle)})" if idle else "")


def node_magicdns(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    status = agent_status(host)
    bad = []
    names = [(str(p.get("fqdn") or p.get("name")), [a.split("/")[0] for a in p.get("addresses", [])])
             for p in status.get("peers", [])]
    for fqdn, addrs in names:
        r = host.run(f"dig +short +time=2 +tries=1 @100.100.100.100 {shlex.quote(fqdn.rstrip('.'))} A")
        got = r.stdout.split()
        v4 = [a for a in addrs if ":" not in a]
        if r.rc != 0 or not got or (v4 and v4[0] not in got):
            bad.append(f"{fqdn} resolved to {got or 'nothing'}, want {v4}")
    if bad:
        raise CheckFailed("; ".join(bad))
    return f"{len(names)} peer names resolve"


def node_key_expiry(host: Host, ctx: CheckContext = DEFAULT_CONTEXT) -> str:
    me = agent_status(host).get("self", {})
    expiry = me.get("keyExpiry") or me.get("key_expiry")
    if not expiry:
        return "key expiry disabled"
    from datetime import datetime

    try:
        ts = float(expiry) if not isinstance(expiry, str) or expiry.replace(".", "").isdigit() \
            else datetime.fromisoformat(expiry.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise CheckFailed(f"cannot read key expiry {expiry!r}") from None
    left = ts - time.time()
    if left <= 0:
        raise CheckFailed(f"node key expired {_ago(-left)} ago, want a valid key (meshctl rotate node-key)")
    if left < ctx.key_expiry_warn:
        raise CheckWarning(f"node key expires in {_ago(left)}, want > {_ago(ctx.key_expiry_warn)}")
    return f"expires in {left / 86400:.0f}d"


Check = Callable[[Host, CheckContext], str]

#: the checks run for each role, in order: (name, function)
ROLE_CHECKS: dict[str, list[tuple[str, Check]]] = {
    "all": [
        ("version", meshctl_version),
        ("unit files", unit_files_present),
        ("secret modes", secret_files_private),
        ("no world-readable keys", no_private_key_world_readable),
    ],
    "control": [
        ("control service", control_service_active),
        ("control listening", control_listening),
        ("control healthz", control_healthz),
        ("db schema", control_db_schema_current),
        ("no expired listed", control_no_expired_listed),
    ],
    "derp": [
        ("derp service", derp_service_active),
        ("derp 426", derp_upgrade_required),
        ("derp admission", derp_admission_refuses_unknown),
    ],
    "node": [
        ("agent service", agent_active),
        ("mesh interface", node_mesh_interface),
        ("wireguard peers", node_wireguard_peers_match),
        ("handshakes", node_peers_handshake),
        ("magicdns", node_magicdns),
        ("key expiry", node_key_expiry),
    ],
}
