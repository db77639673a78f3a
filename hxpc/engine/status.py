"""`hxpc status`: what runs on each target, whether it matches the spec, and one health probe each.

For every object the spec wants and every owned object it no longer wants,
a row says whether it is live, its own status, and the result of one probe
round (objects without a health gate are not probed). Reads once per
backend like planning does; nothing is changed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hxpc.engine.backend import Backend, read_live, retry_transient
from hxpc.engine.objects import ObjectKey


@dataclass(frozen=True)
class StatusRow:
    key: ObjectKey
    workload: str | None
    state: str            # live | missing | extra (owned, not in the spec)
    status: str           # the live system's own words
    healthy: bool | None  # None: not probed
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"address": str(self.key), "target": self.key.target, "workload": self.workload,
                "state": self.state, "status": self.status, "healthy": self.healthy, "detail": self.detail}


def collect_status(backends: Mapping[str, Backend], timeout_s: float = 5.0) -> list[StatusRow]:
    rows: list[StatusRow] = []
    for target in sorted(backends):
        backend = backends[target]
        desired = backend.desired()
        live = retry_transient(lambda b=backend: read_live(b))  # type: ignore[misc]
        for key in sorted(set(desired) | {k for k, o in live.items() if o.owned}):
            want, have = desired.get(key), live.get(key)
            if have is None:
                rows.append(StatusRow(key, want.workload if want else None, "missing", "", None))
                continue
            healthy: bool | None = None
            detail = ""
            if want is not None and want.gate is not None:
                result = backend.health(key, time.monotonic() + timeout_s)
                healthy, detail = result.healthy, result.detail
            rows.append(StatusRow(key, have.workload, "live" if want else "extra", have.status, healthy, detail))
    return rows


def render_status_text(rows: list[StatusRow]) -> str:
    if not rows:
        return "Nothing to report: the spec wants no objects and none are live.\n"
    words = {True: "healthy", False: "UNHEALTHY", None: "-"}
    width = max(len(str(r.key)) for r in rows)
    lines = [(f"{r.key!s:<{width}}  {r.state:<7}  {words[r.healthy]:<9}  {r.status}"
              + (f"  ({r.detail})" if r.detail else "")).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def render_status_json(rows: list[StatusRow]) -> str:
    return json.dumps({"format_version": 1, "objects": [r.to_dict() for r in rows]}, indent=2, sort_keys=True) + "\n"


def all_healthy(rows: list[StatusRow]) -> bool:
    return all(r.state == "live" and r.healthy is not False for r in rows)
