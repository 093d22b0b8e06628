"""Command `meshctl verify`: prove a deployment works, host by host and pair by pair."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from ..deploy.inventory import load_inventory
from ..verify import Outcome, Report, hosts_from_inventory, planned_checks, run_verify
from ..verify.errors import VerifyError
from .output import console, emit_json, err_console

__all__ = ["register", "render_report"]

_MARK = {Outcome.PASS: "pass", Outcome.WARN: "WARN", Outcome.FAIL: "FAIL"}


def render_report(report: Report) -> None:
    table = Table(title="checks", show_lines=False)
    for col in ("host", "check", "result", "detail"):
        table.add_column(col, overflow="fold")
    for r in report.results:
        table.add_row(r.host, r.check, _MARK[r.outcome], r.message)
    console.print(table)
    if report.matrix:
        m = Table(title="mesh (each ordered pair over mesh addresses)")
        for col in ("from", "to", "reachable", "rtt ms", "path"):
            m.add_column(col)
        for c in report.matrix:
            m.add_row(c.src, c.dst, "yes" if c.reachable else f"NO: {c.message}",
                      f"{c.rtt_ms:.2f}" if c.rtt_ms is not None else "-", c.path)
        console.print(m)
    bad = len(report.failed) + sum(not c.reachable for c in report.matrix)
    warns = sum(r.outcome is Outcome.WARN for r in report.results)
    verdict = "healthy" if report.ok else f"{bad} failure(s)"
    console.print(f"verify: {verdict}, {warns} warning(s), {len(report.results)} checks, "
                  f"{len(report.matrix)} pairs in {report.seconds:.1f}s")


def verify(
    inventory: Annotated[Path, typer.Option("--inventory", "-i", help="pyinfra inventory file.")],
    limit: Annotated[str | None, typer.Option("--limit", help="Only these hosts (comma-separated).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")] = False,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML here.")] = None,
    no_matrix: Annotated[bool, typer.Option("--no-matrix", help="Skip the ping matrix.")] = False,
) -> None:
    """Run testinfra checks on every host (parallel) and the mesh-wide ping matrix; exit 1 if anything fails."""
    spec = load_inventory(inventory)
    wanted = [h.strip() for h in limit.split(",")] if limit else None
    specs = hosts_from_inventory(spec, wanted)
    if wanted and len(specs) != len(wanted):
        unknown = sorted(set(wanted) - {s.name for s in specs})
        raise VerifyError(f"--limit names hosts not in {inventory}: {', '.join(unknown)}")
    total = sum(len(planned_checks(s)) for s in specs)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=err_console, transient=True, disable=json_out or not err_console.is_terminal) as bar:
        task = bar.add_task("verifying", total=total)
        report = run_verify(specs, matrix=not no_matrix,
                            progress=lambda r: bar.update(task, advance=1, description=f"{r.host}: {r.check}"))
    if junit is not None:
        try:
            junit.write_bytes(report.to_junit())
        except OSError as e:
            raise VerifyError(f"cannot write {junit}: {e.strerror}") from None
    if json_out:
        emit_json(report.to_json())
    else:
        render_report(report)
    if not report.ok:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
