"""Console output shared by the command groups: human output on stdout, progress and errors on stderr."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

from ..errors import MeshctlError

__all__ = ["console", "emit_json", "err_console", "render_error"]

console = Console(highlight=False, soft_wrap=True, markup=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(data: Any) -> None:
    """Print machine-readable JSON on stdout (no rich markup, no wrapping)."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def render_error(err: MeshctlError) -> None:
    """One readable line (plus the hint, if any) on stderr."""
    line = f"error: {err}"
    if err.hint:
        line += f" ({err.hint})"
    err_console.print(line, markup=False)
