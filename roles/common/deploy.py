"""Role `common`: WireGuard tools and the meshctl toolkit in a virtualenv, on every host.

Packages: wireguard-tools and python3-venv everywhere, wireguard-go only where the kernel has no WireGuard.
The toolkit is installed from a wheelhouse built on the operator machine (one tar of wheels: meshctl and
its dependencies), uploaded and installed with `pip --no-index`, so hosts never need a package index.
An install marker holding the wheelhouse key makes a re-run a no-op; the runner learns from the install
operation whether the toolkit changed (services restart only then, or when their config changed).
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, pip, server

from .defaults import DEFAULTS

MARKER = ".meshctl-install"
CACHE_DIR = "/var/cache/meshctl"

#: prints "kernel" when the running kernel has (or can load) WireGuard, else "userspace"
KERNEL_WG_PROBE = ("{ test -d /sys/module/wireguard || modprobe -nq wireguard; } 2>/dev/null "
                   "&& echo kernel || echo userspace")


def wanted_packages(kernel_wireguard: bool) -> list[str]:
    """Debian packages the mesh needs on a host."""
    return ["wireguard-tools", "python3-venv"] + ([] if kernel_wireguard else ["wireguard-go"])


def install_script(prefix: str, tar_path: str, key: str) -> str:
    """Shell that installs the uploaded wheelhouse into the venv and records the wheelhouse key."""
    q = shlex.quote
    unpack = f"{CACHE_DIR}/wheelhouse"
    return " && ".join([
        f"rm -rf {q(unpack)}", f"mkdir -p {q(unpack)}", f"tar -xf {q(tar_path)} -C {q(unpack)}",
        # meshctl itself is force-reinstalled (a changed checkout keeps its version number), then its deps
        f"{q(prefix)}/bin/pip install -q --no-index --find-links {q(unpack)} --force-reinstall --no-deps "
        f"{q(unpack)}/meshctl-*.whl",
        f"{q(prefix)}/bin/pip install -q --no-index --find-links {q(unpack)} {q(unpack)}/meshctl-*.whl",
        f"echo {q(key)} > {q(prefix)}/{MARKER}",
        f"rm -rf {q(unpack)} {q(tar_path)}",
    ])


@deploy("common", data_defaults=DEFAULTS)
def apply(wheelhouse_tar: str, wheelhouse_key: str, installs: dict[str, Any]) -> None:
    """`installs[host name]` receives the install operation when the installed toolkit does not match."""
    prefix = str(host.data.meshctl_prefix)
    kernel_wg = (host.get_fact(Command, command=KERNEL_WG_PROBE) or "").strip() == "kernel"
    installed = host.get_fact(DebPackages) or {}
    missing = [p for p in wanted_packages(kernel_wg) if p not in installed]
    if missing:
        apt.packages(name=f"install {' '.join(missing)}", packages=missing, update=True, no_recommends=True)
    pip.venv(name=f"virtualenv {prefix}", path=prefix, python=str(host.data.meshctl_python))
    current = (host.get_fact(Command, command=f"cat {shlex.quote(prefix)}/{MARKER} 2>/dev/null || true") or "").strip()
    if current == wheelhouse_key:
        return
    files.directory(name=f"directory {CACHE_DIR}", path=CACHE_DIR, mode="700")
    tar_dest = f"{CACHE_DIR}/wheelhouse-{wheelhouse_key}.tar"
    files.put(name="upload wheelhouse", src=wheelhouse_tar, dest=tar_dest, mode="600")
    installs[host.name] = server.shell(name=f"install meshctl {wheelhouse_key}",
                                       commands=[install_script(prefix, tar_dest, wheelhouse_key)])
