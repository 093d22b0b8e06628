"""Shared by the service roles: install a config and a systemd unit, restart only when something changed.

Operation order matters: the guarded restart comes *before* "running + enabled", so a first deploy starts the
service once (restart is a no-op on a stopped unit) and a re-run with nothing changed runs no command at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import StringIO
from typing import Any

from pyinfra.operations import files, systemd


def put_text(name: str, text: str, dest: str, mode: str) -> Any:
    """Upload rendered text (idempotent: compared by SHA1 with the remote file)."""
    return files.put(name=name, src=StringIO(text), dest=dest, mode=mode, user="root", group="root")


def put_secret(name: str, text: str, dest: str) -> Any:
    """Upload a secret 0600: the file is created 0600 *before* its content arrives (an upload as root writes
    into the existing file, keeping its mode), so the secret is never readable by others, not even briefly."""
    files.file(name=f"{name} (0600 before content)", path=dest, present=True, mode="600", user="root", group="root")
    return put_text(name, text, dest, "600")


def ensure_service(unit: str, unit_text: str, changed: Sequence[Any], upgraded: bool) -> None:
    """Install `/etc/systemd/system/<unit>`; restart it if the unit, a config in `changed` or the toolkit changed."""
    unit_op = put_text(f"unit {unit}", unit_text, f"/etc/systemd/system/{unit}", "644")
    systemd.daemon_reload(name="systemd daemon-reload", _if=unit_op.did_change)
    watched = [unit_op, *changed]

    def needs_restart() -> bool:
        return upgraded or any(op.did_change() for op in watched)

    systemd.service(name=f"restart {unit}", service=unit, restarted=True, _if=needs_restart)
    systemd.service(name=f"start {unit}", service=unit, running=True, enabled=True)
