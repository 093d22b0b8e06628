"""The node agent's errors: every one names what was found and what was wanted."""

from __future__ import annotations

from ..errors import ConfigError, MeshctlError, RemoteProtocolError

__all__ = [
    "AgentConfigError",
    "AgentError",
    "DiscoError",
    "RegistrationError",
    "WireGuardError",
]


class AgentError(MeshctlError):
    """Base of the node agent's errors."""


class AgentConfigError(ConfigError, AgentError):
    """The agent's TOML config (or a file it names) is missing or wrong."""

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message, hint=hint)
        self.path = path


class DiscoError(RemoteProtocolError, AgentError):
    """A disco packet could not be parsed or opened."""


class WireGuardError(AgentError):
    """A WireGuard command (`ip`, `wg`, `wireguard-go`) failed."""

    def __init__(self, message: str, *, command: str = "", stderr: str = "", hint: str | None = None) -> None:
        detail = f"{message}: {command!s} failed" if command else message
        if stderr:
            detail += f": {stderr.strip().splitlines()[-1]}"
        super().__init__(detail, hint=hint)
        self.command = command
        self.stderr = stderr


class RegistrationError(AgentError):
    """The control server refused to register this node."""
