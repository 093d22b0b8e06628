"""Key rotation (DESIGN §7): due-date policy, deploy-key, node-key and DERP mesh-key rotation, key audit.

Public API: `policy` (`node_key_due`, `host_cert_due`, `deploy_key_due`), `deploykey.rotate_deploy_key`,
`nodekeys.rotate_node_keys`, `meshkey` (multi-key mesh-key files with an overlap window), `audit.audit_keys`.
"""

from __future__ import annotations

from .errors import HostStepError, RotateError, RotationAbortedError

__all__ = ["HostStepError", "RotateError", "RotationAbortedError"]
