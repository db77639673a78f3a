"""What an apply did, action by action: the report printed at the end and carried by its errors.

`ApplyReport` records each touched action's result (applied, failed with the
live system's message, rolled back, not started), the retries it needed,
each wave's duration and health gate, and the outcome (success, failed,
interrupted, refused). `ApplyFailed` (exit 1) and `ApplyInterrupted` (exit
130) carry it, so the command line prints the same truthful account however
the run ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hxpc.engine.backend import Undo
from hxpc.engine.plan import SYMBOLS, Action, Plan
from hxpc.errors import ApplyError, Interrupted

Result = Literal["pending", "ok", "failed", "skipped", "rolled_back", "rollback_failed"]
Outcome = Literal["success", "failed", "interrupted", "refused"]
_WORDS: dict[str, str] = {"pending": "not started", "ok": "applied", "failed": "FAILED", "skipped": "not started",
                          "rolled_back": "rolled back", "rollback_failed": "ROLLBACK FAILED"}


@dataclass
class ActionResult:
    action: Action
    status: Result = "pending"
    attempts: int = 0
    duration_s: float = 0.0
    error: str = ""
    retries: list[str] = field(default_factory=list)
    health: str = ""
    undo: Undo | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"address": str(self.action.key), "kind": self.action.kind, "wave": self.action.wave,
                "status": self.status, "attempts": self.attempts, "duration_s": round(self.duration_s, 3),
                "error": self.error, "retries": self.retries, "health": self.health}


@dataclass
class WaveResult:
    wave: int
    duration_s: float = 0.0
    gate: str = ""   # "" (no gate), "passed", "failed", "interrupted"


@dataclass
class ApplyReport:
    plan: Plan
    outcome: Outcome = "success"
    message: str = ""
    results: dict[str, ActionResult] = field(default_factory=dict)
    waves: list[WaveResult] = field(default_factory=list)
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for action in self.plan.touched:
            self.results.setdefault(str(action.key), ActionResult(action))

    def result(self, action: Action) -> ActionResult:
        return self.results[str(action.key)]

    def count(self) -> dict[tuple[str, str], int]:
        """(action kind, result) -> number of actions; noops count as (noop, unchanged)."""
        out: dict[tuple[str, str], int] = {}
        for r in self.results.values():
            out[(r.action.kind, r.status)] = out.get((r.action.kind, r.status), 0) + 1
        noops = sum(1 for a in self.plan.actions if a.kind == "noop")
        if noops:
            out[("noop", "unchanged")] = noops
        kept = sum(1 for a in self.plan.actions if a.kind == "keep")
        if kept:
            out[("keep", "kept")] = kept
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "message": self.message, "duration_s": round(self.duration_s, 3),
                "project": self.plan.project, "env": self.plan.env, "spec_hash": self.plan.spec_hash,
                "waves": [{"wave": w.wave, "duration_s": round(w.duration_s, 3), "gate": w.gate} for w in self.waves],
                "actions": [r.to_dict() for r in self.results.values()], "notes": self.notes}

    def render(self) -> str:
        head = {"success": "Apply complete", "failed": "Apply failed", "interrupted": "Apply interrupted",
                "refused": "Apply refused"}[self.outcome]
        lines = [f"{head} after {self.duration_s:.1f}s" + (f": {self.message}" if self.message else ".")]
        lines += [f"  note: {n}" for n in self.notes]
        for r in sorted(self.results.values(), key=lambda r: (r.action.wave, r.action.key)):
            a = r.action
            took = f" ({r.duration_s:.1f}s)" if r.status != "pending" and r.status != "skipped" else ""
            lines.append(f"  {SYMBOLS[a.kind]:>3} {a.key}  {a.kind}  {_WORDS[r.status]}{took}  (wave {a.wave})")
            if r.retries:
                lines.append(f"        retried {len(r.retries)}x: {r.retries[-1]}")
            if r.error:
                lines.append(f"        {r.error}")
            if r.health:
                lines.append(f"        health: {r.health}")
        if self.outcome == "success":
            n = self.plan.counts()
            lines.append(f"Applied: {n['create']} added, {n['update']} changed, {n['replace']} replaced, "
                         f"{n['delete']} destroyed, {n['restart']} restarted.")
        return "\n".join(lines) + "\n"


class ApplyFailed(ApplyError):
    """An action or a health gate failed; the wave it was in was rolled back (exit 1)."""

    def __init__(self, report: ApplyReport):
        self.report = report
        super().__init__(report.message)


class ApplyInterrupted(Interrupted):
    """SIGINT or SIGTERM: no new actions were started, the wave under way was reverted (exit 130)."""

    def __init__(self, report: ApplyReport):
        self.report = report
        super().__init__(report.message)
