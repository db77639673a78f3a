"""GPU feasibility at plan time, purely: can every replica of every GPU workload be scheduled?

The scheduler will answer only after apply has started a rollout; the plan
answers first. For each node that a workload's pods may land on (its
nodeSelector matches, it is not cordoned, and every NoSchedule/NoExecute taint
is tolerated) the free GPUs are the allocatable `gpu_resource` minus what
running pods already request, not counting the stack's own pods (apply
replaces them). The stack's GPU replicas are then placed first-fit, largest
first, and every workload whose replicas do not all fit gets a warning naming
the GPUs each replica needs, the nodes that match and what they have free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TERMINAL = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class Demand:
    name: str              # the Deployment or StatefulSet
    replicas: int
    gpus: int              # per replica
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]


def gpus_of(quantity: Any) -> int:
    """A GPU count as the API gives it (a whole number; anything else counts as none)."""
    try:
        return int(str(quantity))
    except ValueError:
        return 0


def demand_of(obj: Mapping[str, Any], resource: str) -> Demand | None:
    """The GPUs a Deployment or StatefulSet manifest asks for, or None when it asks for none."""
    spec = obj.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    per_pod = sum(gpus_of(((c.get("resources") or {}).get("limits") or {}).get(resource, 0))
                  for c in pod.get("containers") or [])
    if not per_pod:
        return None
    return Demand(str((obj.get("metadata") or {}).get("name")), int(spec.get("replicas", 1)), per_pod,
                  dict(pod.get("nodeSelector") or {}), tuple(pod.get("tolerations") or ()))


def _tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t.get("key") == taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and t.get("value") == taint.get("value"):
            return True
    return False


def _fits(node: Mapping[str, Any], demand: Demand) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    spec = node.get("spec") or {}
    if spec.get("unschedulable") or any(labels.get(k) != v for k, v in demand.node_selector.items()):
        return False
    return all(_tolerates(demand.tolerations, t) for t in spec.get("taints") or []
               if t.get("effect") in ("NoSchedule", "NoExecute"))


def free_gpus(nodes: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]], resource: str,
              own_instance: str) -> dict[str, int]:
    """Allocatable GPUs per node minus what other (non-terminal) pods request."""
    free = {str(n["metadata"]["name"]): gpus_of(((n.get("status") or {}).get("allocatable") or {}).get(resource, 0))
            for n in nodes}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if node not in free or (pod.get("status") or {}).get("phase") in TERMINAL:
            continue
        if labels.get("app.kubernetes.io/instance") == own_instance:
            continue  # the stack's own pods: apply replaces them
        used = sum(gpus_of(((c.get("resources") or {}).get("requests") or (c.get("resources") or {}).get("limits")
                          or {}).get(resource, 0)) for c in (pod.get("spec") or {}).get("containers") or [])
        free[node] -= used
    return free


def check(demands: Sequence[Demand], nodes: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]],
          resource: str, own_instance: str) -> list[str]:
    """A warning per workload whose replicas cannot all be scheduled."""
    free = free_gpus(nodes, pods, resource, own_instance)
    by_name = {str(n["metadata"]["name"]): n for n in nodes}
    warnings = []
    placed: dict[str, int] = {}
    for demand in sorted(demands, key=lambda d: (-d.gpus, d.name)):
        matching = sorted(name for name, node in by_name.items() if _fits(node, demand))
        fitted = 0
        for _ in range(demand.replicas):
            spot = next((n for n in matching if free[n] >= demand.gpus), None)
            if spot is None:
                break
            free[spot] -= demand.gpus
            fitted += 1
        placed[demand.name] = fitted
        if fitted < demand.replicas:
            where = ", ".join(f"{k}={v}" for k, v in sorted(demand.node_selector.items())) or "any node"
            have = ", ".join(f"{n} {free[n]}" for n in matching) or "none"
            warnings.append(f"`{demand.name}`: {demand.replicas} replica(s) need {demand.gpus} {resource} each on "
                            f"nodes matching {where}; only {fitted} can be scheduled ({len(matching)} matching "
                            f"node(s); free after placing the stack: {have})")
    return warnings
