"""Live deploy progress with rich on stderr (one bar per host, current role and operation), and the summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from .result import DeployResult

__all__ = ["RichProgress", "summary_table"]


class RichProgress:
    """A `ProgressSink` drawing per-host bars; use as a context manager around the deploy."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.fields[host]:<12}"),
                                 TextColumn("{task.fields[role]:<8}"), BarColumn(bar_width=24),
                                 MofNCompleteColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=console, disable=not enabled, transient=False)
        self.tasks: dict[str, TaskID] = {}
        self.failed: set[str] = set()

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def _task(self, host: str) -> TaskID:
        if host not in self.tasks:
            self.tasks[host] = self.progress.add_task("", host=host, role="", total=0)
        return self.tasks[host]

    def phase_started(self, role: str, ops_per_host: dict[str, int]) -> None:
        for host, n in ops_per_host.items():
            if host in self.failed:
                continue
            self.progress.update(self._task(host), role=role, total=n, completed=0,
                                 description="planned" if n else "nothing to do")

    def op_done(self, host: str, role: str, name: str, changed: bool, success: bool) -> None:
        mark = "changed" if changed else ("ok" if success else "FAILED")
        self.progress.update(self._task(host), advance=1, description=f"{name} ({mark})")

    def host_failed(self, host: str, role: str, error: str) -> None:
        self.failed.add(host)
        self.progress.update(self._task(host), role=role, description=f"FAILED: {error}")

    def phase_finished(self, role: str) -> None:
        for host, task in self.tasks.items():
            if host not in self.failed and self.progress.tasks[task].fields.get("role") == role:
                self.progress.update(task, description="done")


def summary_table(result: DeployResult) -> Table:
    """Changes per host and role; failed hosts with their error."""
    title = "would change (dry run)" if result.dry_run else "deploy summary"
    table = Table(title=f"{title}: {result.changed} change(s), {len(result.failed)} failed host(s), "
                        f"{result.seconds:.1f}s")
    table.add_column("host")
    table.add_column("roles")
    table.add_column("ops", justify="right")
    table.add_column("changed", justify="right")
    table.add_column("result")
    for name, host in sorted(result.hosts.items()):
        per_role = {role: sum(1 for op in host.ops if op.changed and op.role == role) for role in host.roles}
        changes = ", ".join(f"{role} {n}" for role, n in per_role.items() if n)
        status = f"FAILED: {host.error}" if host.error else (f"changed: {changes}" if changes else "no change")
        table.add_row(name, ",".join(host.roles), str(len(host.ops)), str(host.changed), status)
    return table
