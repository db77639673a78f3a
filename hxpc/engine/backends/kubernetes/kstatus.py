"""Whether a live object is current, by the kstatus rules of sigs.k8s.io/cli-utils, purely from its payload.

`compute(obj)` says Current, InProgress, Failed or Terminating with a message,
and the ready and desired replicas where they apply. The rules follow kstatus:
a controller that has not observed the latest generation is InProgress; a
Deployment is Current when its updated, ready and available replicas and its
total equal the spec's (no old pods left), and Failed once its Progressing
condition says ProgressDeadlineExceeded; a StatefulSet is Current when its
ready and current replicas equal the spec's (the partition honoured) and its
current revision is the update revision; a PersistentVolumeClaim when Bound;
a Namespace when Active; a Pod when Running and Ready (or Succeeded); a
Service of type LoadBalancer once it has an ingress address; other objects
by their Ready, Reconciling and Stalled conditions, else Current.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

State = Literal["Current", "InProgress", "Failed", "Terminating"]


@dataclass(frozen=True)
class Status:
    state: State
    message: str
    ready: int | None = None
    desired: int | None = None

    @property
    def current(self) -> bool:
        return self.state == "Current"

    def describe(self) -> str:
        counts = f" ({self.ready}/{self.desired} ready)" if self.desired is not None else ""
        return f"{self.state}{counts}: {self.message}" if self.message else f"{self.state}{counts}"


def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}


def _int(value: Any, default: int = 0) -> int:
    return int(value) if isinstance(value, int) else default


def compute(obj: Mapping[str, Any]) -> Status:
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return Status("Terminating", "being deleted")
    kind = str(obj.get("kind"))
    spec: Mapping[str, Any] = obj.get("spec") or {}
    status: Mapping[str, Any] = obj.get("status") or {}
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        return Status("InProgress", f"the controller has not yet seen generation {generation}",
                      *_replicas(kind, spec, status))
    if kind == "Deployment":
        return _deployment(spec, status)
    if kind == "StatefulSet":
        return _statefulset(spec, status)
    if kind == "PersistentVolumeClaim":
        phase = status.get("phase")
        return Status("Current", "Bound") if phase == "Bound" else Status("InProgress", f"claim is {phase or 'new'}")
    if kind == "Namespace":
        return Status("Current", "Active") if status.get("phase", "Active") == "Active" else Status(
            "Terminating", str(status.get("phase")))
    if kind == "Pod":
        return _pod(status)
    if kind == "Service" and spec.get("type") == "LoadBalancer":
        if (status.get("loadBalancer") or {}).get("ingress"):
            return Status("Current", "load balancer ready")
        return Status("InProgress", "waiting for a load balancer address")
    return _generic(status)


def _replicas(kind: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[int | None, int | None]:
    if kind not in ("Deployment", "StatefulSet"):
        return None, None
    return _int(status.get("readyReplicas")), _int(spec.get("replicas"), 1)


def _deployment(spec: Mapping[str, Any], status: Mapping[str, Any]) -> Status:
    want = _int(spec.get("replicas"), 1)
    total, updated = _int(status.get("replicas")), _int(status.get("updatedReplicas"))
    ready, available = _int(status.get("readyReplicas")), _int(status.get("availableReplicas"))
    progressing = _conditions(status).get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Status("Failed", f"progress deadline exceeded: {progressing.get('message', '')}".rstrip(": "),
                      ready, want)
    if spec.get("paused"):
        return Status("InProgress", "paused", ready, want)
    if total > want:  # scaled down: the extra pods still run (kstatus: "Pending termination")
        return Status("InProgress", f"{total - want} extra replica(s) pending termination", ready, want)
    if updated < want:
        return Status("InProgress", f"{updated} of {want} replicas updated", ready, want)
    if total > updated:
        return Status("InProgress", f"{total - updated} old replica(s) pending termination", ready, want)
    if available < updated:
        return Status("InProgress", f"{available} of {updated} updated replicas available", ready, want)
    if ready < want:
        return Status("InProgress", f"{ready} of {want} replicas ready", ready, want)
    return Status("Current", f"{want} replica(s) up to date and available", ready, want)


def _statefulset(spec: Mapping[str, Any], status: Mapping[str, Any]) -> Status:
    want = _int(spec.get("replicas"), 1)
    ready, current = _int(status.get("readyReplicas")), _int(status.get("currentReplicas"))
    updated = _int(status.get("updatedReplicas"))
    strategy = spec.get("updateStrategy") or {}
    if _int(status.get("replicas")) < want:
        return Status("InProgress", f"{_int(status.get('replicas'))} of {want} replicas created", ready, want)
    if _int(status.get("replicas")) > want:
        return Status("InProgress", f"{_int(status.get('replicas')) - want} extra replica(s) pending termination",
                      ready, want)
    if ready < want:
        return Status("InProgress", f"{ready} of {want} replicas ready", ready, want)
    if strategy.get("type", "RollingUpdate") == "OnDelete":
        return Status("Current", f"{want} replica(s) ready (OnDelete)", ready, want)
    partition = _int((strategy.get("rollingUpdate") or {}).get("partition"))
    if partition > 0:
        if updated < want - partition:
            return Status("InProgress", f"{updated} of {want - partition} replicas updated (partition {partition})",
                          ready, want)
        return Status("Current", f"partitioned rollout at {partition}", ready, want)
    if status.get("updateRevision") and status.get("currentRevision") != status.get("updateRevision"):
        return Status("InProgress", f"{updated} of {want} replicas at the update revision "
                                    f"{status.get('updateRevision')}", ready, want)
    if current < want:
        return Status("InProgress", f"{current} of {want} replicas current", ready, want)
    return Status("Current", f"{want} replica(s) ready at revision {status.get('currentRevision', '')}".rstrip(),
                  ready, want)


def _pod(status: Mapping[str, Any]) -> Status:
    phase = status.get("phase")
    if phase == "Succeeded":
        return Status("Current", "completed")
    if phase == "Failed":
        return Status("Failed", str(status.get("message") or status.get("reason") or "failed"))
    ready = _conditions(status).get("Ready") or {}
    if phase == "Running" and ready.get("status") == "True":
        return Status("Current", "running and ready")
    return Status("InProgress", f"pod is {phase or 'pending'}")


def _generic(status: Mapping[str, Any]) -> Status:
    conditions = _conditions(status)
    stalled = conditions.get("Stalled") or {}
    if stalled.get("status") == "True":
        return Status("Failed", str(stalled.get("message") or "stalled"))
    reconciling = conditions.get("Reconciling") or {}
    if reconciling.get("status") == "True":
        return Status("InProgress", str(reconciling.get("message") or "reconciling"))
    ready = conditions.get("Ready") or {}
    if ready.get("status") == "False":
        return Status("InProgress", str(ready.get("message") or "not ready"))
    return Status("Current", "")
