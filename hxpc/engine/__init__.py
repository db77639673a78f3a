"""The engine: read live systems, plan the change, apply it safely; one backend per live system.

The API the command line uses is small: `plan_live(backends, waves, ...)`
reads every backend once and returns a `Plan`; `render_text`,
`render_markdown` and `render_json` show it; `load_plan` reads a saved one;
`apply(plan, backends, env=..., spec_hash=...)` executes it (with
`ApplyOptions` for parallelism, metrics file and so on, and `make_progress()`
for the live view); `collect_status` reports live health. Backends implement
`hxpc.engine.backend.Backend`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from hxpc.engine.apply import ApplyOptions, apply
from hxpc.engine.backend import Backend, PlanWarnings, read_live, retry_transient
from hxpc.engine.objects import DesiredObject, LiveObject, ObjectKey
from hxpc.engine.plan import Plan, load_plan, make_plan
from hxpc.engine.progress import Event, Progress, make_progress
from hxpc.engine.render import render_json, render_markdown, render_text
from hxpc.engine.report import ApplyFailed, ApplyInterrupted, ApplyReport
from hxpc.engine.status import collect_status, render_status_json, render_status_text


def plan_live(backends: Mapping[str, Backend], waves: Sequence[Sequence[str]], *, project: str, env: str,
              spec_hash: str, spec_file: str = "", targets: Iterable[str] = (),
              progress: Progress | None = None) -> Plan:
    """Read every backend once (transient failures retried) and plan against what is live; `progress` hears
    when each read starts and ends (a read of many hosts can take a while)."""
    started = time.monotonic()

    def say(message: str) -> None:
        if progress is not None:
            progress(Event("note", time.monotonic() - started, message=message))

    desired: dict[ObjectKey, DesiredObject] = {}
    live: dict[ObjectKey, LiveObject] = {}
    warnings: list[str] = []
    try:
        for target in sorted(backends):
            backend = backends[target]
            desired.update(backend.desired())
            say(f"reading {target}")
            found = retry_transient(lambda b=backend: read_live(b))  # type: ignore[misc]
            live.update(found)
            say(f"read {target}: {len(found)} live object(s)")
            if isinstance(backend, PlanWarnings):
                warnings += [f"{target}: {w}" for w in backend.plan_warnings()]
    finally:
        if progress is not None:
            progress(Event("finish", time.monotonic() - started))
    return make_plan(desired, live, waves, project=project, env=env, spec_hash=spec_hash,
                     targets=[*targets, *backends], spec_file=spec_file, warnings=warnings)


__all__ = [
    "ApplyFailed", "ApplyInterrupted", "ApplyOptions", "ApplyReport", "Backend", "Plan", "apply", "collect_status",
    "load_plan", "make_plan", "make_progress", "plan_live", "render_json", "render_markdown", "render_status_json",
    "render_status_text", "render_text",
]
