"""Errors raised by the lab: each says what was found and what was wanted, and the CLI prints one line."""

from __future__ import annotations

from ..errors import MeshctlError

__all__ = [
    "LabCommandError",
    "LabConflictError",
    "LabError",
    "LabHostError",
    "LabNotRunningError",
    "LabPrerequisiteError",
    "RootfsBuildError",
]


class LabError(MeshctlError):
    """Base of every lab error."""


class LabPrerequisiteError(LabError):
    """The machine cannot run a lab: not root, or a tool is missing."""

    def __init__(self, message: str, *, missing: tuple[str, ...] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.missing = missing


class LabNotRunningError(LabError):
    """No state file for the named lab: it was never brought up, or it was brought down."""

    def __init__(self, name: str, state_path: str) -> None:
        # the command is in the message itself: importers such as pyinfra show only str(err), never the hint
        super().__init__(f"lab {name!r} is not running (no {state_path}); start it with: meshctl lab up --name {name}")
        self.name = name
        self.state_path = state_path


class LabConflictError(LabError):
    """The lab cannot be created as asked: it exists with another shape, or its addresses are taken."""


class LabHostError(LabError):
    """A host did not come up, or the named host does not exist in the lab."""

    def __init__(self, message: str, *, host: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.host = host


class LabCommandError(LabError):
    """A system command the lab relies on failed."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        super().__init__(f"`{' '.join(argv)}` exited {returncode}: {detail}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class RootfsBuildError(LabError):
    """debootstrap or the rootfs customisation failed; nothing was left in the cache."""
