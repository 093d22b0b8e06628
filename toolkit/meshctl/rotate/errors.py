"""Errors of key rotation: a host that failed a step, a plan that cannot start."""

from __future__ import annotations

from ..errors import MeshctlError

__all__ = ["HostStepError", "RotateError", "RotationAbortedError"]


class RotateError(MeshctlError):
    """A rotation could not be planned or carried out."""


class HostStepError(RotateError):
    """One step of a rotation failed on one host (what was run, what came back)."""

    def __init__(self, host: str, step: str, detail: str, *, hint: str | None = None) -> None:
        super().__init__(f"{host}: {step} failed: {detail}", hint=hint)
        self.host = host
        self.step = step
        self.detail = detail


class RotationAbortedError(RotateError):
    """A rotation stopped before its destructive step; nothing was removed anywhere."""

    def __init__(self, what: str, failed: dict[str, str], *, hint: str | None = None) -> None:
        hosts = ", ".join(f"{h} ({why})" for h, why in sorted(failed.items()))
        super().__init__(f"{what} stopped before removing anything: {hosts}", hint=hint)
        self.what = what
        self.failed = dict(failed)
