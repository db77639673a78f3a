"""`--metrics-file`: an apply's outcome in Prometheus' text exposition format, written atomically.

Made for node_exporter's textfile collector, which must never read half a
file (hence `write_atomic`). Every series carries `project` and `env`; all
are gauges describing the last run: its outcome (one-hot over success,
failed, interrupted, refused), actions by kind and result, transient retries,
each wave's duration, the run's duration and when it finished.
"""

from __future__ import annotations

import time
from pathlib import Path

from hxpc.engine.report import ApplyReport
from hxpc.fsutil import write_atomic

OUTCOMES = ("success", "failed", "interrupted", "refused")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render_metrics(report: ApplyReport, now: float | None = None) -> str:
    base = {"project": report.plan.project, "env": report.plan.env}
    out: list[str] = []

    def family(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} gauge")
        out.extend(f"{name}{_labels(**base, **extra)} {_num(value)}" for extra, value in samples)

    family("hxpc_apply_success", "1 when the last apply succeeded, else 0.",
           [({}, 1 if report.outcome == "success" else 0)])
    family("hxpc_apply_outcome", "The last apply's outcome (one-hot).",
           [({"outcome": o}, 1 if report.outcome == o else 0) for o in OUTCOMES])
    counts = report.count()
    family("hxpc_apply_actions", "Actions of the last apply by kind and result.",
           [({"kind": k, "result": r}, n) for (k, r), n in sorted(counts.items())])
    family("hxpc_apply_retries", "Transient failures retried during the last apply.",
           [({}, sum(len(r.retries) for r in report.results.values()))])
    family("hxpc_apply_wave_duration_seconds", "Duration of each wave of the last apply, health gate included.",
           [({"wave": str(w.wave)}, round(w.duration_s, 3)) for w in report.waves])
    family("hxpc_apply_duration_seconds", "Duration of the last apply.", [({}, round(report.duration_s, 3))])
    family("hxpc_apply_last_run_timestamp_seconds", "When the last apply finished (Unix time).",
           [({}, float(int(now if now is not None else time.time())))])
    return "\n".join(out) + "\n"


def write_metrics(path: Path | str, report: ApplyReport) -> None:
    write_atomic(path, render_metrics(report))
