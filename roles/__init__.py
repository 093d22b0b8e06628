"""meshctl's pyinfra roles, applied by `meshctl deploy` in the order common, control, derp, node, ssh.

Loaded by file path as the private package `meshctl_roles` (see `meshctl.deploy.roles`), not importable as `roles`.
"""

from __future__ import annotations
