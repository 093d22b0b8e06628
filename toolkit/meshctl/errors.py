"""The root of meshctl's error hierarchy; every package's errors derive from MeshctlError.

    MeshctlError
    ├── KeysError                     (meshctl.keys)
    │   ├── KeyFormatError (+ValueError)
    │   ├── KeyTypeMismatchError (+ValueError)
    │   └── KeyFileError
    │       └── KeyFileModeError
    ├── ProtocolError
    │   ├── LocalProtocolError        we misused a protocol
    │   └── RemoteProtocolError       the peer sent something invalid
    ├── ConfigError                   a config, workspace or inventory is wrong
    └── (per-package errors: ControlError, DerpError, StunError, AgentError, LabError,
         DeployError, VerifyError, RotateError)

The CLI turns any MeshctlError into one readable line and a non-zero exit; a traceback is a bug.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "LocalProtocolError",
    "MeshctlError",
    "ProtocolError",
    "RemoteProtocolError",
]


class MeshctlError(Exception):
    """Base of every error meshctl raises on purpose. `str(err)` is the one line a user sees."""

    #: a hint on what to do, appended to the one-line message by the CLI
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ProtocolError(MeshctlError):
    """A wire protocol was violated."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class ConfigError(MeshctlError):
    """A configuration file, workspace or inventory is missing or wrong."""
