"""Defaults of the `common` role (inventory data overrides them)."""

from __future__ import annotations

DEFAULTS = {
    # where the toolkit's virtualenv lives (the contract path; units run /opt/meshctl/bin/meshctl)
    "meshctl_prefix": "/opt/meshctl",
    # interpreter the virtualenv is made with
    "meshctl_python": "python3",
}
