"""Running system commands (`ip`, `wg`, `nft`) from the agent: one injectable seam, typed failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from .errors import WireGuardError

__all__ = ["CommandRunner", "SubprocessRunner"]

log = logging.getLogger(__name__)


class CommandRunner(Protocol):
    async def run(self, argv: Sequence[str], *, stdin: bytes | None = None, check: bool = True) -> tuple[int, str]:
        """Run argv; return (exit code, stdout). With check, a non-zero exit raises WireGuardError.
        `stdin` carries secrets (private keys) so they never appear in argv or the log."""
        ...


class SubprocessRunner:
    """The real runner: asyncio subprocesses, stderr captured into the error."""

    async def run(self, argv: Sequence[str], *, stdin: bytes | None = None, check: bool = True) -> tuple[int, str]:
        log.debug("run: %s", " ".join(argv))
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin)
        code = proc.returncode if proc.returncode is not None else -1
        if check and code != 0:
            raise WireGuardError("command", command=" ".join(argv[:4]), stderr=err.decode(errors="replace"))
        return code, out.decode(errors="replace")
