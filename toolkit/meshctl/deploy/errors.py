"""Errors of the deploy package: a broken inventory, a failed phase, a wheelhouse that cannot be built."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, MeshctlError

__all__ = ["DeployError", "InventoryError", "RoleError", "WheelhouseError"]


class DeployError(MeshctlError):
    """A deploy could not proceed (before or between its phases)."""


class InventoryError(ConfigError):
    """An inventory file is unusable; raised before any host is contacted.

    `path` is the inventory file, `host`/`key` name the offending entry when there is one.
    """

    def __init__(self, path: Path | str, problem: str, *, host: str | None = None, key: str | None = None,
                 hint: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.host = host
        self.key = key
        super().__init__(f"inventory {self.path.name}: {problem}", hint=hint)


class RoleError(DeployError):
    """A role directory or module is missing or malformed (an installation problem)."""


class WheelhouseError(DeployError):
    """The wheelhouse of meshctl and its dependencies could not be built on this machine."""
