"""Per-backend test harnesses: a test's own project on a real live system, in terms every backend shares.

The shared contract suite (tests/engine/backends/contract/) runs the same scenarios on every backend
through a `Harness`: a stack of services described backend-neutrally (`Svc`), written as that backend's
spec, planned and applied with the engine, and observed on the live system (what serves, which live
instances a service has, what is in the way). Each backend's module (docker, systemd, kubernetes) also
checks what only it can (`verify_*` hooks, called by the scenarios at the points that matter), so a
backend's own guarantees stay tested where the scenario runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from hxpc.engine.lock import LockHandle
from hxpc.engine.plan import Plan
from hxpc.engine.report import ApplyReport


@dataclass(frozen=True)
class Svc:
    """A service as the scenarios see it: how many replicas, which version of its software, its environment,
    whether it is broken (never passes its health gate, for the backend's own reason), the secrets it reads
    (variable -> secret name), what it depends on, whether it keeps data in a volume, and whether it has a
    health check at all."""

    replicas: int = 1
    version: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    broken: bool = False
    secrets: Mapping[str, str] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    volume: bool = False
    health: bool = True   # False: no health check (gated by the runtime's own state only)


class Harness(Protocol):
    name: str
    scope: str                  # the addresses' scope prefix of this project's objects, for messages

    def write(self, services: Mapping[str, Svc], secrets: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """The spec of these services (and secrets: name -> {env: VAR} or {file: PATH})."""

    def plan(self) -> Plan: ...

    def apply(self, plan: Plan | None = None, **options: Any) -> ApplyReport:
        """Apply `plan` (default: a fresh one), with ApplyOptions overrides (progress=... for a Progress)."""

    def desired(self) -> set[str]:
        """The addresses of every object the current spec has."""

    def addresses(self, name: str) -> set[str]:
        """The addresses of the objects the current spec has for service `name`."""

    def bookkeeping(self) -> set[str]:
        """Objects of hxpc's own that change with any change (the kubernetes inventory); none elsewhere."""

    def instances(self, name: str) -> set[str]:
        """The live instances serving `name` (container ids, unit invocations, pod uids): a restart changes them."""

    def serving(self, name: str) -> bool:
        """Every replica of `name` is up and passes its health check."""

    def exists(self, name: str) -> bool:
        """Anything of service `name` is live."""

    def add_stray(self) -> Any:
        """Something beside the project's objects that is not hxpc's; returns what `stray_intact` checks."""

    def stray_intact(self, stray: Any) -> bool: ...

    def put_in_the_way(self, name: str) -> str:
        """Make an object that is not hxpc's where service `name`'s would go; returns the address a plan names."""

    def change_outside(self, name: str) -> str:
        """Change a live object of service `name` as someone outside hxpc would; returns its address."""

    def lock_held(self) -> bool: ...

    def hold_lock(self) -> LockHandle:
        """Take the apply lock as another apply would, holding it until released."""

    def sees_secret(self, name: str, variable: str, value: str) -> bool:
        """Service `name`'s processes see `variable` = `value`."""

    def written(self) -> str:
        """Everything the backend wrote or showed besides the service's own environment: labels, unit files,
        manifests and annotations, plans and logs (a secret's value must be in none of them)."""

    def cleanup(self) -> None: ...

    # backend-specific checks at the scenarios' points
    def verify_fresh(self, report: ApplyReport) -> None: ...

    def verify_replan(self) -> None: ...

    def verify_changed(self, plan: Plan, what: str) -> None:
        """`what`: "version" (web's software) or "env" (db's MODE a -> b)."""

    def verify_applied_change(self) -> None: ...

    def verify_pruned(self, name: str) -> None: ...

    def verify_rolled_back(self, report: ApplyReport, name: str, before: set[str]) -> None: ...

    def verify_secret(self, name: str, value: str) -> None: ...


# The end of an apply script (see start_apply): after its head made `resolved`, `meta`, `env`, `backend` and
# TARGET, it plans, applies with progress on stdout and prints the report and `REPORT <json>`.
APPLY_SCRIPT_TAIL = textwrap.dedent('''
    plan = plan_live({TARGET: backend}, resolved.stack.waves, project=meta.project, env=env,
                     spec_hash=meta.spec_hash)
    ttl = os.environ.get("HXPC_LOCK_TTL")
    try:
        report = apply(plan, {TARGET: backend}, env=env, spec_hash=meta.spec_hash, project=meta.project,
                       options=ApplyOptions(lock_ttl_s=int(ttl) if ttl else None), progress=PlainProgress(sys.stdout))
        code = 0
    except (ApplyFailed, ApplyInterrupted) as exc:
        report, code = exc.report, exc.exit_code
    print(report.render(), end="", flush=True)
    print("REPORT " + json.dumps(report.to_dict()), flush=True)
    sys.exit(code)
''')


def start_apply(script: Path, args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None,
                timeout: float = 60) -> tuple[subprocess.Popen[str], list[str]]:
    """Run an apply `script` (which prints the progress' lines) in a subprocess, as the command line runs it, and
    return once it waits on a health gate: signals and `kill -9` then hit an apply mid-wave."""
    proc = subprocess.Popen([sys.executable, "-u", str(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=cwd, env={**os.environ, **(env or {})})
    lines: list[str] = []
    reached = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "health gate" in line:
                reached.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not reached.wait(0.1) and proc.poll() is None and time.monotonic() < deadline:
        pass
    if not reached.is_set():
        proc.kill()
        pytest.fail("the apply never reached its health gate:\n" + "".join(lines))
    return proc, lines
