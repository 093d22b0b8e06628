"""Results of a verification run: per-host check results, the mesh matrix, and their JSON and JUnit forms."""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CheckResult", "MatrixCell", "Outcome", "Report"]


class Outcome(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class CheckResult:
    host: str
    check: str
    outcome: Outcome
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class MatrixCell:
    """One ordered pair of the mesh: can `src` reach `dst` over the mesh, how fast, and by which path."""

    src: str
    dst: str
    reachable: bool
    rtt_ms: float | None
    path: str  # "direct", "relay(900)", or "unknown"
    message: str = ""


@dataclass(slots=True)
class Report:
    results: list[CheckResult] = field(default_factory=list)
    matrix: list[MatrixCell] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome is Outcome.FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed and all(c.reachable for c in self.matrix)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "failed": len(self.failed) + sum(1 for c in self.matrix if not c.reachable),
            "warnings": sum(1 for r in self.results if r.outcome is Outcome.WARN),
            "checks": [asdict(r) | {"outcome": r.outcome.value} for r in self.results],
            "matrix": [asdict(c) for c in self.matrix],
        }

    def to_junit(self) -> bytes:
        """JUnit XML: one testsuite per host (checks) plus one for the mesh matrix."""
        root = ET.Element("testsuites", name="meshctl verify", time=f"{self.seconds:.2f}")
        by_host: dict[str, list[CheckResult]] = {}
        for r in self.results:
            by_host.setdefault(r.host, []).append(r)
        for host, results in by_host.items():
            suite = ET.SubElement(root, "testsuite", name=host, tests=str(len(results)),
                                  failures=str(sum(r.outcome is Outcome.FAIL for r in results)))
            for r in results:
                case = ET.SubElement(suite, "testcase", classname=host, name=r.check, time=f"{r.seconds:.3f}")
                if r.outcome is Outcome.FAIL:
                    ET.SubElement(case, "failure", message=r.message).text = r.message
                elif r.outcome is Outcome.WARN:
                    ET.SubElement(case, "system-out").text = f"warning: {r.message}"
        if self.matrix:
            suite = ET.SubElement(root, "testsuite", name="mesh", tests=str(len(self.matrix)),
                                  failures=str(sum(not c.reachable for c in self.matrix)))
            for c in self.matrix:
                case = ET.SubElement(suite, "testcase", classname="mesh", name=f"{c.src} -> {c.dst}")
                if not c.reachable:
                    ET.SubElement(case, "failure", message=c.message).text = c.message
                else:
                    ET.SubElement(case, "system-out").text = f"rtt {c.rtt_ms} ms via {c.path}"
        return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))
