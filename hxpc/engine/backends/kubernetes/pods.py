"""Why a workload's pods are not ready, purely from pod and event payloads: what makes a health gate fail fast.

Waiting out a model server's whole startup budget (a quarter of an hour) is
pointless when the pod can never start: its image cannot be pulled
(ErrImagePull, ImagePullBackOff, InvalidImageName), it crashes in a loop
(CrashLoopBackOff), its container cannot be made (CreateContainerConfigError:
a missing Secret or ConfigMap key), or the scheduler finds no node for it
(Unschedulable, e.g. "Insufficient nvidia.com/gpu"). `problems` names each
such pod and its reason; those marked `needs_grace` (unschedulable, a missing
config) fail only once they last beyond a short grace, since a node may be
added or the object created a moment later. `not_ready` says, for every pod
not ready, why as far as the pod tells (for `hxpc status` and a gate's
progress). `recent_events` is the pod's last events, for the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FATAL_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                           "CrashLoopBackOff", "CreateContainerError", "RunContainerError"})
GRACED_WAITING = frozenset({"CreateContainerConfigError"})


@dataclass(frozen=True)
class PodProblem:
    pod: str
    uid: str
    reason: str
    message: str
    needs_grace: bool

    def describe(self) -> str:
        return f"pod {self.pod}: {self.reason}" + (f": {self.message}" if self.message else "")


def _ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    ready: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return bool(status.get("phase") == "Running" and ready.get("status") == "True")


def problems(pods: Sequence[Mapping[str, Any]]) -> list[PodProblem]:
    """Each pod that cannot become ready on its own, with the first reason found (pods sorted by name)."""
    out = []
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or _ready(pod):
            continue
        name, uid = str(meta.get("name")), str(meta.get("uid") or meta.get("name"))
        status = pod.get("status") or {}
        found = None
        for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (c.get("state") or {}).get("waiting") or {}
            reason = str(waiting.get("reason") or "")
            if reason in FATAL_WAITING or reason in GRACED_WAITING:
                found = PodProblem(name, uid, reason, f"container {c.get('name')}: {waiting.get('message') or ''}"
                                   .rstrip(": "), reason in GRACED_WAITING)
                break
        if found is None:
            scheduled: Mapping[str, Any] = next(
                (c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
            if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
                found = PodProblem(name, uid, "Unschedulable", str(scheduled.get("message") or ""), True)
        if found is not None:
            out.append(found)
    return out


def not_ready(pods: Sequence[Mapping[str, Any]], most: int = 3) -> list[str]:
    """Why each pod that is not ready is not (at most `most`, sorted by name): a container's waiting reason,
    else the condition that is false (not scheduled, or not Ready with the kubelet's reason), else its phase."""
    out = []
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or _ready(pod):
            continue
        status = pod.get("status") or {}
        why = ""
        for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (c.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                why = f"container {c.get('name')} {waiting['reason']}" + (
                    f": {waiting['message']}" if waiting.get("message") else "")
                break
        if not why:
            conditions = {str(c.get("type")): c for c in status.get("conditions") or []}
            for kind in ("PodScheduled", "Ready"):
                c = conditions.get(kind) or {}
                if c.get("status") == "False":
                    why = f"{kind} is False" + (f" ({c['reason']})" if c.get("reason") else "") + (
                        f": {c['message']}" if c.get("message") else "")
                    break
        out.append(f"pod {meta.get('name')}: {why or status.get('phase') or 'Pending'}")
    return out[:most] + ([f"and {len(out) - most} more pod(s) not ready"] if len(out) > most else [])


def _when(event: Mapping[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
               or (event.get("metadata") or {}).get("creationTimestamp") or "")


def recent_events(events: Sequence[Mapping[str, Any]], most: int = 5) -> list[str]:
    """The last `most` events, oldest first: `Warning FailedScheduling: 0/2 nodes are available: ...`."""
    ordered = sorted(events, key=_when)[-most:]
    out = []
    for e in ordered:
        count = int(e.get("count") or 1)
        times = f" (x{count})" if count > 1 else ""
        out.append(f"{e.get('type', '')} {e.get('reason', '')}{times}: {str(e.get('message') or '').strip()}"
                   .strip())
    return out
