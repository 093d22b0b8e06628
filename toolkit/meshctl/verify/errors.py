"""Errors of `meshctl verify`: a failed check carries what was found and what was wanted."""

from __future__ import annotations

from ..errors import MeshctlError

__all__ = ["CheckFailed", "CheckWarning", "VerifyError"]


class VerifyError(MeshctlError):
    """Verification could not run (no hosts, broken inventory, cannot write a report)."""


class CheckFailed(AssertionError):
    """A check found something wrong. An AssertionError, so checks read naturally inside a user's pytest suite."""


class CheckWarning(Exception):
    """A check passed but found something that needs attention soon (e.g. a key expiring within 14 days)."""
