"""A verification run: every host's role checks in parallel over SSH, then the mesh-wide checks.

An unreachable host is one failed result ("unreachable") and does not stop the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from .checks import DEFAULT_CONTEXT, ROLE_CHECKS, CheckContext
from .errors import CheckFailed, CheckWarning, VerifyError
from .hosts import HostSpec, SshSession
from .mesh import authkey_reuse_refused, control_key_pinned, ping_matrix, stun_from_node
from .result import CheckResult, Outcome, Report

__all__ = ["planned_checks", "run_verify"]

Progress = Callable[[CheckResult], None]


def planned_checks(spec: HostSpec) -> list[tuple[str, str]]:
    """(role, check name) pairs a host will get, in order."""
    out: list[tuple[str, str]] = []
    for role in spec.roles:
        out += [(role, name) for name, _ in ROLE_CHECKS["all"] if not (name == "version" and out)]
        out += [(role, name) for name, _ in ROLE_CHECKS[role]]
    return out


def _run_one(host_name: str, name: str, fn: Callable[[], str]) -> CheckResult:
    start = time.monotonic()
    try:
        detail = fn()
        outcome, message = Outcome.PASS, detail
    except CheckWarning as w:
        outcome, message = Outcome.WARN, str(w)
    except CheckFailed as f:
        outcome, message = Outcome.FAIL, str(f)
    except RuntimeError as e:  # testinfra: ssh exit 255 (host unreachable or auth refused)
        outcome, message = Outcome.FAIL, f"unreachable over SSH: {str(e).strip()[:200]}"
    return CheckResult(host_name, name, outcome, message, time.monotonic() - start)


def _host_checks(session: SshSession, spec: HostSpec, base: CheckContext, progress: Progress | None
                 ) -> list[CheckResult]:
    results: list[CheckResult] = []
    host = session.host(spec.name)
    reach = _run_one(spec.name, "ssh", lambda: host.check_output("true") or "reachable")
    if reach.outcome is Outcome.FAIL:
        if progress:
            progress(reach)
        return [reach]
    seen: set[str] = set()
    for role in spec.roles:
        ctx = replace(base, role=role)
        for name, fn in ROLE_CHECKS["all"] + ROLE_CHECKS[role]:
            label = name if name not in ("unit files",) else f"{name} ({role})"
            if label in seen:
                continue
            seen.add(label)
            r = _run_one(spec.name, label, lambda fn=fn, ctx=ctx: fn(host, ctx))  # type: ignore[misc]
            results.append(r)
            if progress:
                progress(r)
    return results


def run_verify(specs: list[HostSpec], *, ctx: CheckContext = DEFAULT_CONTEXT, matrix: bool = True,
               progress: Progress | None = None, parallel: int = 8) -> Report:
    """Run every check on every host (parallel across hosts), then the mesh-wide checks."""
    if not specs:
        raise VerifyError("no hosts to verify (empty inventory, or --limit matched nothing)")
    start = time.monotonic()
    report = Report()
    with SshSession(specs) as session:
        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(specs)))) as pool:
            for results in pool.map(lambda s: _host_checks(session, s, ctx, progress), specs):
                report.results.extend(results)
        unreachable = {r.host for r in report.results if r.check == "ssh"}
        controls = [s for s in specs if "control" in s.roles and s.name not in unreachable]
        nodes = [s for s in specs if "node" in s.roles and s.name not in unreachable]
        if controls and nodes:
            r = _run_one(controls[0].name, "control key pinned on nodes",
                         lambda: f"{len(control_key_pinned(session, controls[0], nodes))} nodes pin the served key")
            report.results.append(r)
            r2 = _run_one(controls[0].name, "used auth key refused",
                          lambda: authkey_reuse_refused(session, controls[0]))
            report.results.append(r2)
            for x in (r, r2):
                if progress:
                    progress(x)
        derps = [s for s in specs if "derp" in s.roles and s.name not in unreachable]
        for d in derps:
            for n in nodes:
                r3 = _run_one(n.name, f"STUN to {d.name}",
                              lambda d=d, n=n: stun_from_node(session, d, n))  # type: ignore[misc]
                report.results.append(r3)
                if progress:
                    progress(r3)
        if matrix and len(nodes) > 1:
            report.matrix = ping_matrix(session, nodes)
    report.seconds = time.monotonic() - start
    return report
