"""What the kubernetes backend wants, purely: the compiled manifests as desired objects, in apply order.

The desired state is exactly what the compiler emits (`kubernetes_objects`, and
the monitoring targets' `cluster_objects` when the stack has `monitoring`),
plus what only apply can make: one Secret per secret the workloads reference
(type Opaque, key `value`, filled in at apply time; the manifest holds no
value) and the inventory. Each object's `phase` gives the order the issue of
record asks for: the Namespace; Secrets, ConfigMaps and ServiceAccounts;
Services, PersistentVolumeClaims and PodDisruptionBudgets; the workloads in
the spec's dependency waves; monitoring objects (ServiceMonitor,
PrometheusRule, dashboard ConfigMaps) last; the inventory after every delete.
Objects of a kind the API does not serve are left out with a warning (the
Prometheus Operator's CRDs are optional). Deployments and StatefulSets carry a
health gate sized to a rollout of their replicas, one step at a time where no
surge pod is possible (GPU workloads, StatefulSets).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hxpc.compiler.bundle import Meta, object_hash
from hxpc.compiler.model import ResolvedStack
from hxpc.compiler.targets import grafana, prometheus
from hxpc.compiler.targets.kubernetes import kubernetes_objects, namespace_of
from hxpc.engine.backends.kubernetes import inventory
from hxpc.engine.backends.kubernetes.normalize import (
    HASH_ANNOTATION,
    NAME_LABEL,
    Obj,
    group_of,
    id_of,
    key_of,
    state_of,
)
from hxpc.engine.objects import DesiredObject, FieldPath, Gate, ObjectKey

PHASES: dict[str, int] = {"Namespace": -3, "Secret": -2, "ConfigMap": -2, "ServiceAccount": -2,
                          "Service": -1, "PersistentVolumeClaim": -1, "PodDisruptionBudget": -1}
MONITORING_PHASE = 1
MONITORING_GROUPS = frozenset({"monitoring.coreos.com"})
DASHBOARD_LABEL = "grafana_dashboard"
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet"})
GATE_INTERVAL_S = 2.0
SCHEDULE_AND_PULL_S = 300
SURGE_STEPS = 4  # a Deployment's default 25% maxUnavailable and maxSurge: about four steps at most
SECRET_PATHS: frozenset[FieldPath] = frozenset({("data",), ("stringData",)})


@dataclass(frozen=True)
class Manifest:
    """`DesiredObject.extra` of every kubernetes object: the body to apply (a Secret's without its value),
    its hash, and for a Secret the spec secret whose value goes into `data.value`."""

    body: Mapping[str, Any]
    hash: str
    secret: str | None = None
    inventory: bool = False

    @property
    def api_version(self) -> str:
        return str(self.body["apiVersion"])

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def id(self) -> str:
        return id_of(self.body)


@dataclass
class Wanted:
    """The desired objects, and why some compiled objects are not among them."""

    objects: dict[ObjectKey, DesiredObject] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def with_secret_value(body: Mapping[str, Any], value: str) -> Obj:
    return {**body, "data": {"value": base64.b64encode(value.encode()).decode()}}


def _secret_manifests(stack: ResolvedStack, meta: Meta, namespace: str) -> list[tuple[Obj, str]]:
    names = sorted({s for w in stack.workloads.values() for s in w.secrets.values()})
    out = []
    for name in names:
        body: Obj = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": name, "namespace": namespace,
                                  "labels": {"app.kubernetes.io/part-of": stack.project,
                                             "app.kubernetes.io/instance": f"{stack.project}-{stack.env}",
                                             **meta.owner_labels},
                                  "annotations": {}}}
        body["metadata"]["annotations"][HASH_ANNOTATION] = object_hash(body)
        out.append((body, name))
    return out


def _gate(stack: ResolvedStack, obj: Mapping[str, Any]) -> Gate | None:
    if obj.get("kind") not in WORKLOAD_KINDS:
        return None
    w = stack.workloads.get(str((obj.get("metadata") or {}).get("name")))
    if w is None:
        return None
    one_by_one = obj.get("kind") == "StatefulSet" or w.gpus > 0
    steps = max(1, w.replicas if one_by_one else min(w.replicas, SURGE_STEPS))
    return Gate(float(w.startup_budget_s * steps + SCHEDULE_AND_PULL_S), GATE_INTERVAL_S)


def _phase(obj: Mapping[str, Any]) -> int:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if group_of(str(obj.get("apiVersion"))) in MONITORING_GROUPS or DASHBOARD_LABEL in labels:
        return MONITORING_PHASE
    return PHASES.get(str(obj.get("kind")), 0)


def _workload(stack: ResolvedStack, obj: Mapping[str, Any]) -> str | None:
    name = ((obj.get("metadata") or {}).get("labels") or {}).get(NAME_LABEL)
    return name if name in stack.workloads else None


def desired_objects(stack: ResolvedStack, meta: Meta, served: Callable[[str, str], bool],
                    secret_value: Callable[[str], str | None]) -> Wanted:
    """Every object the stack wants on the cluster; `served(apiVersion, kind)` says what the API serves,
    `secret_value(name)` a secret's value when it can be read now (None: compared as unknown)."""
    namespace = namespace_of(stack)
    wanted = Wanted()
    compiled: list[tuple[Obj, str | None]] = [(o, None) for o in kubernetes_objects(stack, meta)]
    compiled += [(o, None) for o in prometheus.cluster_objects(stack, meta) + grafana.cluster_objects(stack, meta)]
    compiled += [(o, name) for o, name in _secret_manifests(stack, meta, namespace)]
    unserved: dict[tuple[str, str], int] = {}
    for body, secret in compiled:
        api_version, kind = str(body["apiVersion"]), str(body["kind"])
        if not served(api_version, kind):
            unserved[(api_version, kind)] = unserved.get((api_version, kind), 0) + 1
            continue
        key = key_of(body)
        digest = str((body["metadata"].get("annotations") or {}).get(HASH_ANNOTATION, ""))
        compared: Mapping[str, Any] = body
        if secret is not None:
            value = secret_value(secret)
            compared = with_secret_value(body, value) if value is not None else body
        wanted.objects[key] = DesiredObject(
            key, state_of(compared), workload=_workload(stack, body),
            secret_paths=SECRET_PATHS if kind == "Secret" else frozenset(), gate=_gate(stack, body),
            phase=_phase(body), extra=Manifest(body, digest, secret))
    for (api_version, kind), n in sorted(unserved.items()):
        wanted.skipped.append(f"{n} {kind} object(s) skipped: the API server does not serve {kind} "
                              f"({api_version}); install its CRD (e.g. the Prometheus Operator's) to apply them")
    inv = inventory.manifest(inventory.name_of(stack.project, stack.env), namespace, meta.owner_labels)
    entries = [inventory.Entry(m.api_version, m.kind, _namespace_of(m.body), str(m.body["metadata"]["name"]),
                               hash=m.hash)
               for m in (d.extra for d in wanted.objects.values()) if isinstance(m, Manifest)]
    key = key_of(inv)
    wanted.objects[key] = DesiredObject(key, inventory.state(entries), after_deletes=True,
                                        extra=Manifest(inv, "", inventory=True))
    return wanted


def _namespace_of(body: Mapping[str, Any]) -> str:
    return "" if body.get("kind") == "Namespace" else str(body["metadata"].get("namespace") or "")

