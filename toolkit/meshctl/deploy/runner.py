"""The deploy runner: roles applied in phases through pyinfra's Python API, in-process (never its CLI).

    common (every targeted host) → control → derp → node + ssh

Each phase is its own pyinfra `State` over a fresh `Inventory`: connect, add the role's deploy per host,
`run_ops`, read back facts, disconnect. Between phases the runner reads what later roles need from hosts:
the control server's public key (`control.pub`, written by the server at first start), which nodes are
registered already (a `node.key` exists), which DERP hosts hold an admission token; and it mints one-off
auth keys and DERP tokens by running `meshctl control …` on the control host. Minting is a fact read, not
an operation, and happens only for hosts that need it, so a re-run reports zero changes.

A host that cannot be reached or whose operation fails is recorded with its error and left out of later
phases; the other hosts proceed. With `dry_run` nothing is executed: each phase is planned against the
hosts' current facts and the operations that would change are reported.
"""

from __future__ import annotations

import logging
import re
import secrets
import shlex
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from pyinfra.api.state import BaseStateCallback

from ..keys import write_secret_file
from ..workspace import Workspace
from .inventory import InventorySpec
from .mesh import MeshPlan, plan_mesh
from .result import DeployResult, HostResult, OpResult, ProgressSink
from .roles import load_role, role_defaults
from .wheelhouse import Wheelhouse

__all__ = ["DeployOptions", "Deployment", "run_deploy"]

MESHCTL = "/opt/meshctl/bin/meshctl"
CONTROL_STATE_DIR = "/var/lib/meshctl/control"
CONTROL_PUB = f"{CONTROL_STATE_DIR}/control.pub"
AGENT_NODE_KEY = "/var/lib/meshctl/agent/node.key"
DERP_TOKEN = "/etc/meshctl/derp-token"
PUB_WAIT_SECONDS = 30
_AUTH_KEY = re.compile(r"mskey-auth-[0-9a-f]+-[0-9a-f]+")
_DERP_TOKEN = re.compile(r"mskey-derp-[0-9a-f]+-[0-9a-f]+")
_CONTROL_KEY = re.compile(r"ctrlkey:[0-9a-f]{64}")
PLACEHOLDER = "(minted at deploy time)"


@dataclass(frozen=True)
class DeployOptions:
    limit: tuple[str, ...] | None = None
    dry_run: bool = False
    connect_timeout: int = 10
    parallel: int = 50


def _conditions_hold(conditions: Any) -> bool:
    """pyinfra's `_if`: one callable or a list of them, all of which must hold."""
    checks = conditions if isinstance(conditions, list | tuple) else [conditions]
    return all(bool(check()) for check in checks)


class _Reporter(BaseStateCallback):
    """pyinfra state callback feeding live progress and collecting connect errors."""

    def __init__(self, deployment: Deployment, role_of: dict[tuple[str, str], str]) -> None:
        self.d = deployment
        self.role_of = role_of
        self.connect_errors: dict[str, str] = {}

    def _op(self, state: Any, host: Any, op_hash: str, success: bool) -> None:
        od = state.get_op_data_for_host(host, op_hash)
        name = str(od.global_arguments.get("name") or op_hash)
        role = self.role_of.get((host.name, op_hash), "?")
        meta = od.operation_meta
        changed = bool(success and meta.executed)
        if self.d.progress is not None:
            self.d.progress.op_done(host.name, role, name, changed, success)

    def operation_host_success(  # type: ignore[override]
        self, state: Any, host: Any, op_hash: str, retry_count: int = 0) -> None:
        self._op(state, host, op_hash, True)

    def operation_host_error(  # type: ignore[override]
        self, state: Any, host: Any, op_hash: str, retry_count: int = 0,
        max_retries: int = 0,
    ) -> None:
        self._op(state, host, op_hash, False)

    def host_connect_error(  # type: ignore[override]
        self, state: Any, host: Any, error: Any) -> None:
        self.connect_errors[host.name] = str(error.args[0] if getattr(error, "args", None) else error)


class Deployment:
    """One `meshctl deploy` run over an inventory; `run()` returns the `DeployResult`."""

    def __init__(self, spec: InventorySpec, workspace: Workspace, wheelhouse: Wheelhouse,
                 options: DeployOptions | None = None, progress: ProgressSink | None = None) -> None:
        self.spec = spec
        self.workspace = workspace
        self.wheelhouse = wheelhouse
        self.options = options or DeployOptions()
        self.progress = progress
        limit = self.options.limit
        spec.check_limit(limit)
        self.targets = [h for h in spec.hosts if not limit or h in limit]
        self.plan: MeshPlan = plan_mesh(workspace, spec, role_defaults("derp"))
        self.hosts = {h: HostResult(h) for h in self.targets}
        self.upgraded: dict[str, bool] = {}
        self.control_key: str | None = None

    # -- plumbing -------------------------------------------------------------------------------------------

    def _alive(self, names: Sequence[str]) -> list[str]:
        return [h for h in names if h in self.hosts and not self.hosts[h].failed]

    def _fail(self, host: str, role: str, error: str) -> None:
        result = self.hosts.get(host)
        if result is None or result.failed:
            return
        result.error = f"{role}: {error}"
        if self.progress is not None:
            self.progress.host_failed(host, role, error)

    def _base_data(self) -> dict[str, Any]:
        """Lowest-precedence data: connect as root with the workspace deploy key unless the inventory says else."""
        data: dict[str, Any] = {"ssh_user": "root", "ssh_connect_retries": 1}
        if self.workspace.deploy_key.is_file():
            data["ssh_key"] = str(self.workspace.deploy_key)
        return data

    @contextmanager
    def _connected(self, role: str, names: Sequence[str]) -> Iterator[tuple[Any, dict[str, Any], _Reporter]]:
        from pyinfra.api.config import Config
        from pyinfra.api.connect import connect_all, disconnect_all
        from pyinfra.api.exceptions import PyinfraError
        from pyinfra.api.state import State

        inventory = self.spec.build(names, base_data=self._base_data())
        config = Config(  # type: ignore[no-untyped-call]
                        PARALLEL=min(self.options.parallel, max(1, len(names))),
                        CONNECT_TIMEOUT=self.options.connect_timeout, FAIL_PERCENT=None)
        state = State(inventory, config)
        role_of: dict[tuple[str, str], str] = {}
        reporter = _Reporter(self, role_of)
        state.callback_handlers.append(reporter)
        try:
            connect_all(state)
        except PyinfraError:
            pass  # every host failed to connect: reported below
        hosts = {h.name: h for h in inventory}
        for name, host in hosts.items():
            if host not in state.active_hosts:
                err = reporter.connect_errors.get(name, "could not connect")
                self._fail(name, role, f"unreachable: {err}")
        active = {n: h for n, h in hosts.items() if h in state.active_hosts}
        try:
            yield state, active, reporter
        finally:
            try:
                disconnect_all(state)
            except Exception:  # noqa: S110 - a failing disconnect must not hide the deploy's result
                pass

    def _command(self, state: Any, host: Any, command: str) -> str:
        """Run a read-only command on `host` as a fact; '' when it printed nothing."""
        from pyinfra.api.facts import get_fact
        from pyinfra.context import ctx_host, ctx_state
        from pyinfra.facts.server import Command

        with ctx_state.use(state), ctx_host.use(host):
            out = get_fact(state, host, Command, kwargs={"command": command})
        return str(out or "")

    def _apply(self, state: Any, active: Mapping[str, Any],
               steps: Sequence[tuple[str, Sequence[str], Callable[[str], dict[str, Any]]]],
               reporter: _Reporter) -> None:
        """Add each step's role for its hosts (those still alive), run the phase once, record per-op results.

        pyinfra runs every operation of a State in one `run_ops`; a second call would re-run the first ones,
        so all roles of a phase are added before it runs.
        """
        from pyinfra.api.deploy import add_deploy
        from pyinfra.api.exceptions import PyinfraError
        from pyinfra.api.operations import run_ops

        def prepare(name: str) -> list[tuple[str, str, list[str]]]:
            """Plan every step for one host (facts are read here), in role order."""
            host = active[name]
            out: list[tuple[str, str, list[str]]] = []
            for role, names, kwargs_for in steps:
                if name not in names or self.hosts[name].failed:
                    continue
                before = len(host.op_hash_order)
                try:
                    add_deploy(state, load_role(role), host=host, **kwargs_for(name))
                except Exception as err:  # a role failing at plan time (e.g. a fact it needs errored)
                    self._fail(name, role, f"{type(err).__name__}: {err}")
                    continue
                out.append((role, name, list(host.op_hash_order[before:])))
            return out

        # hosts are planned in parallel greenlets, as pyinfra's own CLI does (op identity is per host in API mode)
        names = [n for n in self._alive([n for _, ns, _ in steps for n in ns]) if n in active]
        names = list(dict.fromkeys(names))
        from pyinfra.context import ctx_state

        with ctx_state.use(state):  # the state context is shared, not greenlet-local: hold it for them all
            greenlets = {n: state.pool.spawn(prepare, n) for n in names}
            state.pool.join()
        planned: list[tuple[str, str, list[str]]] = []  # role, host, op hashes
        for name, greenlet in greenlets.items():
            try:
                planned.extend(greenlet.get())
            except Exception as err:
                self._fail(name, "plan", f"{type(err).__name__}: {err}")
        for role, name, ops in planned:
            for op_hash in ops:
                reporter.role_of[(name, op_hash)] = role
            self.hosts[name].roles.append(role)
        label = "+".join(role for role, _, _ in steps)
        per_host: dict[str, int] = {}
        for _, name, ops in planned:
            per_host[name] = per_host.get(name, 0) + len(ops)
        if self.progress is not None:
            self.progress.phase_started(label, per_host)
        if not self.options.dry_run and any(ops for _, _, ops in planned):
            try:
                run_ops(state)
            except PyinfraError:
                pass  # failed hosts are recorded below
        for role, name, ops in planned:
            self._collect(state, active[name], role, ops)
        if self.progress is not None:
            self.progress.phase_finished(label)

    def _collect(self, state: Any, host: Any, role: str, op_hashes: list[str]) -> None:
        from pyinfra.connectors.util import CommandOutput
        from pyinfra.context import ctx_host, ctx_state

        result = self.hosts[host.name]
        ops: list[tuple[str, bool, bool, bool]] = []  # name, changed, success, conditional
        error: str | None = None
        for op_hash in op_hashes:
            od = state.get_op_data_for_host(host, op_hash)
            name = str(od.global_arguments.get("name") or op_hash)
            meta = od.operation_meta
            conditional = bool(od.global_arguments.get("_if"))
            if self.options.dry_run:
                with ctx_state.use(state), ctx_host.use(host):
                    will = bool(meta.will_change) and (not conditional or _conditions_hold(od.global_arguments["_if"]))
                # this plan is never executed: record the predicted outcome as the op's result, so that
                # later `_if` conditions (restart if the config changed) are evaluated against it exactly
                meta.set_complete(True, ["(dry run)"] if will else [], CommandOutput([]))
                ops.append((name, will, True, conditional))
            elif meta.is_complete():
                ok = bool(meta.did_succeed())
                ops.append((name, ok and meta.executed, ok, False))
                if not ok and error is None:
                    lines = [ln for ln in meta.stderr_lines + meta.stdout_lines if ln.strip()]
                    error = f"{name} failed" + (f": {lines[-1].strip()}" if lines else "")
            else:
                ops.append((name, False, False, False))
                if error is None and host in state.failed_hosts:
                    error = f"{name} not run (host failed earlier)"
        result.ops.extend(OpResult(role, n, changed, ok) for n, changed, ok, _ in ops)
        if error is not None:
            self._fail(host.name, role, error)

    # -- phases ---------------------------------------------------------------------------------------------

    def _phase_common(self) -> None:
        names = self._alive(self.targets)
        if not names:
            return
        installs: dict[str, Any] = {}
        with self._connected("common", names) as (state, active, reporter):
            self._apply(state, active, [("common", names, lambda _: {
                "wheelhouse_tar": str(self.wheelhouse.tar), "wheelhouse_key": self.wheelhouse.key,
                "installs": installs})], reporter)
        for name in names:
            op = installs.get(name)
            if op is None:
                self.upgraded[name] = False
            elif self.options.dry_run:
                self.upgraded[name] = True
            else:
                self.upgraded[name] = op.is_complete() and op.did_change()

    def _phase_control(self) -> None:
        control = self.plan.control_host
        target = control in self.hosts
        if target and self.hosts[control].failed:
            self._control_down(f"control host {control} failed")
            return
        with self._connected("control", [control]) as (state, active, reporter):
            if control not in active:
                self._control_down(f"control host {control} is unreachable")
                return
            if target:
                self._apply(state, active, [("control", [control], lambda _: {
                    "mesh": self.plan, "upgraded": self.upgraded.get(control, False)})], reporter)
                if self.hosts[control].failed:
                    self._control_down(f"control host {control} failed")
                    return
            wait = 0 if self.options.dry_run else PUB_WAIT_SECONDS * 10
            text = self._command(state, active[control],
                                 f"for i in $(seq {wait}); do test -s {CONTROL_PUB} && break; "
                                 # a unit stuck in a restart loop will not write it: stop waiting
                                 f"test \"$(systemctl show -p NRestarts --value meshctl-control)\" -gt 2 "
                                 "2>/dev/null && break; sleep 0.1; done; "
                                 f"cat {CONTROL_PUB} 2>/dev/null; true")
        found = _CONTROL_KEY.search(text)
        if found:
            self.control_key = found.group(0)
        elif self.options.dry_run:
            self.control_key = "ctrlkey:(read from the control host after it starts)"
        else:
            if target:
                self._fail(control, "control", f"the control server wrote no {CONTROL_PUB} (not running? "
                           "see: journalctl -u meshctl-control)")
            self._control_down(f"no control key could be read from {control}")

    def _control_down(self, why: str) -> None:
        for name in self.targets:
            if name != self.plan.control_host and set(self.spec.groups_of(name)) & {"derp", "nodes"}:
                self._fail(name, "control", f"skipped: {why}")

    def _mint(self, state: Any, control: Any, what: str, name: str, pattern: re.Pattern[str]) -> str | None:
        """Mint a secret on the control host for host `name`; on failure record why and return None."""
        role = "derp" if what.startswith("derp") else "node"
        try:
            text = self._command(state, control, f"{MESHCTL} control {what} --state-dir {CONTROL_STATE_DIR} "
                                 f"2>&1; true  # for {shlex.quote(name)}")
        except Exception as err:  # the fact itself failed (connection lost)
            text = f"{type(err).__name__}: {err}"
        found = pattern.search(text)
        if found:
            return found.group(0)
        last = ([ln.strip() for ln in text.splitlines() if ln.strip()] or ["no output"])[-1]
        self._fail(name, role, f"`meshctl control {what.split()[0]}` on {self.plan.control_host} gave no key: {last}")
        return None

    def _with_control(self, role: str,
                      names: list[str]) -> AbstractContextManager[tuple[Any, dict[str, Any], _Reporter]]:
        return self._connected(role, [*names, self.plan.control_host] if self.plan.control_host not in names
                               else names)

    def _phase_derp(self) -> None:
        names = self._alive([h for h in self.spec.group("derp") if h in self.targets])
        if not names or self.control_key is None:
            return
        control = self.plan.control_host
        tokens: dict[str, str | None] = {}
        with self._with_control("derp", names) as (state, active, reporter):
            for name in names:
                if name not in active:
                    continue
                has = self._command(state, active[name], f"test -s {DERP_TOKEN} && echo yes; true").strip() == "yes"
                if has:
                    tokens[name] = None
                elif self.options.dry_run or control not in active:
                    tokens[name] = PLACEHOLDER
                else:
                    tokens[name] = self._mint(state, active[control], "derp-token", name, _DERP_TOKEN)
            self._apply(state, active, [("derp", names, lambda n: {
                "mesh": self.plan, "token": tokens.get(n), "upgraded": self.upgraded.get(n, False),
                "mesh_key": self._mesh_key(n)})], reporter)

    def _mesh_key(self, host: str) -> str | None:
        """The region's DERP mesh key from the workspace secrets (made on first use), if the region is meshed."""
        server = self.plan.derp_server(host)
        if not self.plan.region(server.region_id).meshed:
            return None
        path = self.workspace.secrets_dir / f"derp-mesh-{server.region_id}.key"
        if not path.is_file():
            write_secret_file(path, (secrets.token_hex(32) + "\n").encode())
        return path.read_text().strip()

    def _phase_node(self) -> None:
        nodes = self._alive([h for h in self.spec.group("nodes") if h in self.targets])
        everyone = self._alive(self.targets)
        if not everyone:
            return
        control = self.plan.control_host
        auth: dict[str, str | None] = {}
        with self._with_control("node", everyone) as (state, active, reporter):
            if self.control_key is not None:
                for name in nodes:
                    if name not in active:
                        continue
                    registered = self._command(state, active[name],
                                               f"test -s {AGENT_NODE_KEY} && echo yes; true").strip() == "yes"
                    if registered:
                        auth[name] = None
                    elif self.options.dry_run or control not in active:
                        auth[name] = PLACEHOLDER
                    else:
                        tags = " ".join(f"--tag {shlex.quote(t)}" for t in self.spec.data(name).get("tags", []))
                        auth[name] = self._mint(state, active[control], f"authkey {tags}".strip(), name, _AUTH_KEY)
            control_key = self.control_key
            steps: list[tuple[str, Sequence[str], Callable[[str], dict[str, Any]]]] = []
            if control_key is not None:
                steps.append(("node", nodes, lambda n: {
                    "mesh": self.plan, "control_key": control_key, "auth_key": auth.get(n),
                    "upgraded": self.upgraded.get(n, False)}))
            steps.append(("ssh", everyone, lambda _: {"rotation": self.workspace.rotation}))
            self._apply(state, active, steps, reporter)

    def run(self) -> DeployResult:
        started = time.monotonic()
        pyinfra_log = logging.getLogger("pyinfra")
        saved = (pyinfra_log.propagate, list(pyinfra_log.handlers))
        pyinfra_log.propagate = False  # pyinfra's own log lines would bypass our progress display
        pyinfra_log.handlers = [logging.NullHandler()]
        try:
            self._phase_common()
            self._phase_control()
            self._phase_derp()
            self._phase_node()
        finally:
            pyinfra_log.propagate, pyinfra_log.handlers = saved[0], saved[1]
        return DeployResult(hosts=self.hosts, dry_run=self.options.dry_run,
                            seconds=time.monotonic() - started, control_key=self.control_key)


def run_deploy(spec: InventorySpec, workspace: Workspace, wheelhouse: Wheelhouse,
               options: DeployOptions | None = None, progress: ProgressSink | None = None) -> DeployResult:
    """Deploy the mesh described by `workspace` onto the hosts of `spec` (see `Deployment`)."""
    return Deployment(spec, workspace, wheelhouse, options, progress).run()
