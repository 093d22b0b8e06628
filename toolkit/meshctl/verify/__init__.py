"""`meshctl verify`: testinfra checks per role and mesh-wide checks over the deploy's SSH settings.

Public API: `checks` (reusable check functions taking a testinfra `host`), `run_verify(specs)`,
`hosts_from_inventory(spec)`, `HostSpec`, `Report`/`CheckResult`/`MatrixCell`/`Outcome`, errors.
"""

from __future__ import annotations

from . import checks
from .errors import CheckFailed, CheckWarning, VerifyError
from .hosts import HostSpec, SshSession, hosts_from_inventory
from .result import CheckResult, MatrixCell, Outcome, Report
from .runner import planned_checks, run_verify

__all__ = [
    "CheckFailed",
    "CheckResult",
    "CheckWarning",
    "HostSpec",
    "MatrixCell",
    "Outcome",
    "Report",
    "SshSession",
    "VerifyError",
    "checks",
    "hosts_from_inventory",
    "planned_checks",
    "run_verify",
]
