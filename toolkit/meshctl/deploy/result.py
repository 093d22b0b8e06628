"""What a deploy did (or, with --dry-run, would do): per host, per operation, and the JSON shape of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["DeployResult", "HostResult", "OpResult", "ProgressSink"]


@dataclass(frozen=True)
class OpResult:
    role: str
    name: str
    changed: bool
    success: bool

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "changed": self.changed, "success": self.success}


@dataclass
class HostResult:
    name: str
    ops: list[OpResult] = field(default_factory=list)
    error: str | None = None
    roles: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return sum(1 for op in self.ops if op.changed)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_json(self) -> dict[str, Any]:
        return {"changed": self.changed, "roles": list(self.roles), "ops": [op.to_json() for op in self.ops],
                "error": self.error}


@dataclass
class DeployResult:
    hosts: dict[str, HostResult]
    dry_run: bool = False
    seconds: float = 0.0
    control_key: str | None = None

    @property
    def changed(self) -> int:
        """Operations that changed something (would change, with --dry-run); 0 on a no-change re-run."""
        return sum(h.changed for h in self.hosts.values())

    @property
    def failed(self) -> list[str]:
        return sorted(name for name, h in self.hosts.items() if h.failed)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {"changed": self.changed, "failed": self.failed, "dry_run": self.dry_run,
                "seconds": round(self.seconds, 2), "control_key": self.control_key,
                "hosts": {name: h.to_json() for name, h in sorted(self.hosts.items())}}


class ProgressSink(Protocol):
    """Live progress of a deploy (the CLI draws it with rich on stderr; tests record it)."""

    def phase_started(self, role: str, ops_per_host: dict[str, int]) -> None: ...

    def op_done(self, host: str, role: str, name: str, changed: bool, success: bool) -> None: ...

    def host_failed(self, host: str, role: str, error: str) -> None: ...

    def phase_finished(self, role: str) -> None: ...
