"""Defaults of the `ssh` role (none yet; the rotation work fills this role in)."""

from __future__ import annotations

DEFAULTS: dict[str, object] = {}
