"""Role `ssh`: placeholder, applied last to every host; deliberately does nothing yet.

The rotation work fills it in (SSH host certificates from the mesh CA, `@cert-authority` known-hosts,
the deploy key's add → verify → remove rotation). It runs no operation, so it never reports a change.
"""

from __future__ import annotations

from pyinfra.api import deploy

from .defaults import DEFAULTS


@deploy("ssh", data_defaults=DEFAULTS)
def apply() -> None:
    """No operation (see the module docstring)."""
