"""Host DNS configuration: point the host's resolver at MagicDNS, and put it back afterwards.

Two modes, chosen when the agent starts:

* **resolved** (systemd-resolved is running and /etc/resolv.conf sends the host to it): per-link
  DNS on the mesh interface —
  `resolvectl dns mesh0 100.100.100.100`, `resolvectl domain mesh0 ~<domain>`,
  `resolvectl default-route mesh0 false` (plus LLMNR, mDNS and DNSSEC off on that link) — so only
  mesh names go to MagicDNS and the rest of the host's DNS stays as it was; `resolvectl revert mesh0`
  undoes it. Nothing on disk changes. resolved sends a link's queries out of that link
  (IP_UNICAST_IF), so 100.100.100.100 is also put on mesh0: a local address of the link itself is
  delivered locally, while one on `lo` would be routed into the tunnel.
* **file**: a managed `/etc/resolv.conf` naming 100.100.100.100, with the mesh domain first in
  `search`. The original (a file's text and mode, a symlink's target, or its absence) is saved
  first in the agent's state dir and put back by `restore()`. A regular file is rewritten in place,
  so the unit can allow writing just `/etc/resolv.conf`.

Crash safety: a backup left by a crashed agent is never overwritten by the next `apply()` (it is
still the host's original), and `restore()` (or `recover()` at start when DNS is off) puts it back.

MagicDNS forwards everything outside the mesh to `HostDns.upstreams()`: the resolvers the host
used before the agent took over.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import MeshctlError
from .dns import MAGICDNS_ADDRESS

__all__ = [
    "MANAGED_MARKER",
    "HostDns",
    "HostDnsError",
    "parse_resolv_conf",
    "render_managed",
    "resolved_apply_commands",
    "resolved_revert_commands",
    "uses_resolved",
]

MANAGED_MARKER = "# managed by meshctl-agent"
RESOLV_CONF = Path("etc/resolv.conf")
RESOLVED_UPSTREAMS = Path("run/systemd/resolve/resolv.conf")
RESOLVED_SOCKET = Path("run/systemd/resolve/io.systemd.Resolve")
BACKUP = Path("var/lib/meshctl/agent/resolv.conf.backup.json")

Runner = Callable[[Sequence[str]], None]


class HostDnsError(MeshctlError):
    """The host's DNS configuration could not be changed or restored."""


def parse_resolv_conf(text: str) -> tuple[list[str], list[str], list[str]]:
    """(nameservers, search domains, other option lines) of a resolv.conf."""
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        word, _, rest = line.partition(" ")
        if word == "nameserver" and rest.strip():
            nameservers.append(rest.strip())
        elif word in ("search", "domain"):
            search = rest.split()
        elif word == "options":
            options.append(line)
    return nameservers, search, options


def render_managed(domain: str, previous: str) -> str:
    """The managed resolv.conf: MagicDNS only, mesh domain searched first, the previous options kept."""
    _, search, options = parse_resolv_conf(previous)
    domain = domain.rstrip(".")
    domains = [domain, *(d for d in search if d.rstrip(".") != domain)]
    lines = [
        f"{MANAGED_MARKER}: MagicDNS answers mesh names and forwards the rest;",
        "# the previous file is restored when the agent stops.",
        f"nameserver {MAGICDNS_ADDRESS}",
        f"search {' '.join(domains)}",
        *options,
    ]
    return "\n".join(lines) + "\n"


def uses_resolved(resolv_conf: Path) -> bool:
    """Whether the host's libc resolver asks systemd-resolved's stub (127.0.0.53, usually through the
    stub-resolv.conf symlink). If not (a file of its own, or resolved's upstream list), per-link settings
    in resolved would never be consulted and the file must be managed instead."""
    servers, _, _ = parse_resolv_conf(_read(resolv_conf) or "")
    return "127.0.0.53" in servers or "127.0.0.54" in servers


def resolved_apply_commands(interface: str, domain: str) -> list[list[str]]:
    domain = domain.rstrip(".")
    return [
        ["ip", "addr", "replace", f"{MAGICDNS_ADDRESS}/32", "dev", interface],
        ["resolvectl", "dns", interface, MAGICDNS_ADDRESS],
        ["resolvectl", "domain", interface, f"~{domain}"],
        ["resolvectl", "default-route", interface, "false"],
        # No multicast name resolution over the tunnel, and no DNSSEC validation of the mesh's own
        # (unsigned) zone when the host validates everything else.
        ["resolvectl", "llmnr", interface, "no"],
        ["resolvectl", "mdns", interface, "no"],
        ["resolvectl", "dnssec", interface, "no"],
    ]


def resolved_revert_commands(interface: str) -> list[list[str]]:
    return [["resolvectl", "revert", interface], ["ip", "addr", "del", f"{MAGICDNS_ADDRESS}/32", "dev", interface]]


def _run(argv: Sequence[str]) -> None:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=15, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as err:
        raise HostDnsError(f"{' '.join(argv)} failed: {err}") from None
    if done.returncode != 0:
        raise HostDnsError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")


class HostDns:
    """Configures the host to use MagicDNS. `root` is "/" in production and a temp dir in tests."""

    def __init__(
        self,
        domain: str,
        interface: str = "mesh0",
        *,
        root: Path = Path("/"),
        resolved: bool | None = None,
        runner: Runner = _run,
        backup_path: Path | None = None,
    ) -> None:
        """`backup_path`: where the original is saved; the daemon passes its own state dir's file."""
        self.domain = domain
        self.interface = interface
        self.root = root
        self.runner = runner
        self.resolv_conf = root / RESOLV_CONF
        self.backup = backup_path if backup_path is not None else root / BACKUP
        if resolved is None:
            resolved = (
                (root / RESOLVED_SOCKET).exists()
                and shutil.which("resolvectl") is not None
                and uses_resolved(self.resolv_conf)
            )
        self.mode = "resolved" if resolved else "file"

    # -- what MagicDNS forwards to ------------------------------------------------------------

    def upstreams(self) -> list[tuple[str, int]]:
        """The host's resolvers from before the agent took over (never MagicDNS itself)."""
        if self.mode == "resolved":
            text = _read(self.root / RESOLVED_UPSTREAMS)
        else:
            saved = self._load_backup()
            if saved is None:
                text = _read(self.resolv_conf)
            elif saved["kind"] == "file":
                text = str(saved["content"])
            elif saved["kind"] == "symlink":
                target = Path(str(saved["target"]))
                text = _read(target if not target.is_absolute() else self.root / target.relative_to("/"))
            else:
                text = ""
        servers, _, _ = parse_resolv_conf(text or "")
        return [(s.split("%", 1)[0], 53) for s in servers if s != MAGICDNS_ADDRESS]

    # -- apply / restore ---------------------------------------------------------------------

    def apply(self) -> bool:
        """Point the host at MagicDNS; returns False when it already was (idempotent)."""
        if self.mode == "resolved":
            for argv in resolved_apply_commands(self.interface, self.domain):
                self.runner(argv)
            return True
        saved = self._load_backup()
        if saved is None:
            saved = self._snapshot()
            self._write_backup(saved)
        previous = str(saved.get("content", "")) if saved["kind"] == "file" else ""
        if saved["kind"] == "symlink":
            target = Path(str(saved["target"]))
            previous = _read(target if not target.is_absolute() else self.root / target.relative_to("/")) or ""
        wanted = render_managed(self.domain, previous)
        if not self.resolv_conf.is_symlink() and _read(self.resolv_conf) == wanted:
            return False
        self._write_resolv_conf(wanted, 0o644)
        return True

    def restore(self) -> bool:
        """Undo `apply()`; returns False when there was nothing to undo."""
        if self.mode == "resolved":
            failures = []
            for argv in resolved_revert_commands(self.interface):
                try:
                    self.runner(argv)
                except HostDnsError as err:  # the link may be gone already: still try the rest
                    failures.append(str(err))
            if failures:
                raise HostDnsError("; ".join(failures))
            return True
        saved = self._load_backup()
        if saved is None:
            return False
        current = None if self.resolv_conf.is_symlink() else _read(self.resolv_conf)
        if current is not None and current.startswith(MANAGED_MARKER):
            if saved["kind"] == "file":
                self._write_resolv_conf(str(saved["content"]), int(str(saved.get("mode", 0o644))))
            elif saved["kind"] == "symlink":
                tmp = self.resolv_conf.with_name(".resolv.conf.meshctl-tmp")
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                os.symlink(str(saved["target"]), tmp)
                os.replace(tmp, self.resolv_conf)
            else:
                self.resolv_conf.unlink()
        # else: someone (a DHCP client, an admin) replaced our file since: theirs wins.
        self.backup.unlink()
        return True

    recover = restore

    # -- helpers -----------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, object]:
        path = self.resolv_conf
        if path.is_symlink():
            return {"kind": "symlink", "target": os.readlink(path)}
        try:
            return {"kind": "file", "content": path.read_text(), "mode": path.stat().st_mode & 0o7777}
        except FileNotFoundError:
            return {"kind": "absent"}

    def _load_backup(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.backup.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise HostDnsError(f"the resolv.conf backup {self.backup} is unreadable: {err}",
                               hint="restore /etc/resolv.conf by hand, then delete the backup") from None
        if not isinstance(data, dict) or data.get("kind") not in ("file", "symlink", "absent"):
            raise HostDnsError(f"the resolv.conf backup {self.backup} is not one meshctl wrote")
        return data

    def _write_backup(self, saved: dict[str, object]) -> None:
        self.backup.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.backup.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(saved, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.backup)

    def _write_resolv_conf(self, text: str, mode: int) -> None:
        path = self.resolv_conf
        if path.is_symlink():
            # Replacing a symlink needs /etc writable; a regular file is rewritten in place below.
            tmp = path.with_name(".resolv.conf.meshctl-tmp")
            tmp.write_text(text)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
            return
        with open(path, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(path, mode)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m meshctl.agent.resolvconf restore [--config FILE] [--root DIR]`: put back a resolv.conf the agent left
    managed. The unit runs it after every stop (ExecStopPost), so a crashed or crash-looping agent does
    not leave the host pointing at a resolver that is gone; after a clean stop there is nothing to do."""
    parser = argparse.ArgumentParser(prog="python -m meshctl.agent.resolvconf")
    parser.add_argument("action", choices=["restore"])
    parser.add_argument("--config", type=Path, help="the agent's TOML config (for its state_dir)")
    parser.add_argument("--root", type=Path, default=Path("/"))
    args = parser.parse_args(argv)
    try:
        backup = None
        if args.config is not None and args.config.exists():
            # Only state_dir is wanted: a config the agent itself would refuse must not stop this clean-up.
            state_dir = tomllib.loads(args.config.read_text()).get("state_dir")
            if isinstance(state_dir, str):
                backup = Path(state_dir) / BACKUP.name
        restored = HostDns("", root=args.root, resolved=False, backup_path=backup).restore()
    except (HostDnsError, OSError, tomllib.TOMLDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("restored the host's resolv.conf" if restored else "nothing to restore")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
