"""The one place the lab runs system commands: `ip`, `iptables`, `mount`, `ssh-keygen`, `debootstrap`.

Thin on purpose: argv in, stdout out, a `LabCommandError` (with the command's last stderr line) on failure.
`in_netns` prefixes `ip netns exec NS` so a command runs inside one of the lab's namespaces.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from .errors import LabCommandError

__all__ = ["in_netns", "run", "run_ok"]


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 120.0, input_text: str | None = None) -> str:
    """Run `argv`, return its stdout; raise LabCommandError when it fails and `check` is true."""
    proc = subprocess.run(
        list(argv),
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise LabCommandError(list(argv), proc.returncode, proc.stderr)
    return proc.stdout


def run_ok(argv: Sequence[str], *, timeout: float = 60.0) -> bool:
    """Run `argv` for its exit status only (clean-up paths, probes): true when it exited 0."""
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    return proc.returncode == 0


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """`argv` run inside the named network namespace."""
    return ["ip", "netns", "exec", netns, *argv]
