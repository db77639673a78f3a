"""The kubernetes target: every service and model as plain Kubernetes objects in one namespace.

Layout of `<env>/kubernetes/`: `namespace.yaml` holds the Namespace, and one
`<name>.yaml` per service or model holds all of that workload's objects as a
multi-document file, in this order: ConfigMap `<name>-env` (plain `env`, read
with `envFrom`), Service `<name>` (ClusterIP, ports by name), Service
`<name>-headless` (StatefulSets only: their `serviceName`, so that clients keep
the load-balanced `<name>` and pods get stable `<name>-<i>.<name>-headless`
DNS), the Deployment or StatefulSet (a service with `volumes` is a StatefulSet
with one volumeClaimTemplate per volume), and a PodDisruptionBudget
(maxUnavailable 1) when replicas > 1. Files are in the order `kubernetes_objects`
returns the objects: the Namespace, then workloads by apply wave. Secrets are
never emitted: containers read them with `secretKeyRef` (Secret = the spec's
secret name, key `value`) and apply creates them from the environment or files;
until then pods wait in CreateContainerConfigError. Applying with plain
`kubectl apply -f <dir>` needs `namespace.yaml` applied first (kubectl goes in
file-name order; `hxpc apply` orders by wave).

Decisions the spec leaves open, made for a demanding operator:
- `restart`: a Deployment's pods always restart. `always` maps exactly; so does
  `on-failure`, because every hxpc workload is a long-running server (replicas,
  health checks, `depends_on` waits for healthy) and such a process exiting 0
  has stopped serving as surely as one that crashed. `never` has no faithful
  mapping (only a bare Pod or Job could, losing replicas and rollouts), so it
  is an HX401 error naming `restart` and the target.
- Security: pods meet the `restricted` Pod Security Standard unless the spec
  says otherwise, and the Namespace enforces the level its pods meet
  (`pod-security.kubernetes.io/enforce`: `baseline` when a workload has
  `security.run_as_root`, `privileged` with a host-path model cache). Pods run
  as UID/GID 65532 unless `security` names a user and group (`runAsNonRoot`
  alone would refuse images whose USER is root or a name, such as postgres,
  redis and vLLM, which all run fine as an arbitrary UID), with fsGroup equal
  to the group so volumes are writable, seccomp RuntimeDefault, no privilege
  escalation, all capabilities dropped. Model servers also get a read-only
  root filesystem (unless `security.read_only_root_filesystem` says no): vLLM
  writes only to /tmp, HOME (set to /tmp) and the Hugging Face cache
  (`HF_HOME`, default /var/cache/huggingface), and NCCL's /dev/shm is a
  memory-backed emptyDir. Services keep a writable root filesystem unless
  their `security` asks otherwise: hxpc cannot know where an arbitrary image
  writes scratch files (postgres needs /var/run/postgresql).
- Model cache: without `targets.kubernetes.model_cache` the Hugging Face cache
  is an emptyDir, so every restart downloads the weights again. With
  `{size, access_mode: ReadWriteMany}` every model replica mounts one claim,
  `model-cache` (in `namespace.yaml`); with `ReadWriteOnce` or
  `ReadWriteOncePod` each replica gets its own claim, so models become
  StatefulSets (`podManagementPolicy: Parallel`) whose rollouts replace one pod
  at a time and never need a second pod on another node; with `{host_path}`
  the node's directory is mounted (and Pod Security must be `privileged`).
- Resources: requests = limits = the spec's cpu and memory, as the other
  targets enforce them as limits; equal values give Guaranteed QoS, which keeps
  GPU servers from being evicted first under memory pressure. GPUs are a
  `targets.kubernetes.gpu_resource` limit, with the node selector
  `nvidia.com/gpu.product: <gpus.model>` of the first of the workload's hosts
  that has GPUs (unless `targets.kubernetes.node_selector` overrides it; `{}`
  turns it off) and a toleration of the `nvidia.com/gpu` taint.
- Rollouts follow `update.max_unavailable` (k) as the other targets do: a pod
  holding GPUs is replaced stop-first (maxSurge 0, maxUnavailable k): the GPU
  budget is validated exactly, so a surge pod would wait for a GPU forever.
  Any other Deployment pod starts beside its old one (maxSurge max(1, k),
  maxUnavailable 0). A StatefulSet pod keeps its name and volume, so it is
  always replaced stop-first, k at a time (`rollingUpdate.maxUnavailable`,
  written only when k > 1, which the controller does without it).
- Probes: the startup probe runs every `interval` for long enough to cover the
  startup budget (failureThreshold x periodSeconds >= budget), then readiness
  and liveness take over with the health check's interval, timeout and
  retries. `progressDeadlineSeconds` is at least the budget plus five minutes
  for scheduling and image pulls, so a 70B model's rollout is not reported
  stuck while it loads weights.
- `hosts` only choose the GPU node selector; `depends_on` is kept as the
  annotation `hxpc.dev/depends-on` and enforced by apply waves; service links
  and service-account tokens are off (the other targets inject neither).

Every object carries the labels `app.kubernetes.io/{name,instance,part-of,managed-by}`,
`hxpc.dev/project` and `hxpc.dev/env` and the annotation `hxpc.dev/hash`, the
object's hash without that annotation. Pod templates and volumeClaimTemplates
carry only `app.kubernetes.io/{name,instance,part-of}`: pods and their claims
are the controllers' objects, not hxpc's, and the ownership labels are what apply
prunes by. Names Kubernetes
would refuse (a Service starting with a digit, a port name over 15 characters,
a StatefulSet name over 52) are HX404 errors rather than silently changed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from hxpc.compiler import yamlout
from hxpc.compiler.bundle import Meta, TargetError, object_hash
from hxpc.compiler.fieldrules import reject
from hxpc.compiler.fieldtypes import SPEC_CONFIG, Name, Size
from hxpc.compiler.quantities import format_cpu, format_size
from hxpc.compiler.targets import Platform, Problem, config_of, missing_field, surge_problems
from hxpc.diagnostics import Diagnostic
from hxpc.records import record

if TYPE_CHECKING:
    from hxpc.compiler.model import Probe, ResolvedStack, Workload
    from hxpc.compiler.spec import Stack

Obj = dict[str, Any]

TARGET = "kubernetes"


AccessMode = Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]


@record(kw_only=True)
class ModelCache:
    """Where model servers keep downloaded weights across restarts and rollouts: a PersistentVolumeClaim
    (`size`, `access_mode`, `storage_class`) or a directory on each node (`host_path`)."""

    __pydantic_config__ = SPEC_CONFIG
    size: Size | None = None
    """a claim of this size (e.g. 200Gi) holds the weights"""
    access_mode: AccessMode = "ReadWriteMany"
    """ReadWriteMany: one claim every replica shares; ReadWriteOnce or ReadWriteOncePod: one claim per replica"""
    storage_class: str | None = None
    """default: the cluster's default storage class"""
    host_path: str | None = None
    """a node directory instead of a claim (pods then need Pod Security "privileged")"""

    def __post_init__(self) -> None:
        if (self.size is None) == (self.host_path is None):
            reject("combination", "a model cache needs exactly one of `size` (a claim) or `host_path`")
        if self.host_path is not None and not self.host_path.startswith("/"):
            reject("combination", "`host_path` must be an absolute path")


@record(kw_only=True)
class KubernetesTarget:
    """Kubernetes manifests."""

    __pydantic_config__ = SPEC_CONFIG
    namespace: Name | None = None
    """default: <project>-<env>"""
    gpu_resource: str = "nvidia.com/gpu"
    """extended resource name GPUs are requested as"""
    node_selector: dict[str, str] | None = None
    """overrides the default GPU node selector `nvidia.com/gpu.product: <gpus.model>`"""
    model_cache: ModelCache | None = None
    """model weights outlive pods (default: an emptyDir per pod, downloaded again on every start)"""


Config = KubernetesTarget


def placement(config: KubernetesTarget) -> None:
    """The scheduler places pods: nothing runs on the spec's hosts."""
    return None


def check(config: KubernetesTarget, stack: Stack, workloads: Mapping[str, Workload]) -> Iterator[Problem]:
    yield from missing_field(stack, "image", "the kubernetes target", "HX309",
                             hint="add `image:` or drop the target for this environment")
    yield from surge_problems(TARGET, workloads, surge_blocker)


def surge_blocker(w: Workload) -> str:
    """Why a new pod of `w` cannot start beside the one it replaces ("" when it can): pods publish no host
    ports, but GPUs are budgeted exactly and a StatefulSet pod's name and volume are its own."""
    reasons = [f"holds {w.gpus} GPU(s)"] if w.gpus else []
    if w.volumes:
        reasons.append("is a StatefulSet pod whose name and volume only one pod can hold")
    return " and ".join(reasons)


def platform(config: KubernetesTarget, stack: ResolvedStack) -> Platform:
    return Platform("cluster", TARGET, namespace=namespace_of(stack))


HASH_ANNOTATION = "hxpc.dev/hash"
RUN_AS = 65532  # the conventional "nonroot" UID/GID (distroless); any non-zero id would do
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
TMP_DIR = "/tmp"
HF_HOME_DEFAULT = "/var/cache/huggingface"
PULL_AND_SCHEDULE_S = 300
# A StatefulSet's pods carry `controller-revision-hash: <name>-<10-char hash>`, a label value (<= 63).
STATEFULSET_NAME_MAX = 52
RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
MODEL_CACHE_CLAIM = "model-cache"
CACHE_VOLUME = "hf-cache"
# Pod Security levels, most restrictive first: the namespace enforces the least restrictive its pods need
PSS_LEVELS = ("restricted", "baseline", "privileged")

_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_EXTENDED_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@record(frozen=False)
class _Ctx:
    stack: ResolvedStack
    meta: Meta
    target: KubernetesTarget
    namespace: str
    instance: str
    problems: list[Diagnostic]

    @property
    def cache(self) -> ModelCache | None:
        return self.target.model_cache

    def per_replica_cache(self, w: Workload) -> bool:
        """A model whose cache claim one node at a time may mount: a claim per replica (a StatefulSet)."""
        cache = self.cache
        return w.kind == "model" and cache is not None and cache.size is not None and \
            cache.access_mode != "ReadWriteMany"

    def error(self, code: str, message: str, field: str, hint: str | None = None) -> None:
        """Report in the other targets' form: the message, then the spec field and the target."""
        self.problems.append(Diagnostic(code, f"{message} (field `{field}`, target {TARGET})", hint=hint))


def _field(w: Workload, name: str) -> str:
    return f"{'models' if w.kind == 'model' else 'services'}.{w.name}{'.' + name if name else ''}"


def namespace_of(stack: ResolvedStack) -> str:
    target = config_of(stack.spec, KubernetesTarget)
    return (target.namespace if target and target.namespace else None) or f"{stack.project}-{stack.env}"


def kubernetes_objects(stack: ResolvedStack, meta: Meta) -> list[Obj]:
    """Every object of the stack, Namespace first, then workloads by apply wave; raises TargetError."""
    return [obj for objects in _objects_by_file(stack, meta).values() for obj in objects]


def emit(stack: ResolvedStack, meta: Meta) -> dict[str, str]:
    header = meta.header()
    return {path: header + yamlout.dump_all(objects) for path, objects in _objects_by_file(stack, meta).items()}


def _objects_by_file(stack: ResolvedStack, meta: Meta) -> dict[str, list[Obj]]:
    ctx = _Ctx(stack, meta, config_of(stack.spec, KubernetesTarget) or KubernetesTarget(), namespace_of(stack),
               f"{stack.project}-{stack.env}", [])
    _check_target(ctx)
    files: dict[str, list[Obj]] = {"namespace.yaml": [_namespace(ctx)]}
    claim = _shared_cache_claim(ctx)
    if claim is not None:
        files["namespace.yaml"].append(claim)
    for wave in stack.waves:
        for name in wave:
            if f"{name}.yaml" in files:
                ctx.error("HX404", f"{stack.workloads[name].kind} `{name}` would be written to `namespace.yaml`, "
                          "which holds the kubernetes Namespace", _field(stack.workloads[name], ""),
                          hint="rename it")
                continue
            files[f"{name}.yaml"] = _workload(stack.workloads[name], ctx)
    seen: set[tuple[str, str]] = set()
    for objects in files.values():
        for obj in objects:
            key = (obj["kind"], obj["metadata"]["name"])
            if key in seen:
                ctx.error("HX404", f"two kubernetes objects are named {key[0]} `{key[1]}`",
                          _field(stack.workloads[obj["metadata"]["labels"]["app.kubernetes.io/name"]], ""),
                          hint="rename one of the services or models (a StatefulSet `x` also makes Service "
                               "`x-headless`, and every workload with env makes ConfigMap `<name>-env`)")
            seen.add(key)
    if ctx.problems:
        raise TargetError(ctx.problems)
    return files


def _check_target(ctx: _Ctx) -> None:
    if ctx.namespace in RESERVED_NAMESPACES:
        ctx.error("HX404", f"kubernetes namespace `{ctx.namespace}` is shared with the cluster; hxpc owns the "
                  "namespace it deploys to (it creates it and enforces Pod Security on it)",
                  "targets.kubernetes.namespace",
                  hint="set targets.kubernetes.namespace to a namespace of the stack's own")
    _check_label_value(ctx, ctx.instance, "the label app.kubernetes.io/instance (`<project>-<env>`)", "project")
    if not _EXTENDED_RESOURCE.match(ctx.target.gpu_resource) or len(ctx.target.gpu_resource) > 253:
        ctx.error("HX404", f"targets.kubernetes.gpu_resource `{ctx.target.gpu_resource}` is not an extended "
                  "resource name", "targets.kubernetes.gpu_resource",
                  hint="write it as <domain>/<name>, e.g. nvidia.com/gpu")
    for key, value in (ctx.target.node_selector or {}).items():
        if not _LABEL_KEY.match(key):
            ctx.error("HX404", f"node selector key `{key}` is not a kubernetes label key",
                      "targets.kubernetes.node_selector")
        _check_label_value(ctx, value, f"node selector `{key}`", "targets.kubernetes.node_selector")


def _check_label_value(ctx: _Ctx, value: str, what: str, field: str) -> None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        ctx.error("HX404", f"`{value}` is not a valid kubernetes label value, needed for {what}", field,
                  hint="label values are at most 63 letters, digits, `-`, `_` or `.`, "
                       "starting and ending with a letter or digit")


def _labels(ctx: _Ctx, name: str) -> dict[str, str]:
    return {**_app_labels(ctx, name), **ctx.meta.owner_labels}


def _app_labels(ctx: _Ctx, name: str) -> dict[str, str]:
    """The labels of what hxpc's objects make (pods, their claims): which app they are, not hxpc's ownership,
    so that nothing listing hxpc's objects by label ever mistakes a pod or a claim for one of them."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": ctx.instance,
            "app.kubernetes.io/part-of": ctx.stack.project}


def _selector(ctx: _Ctx, name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": ctx.instance}


def _object(ctx: _Ctx, api_version: str, kind: str, name: str, owner: str, body: Obj,
            annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
            namespaced: bool = True) -> Obj:
    """An object with hxpc's labels and `hxpc.dev/hash`, the hash of the object without it."""
    metadata: Obj = {"name": name, "labels": {**_labels(ctx, owner), **(labels or {})},
                     "annotations": dict(annotations or {})}
    if namespaced:
        metadata["namespace"] = ctx.namespace
    obj: Obj = {"apiVersion": api_version, "kind": kind, "metadata": metadata, **body}
    metadata["annotations"][HASH_ANNOTATION] = object_hash(obj)
    return obj


def pod_security_level(w: Workload, cache: ModelCache | None) -> tuple[str, str]:
    """The Pod Security Standard a workload's pods meet, and why when it is not "restricted"."""
    if w.kind == "model" and cache is not None and cache.host_path is not None:
        return "privileged", "its model cache is a host path (targets.kubernetes.model_cache.host_path)"
    if w.security is not None and w.security.run_as_root:
        return "baseline", "it runs as root (security.run_as_root)"
    return "restricted", ""


def _namespace(ctx: _Ctx) -> Obj:
    # Pod Security admission refuses any pod below the level every hxpc pod of the stack meets
    level = max((pod_security_level(w, ctx.cache)[0] for w in ctx.stack.workloads.values()),
                key=PSS_LEVELS.index, default="restricted")
    pss = {f"pod-security.kubernetes.io/{mode}": level for mode in ("enforce", "audit", "warn")}
    return _object(ctx, "v1", "Namespace", ctx.namespace, ctx.namespace, {}, labels=pss, namespaced=False)


def _cache_claim_spec(cache: ModelCache) -> Obj:
    spec: Obj = {"accessModes": [cache.access_mode],
                 "resources": {"requests": {"storage": format_size(cache.size or 0)}}}
    if cache.storage_class is not None:
        spec["storageClassName"] = cache.storage_class
    return spec


def _shared_cache_claim(ctx: _Ctx) -> Obj | None:
    """The one claim every model replica mounts (ReadWriteMany): weights are downloaded once per cluster."""
    cache = ctx.cache
    if cache is None or cache.size is None or cache.access_mode != "ReadWriteMany":
        return None
    if not any(w.kind == "model" for w in ctx.stack.workloads.values()):
        return None
    return _object(ctx, "v1", "PersistentVolumeClaim", MODEL_CACHE_CLAIM, MODEL_CACHE_CLAIM,
                   {"spec": _cache_claim_spec(cache)})


def _workload(w: Workload, ctx: _Ctx) -> list[Obj]:
    _check_names(w, ctx)
    stateful = bool(w.volumes) or ctx.per_replica_cache(w)
    objects: list[Obj] = []
    config_hash = None
    if w.env:
        config_map = _object(ctx, "v1", "ConfigMap", f"{w.name}-env", w.name, {"data": dict(w.env)})
        config_hash = config_map["metadata"]["annotations"][HASH_ANNOTATION]
        objects.append(config_map)
    ports = [{"name": p, "port": n, "targetPort": p} for p, n in w.ports.items()]
    if ports:
        objects.append(_object(ctx, "v1", "Service", w.name, w.name, {"spec": {
            "type": "ClusterIP", "selector": _selector(ctx, w.name), "ports": ports}}))
    if stateful:
        # pods of a StatefulSet are addressed (and find their peers) before they are ready
        objects.append(_object(ctx, "v1", "Service", f"{w.name}-headless", w.name, {"spec": {
            "clusterIP": "None", "publishNotReadyAddresses": True, "selector": _selector(ctx, w.name),
            "ports": ports}}))
    objects.append(_controller(w, ctx, stateful, config_hash))
    if w.replicas > 1:
        objects.append(_object(ctx, "policy/v1", "PodDisruptionBudget", w.name, w.name, {"spec": {
            "maxUnavailable": 1, "selector": {"matchLabels": _selector(ctx, w.name)}}}))
    return objects


def _check_names(w: Workload, ctx: _Ctx) -> None:
    what = f"{w.kind} `{w.name}`"
    if (w.ports or w.volumes) and not _DNS_1035.match(w.name):
        ctx.error("HX404", f"{what} needs a kubernetes Service, whose name must start with a letter",
                  _field(w, ""), hint="rename it, e.g. to `svc-" + w.name + "`")
    if (w.volumes or ctx.per_replica_cache(w)) and len(w.name) > STATEFULSET_NAME_MAX:
        ctx.error("HX404", f"{what} has volumes and becomes a StatefulSet, whose name kubernetes limits to "
                  f"{STATEFULSET_NAME_MAX} characters ({len(w.name)} given)", _field(w, ""), hint="shorten the name")
    for port in w.ports:
        # container and Service port names are IANA service names
        if len(port) > 15 or "--" in port or not re.search("[a-z]", port):
            ctx.error("HX404", f"port `{port}` of {what} is not a valid kubernetes port name",
                      _field(w, f"ports.{port}"),
                      hint="use at most 15 lowercase letters, digits and single `-`, with at least one letter")
    if w.restart == "never":
        ctx.error("HX401", f"`restart: never` of {what} cannot be expressed by the kubernetes target: the pods of "
                  "a Deployment or StatefulSet are always restarted", _field(w, "restart"),
                  hint="use `restart: on-failure` or `always` in this environment, or drop the kubernetes target")
    if w.volumes:
        for vol_name, vol in w.volumes.items():
            if vol.size is None:
                ctx.error("HX403", f"volume `{vol_name}` of {what} has no `size`, which a kubernetes "
                          "PersistentVolumeClaim needs", _field(w, f"volumes.{vol_name}.size"),
                          hint="add `size`, e.g. `size: 10Gi`")


def _gpu_node_selector(w: Workload, ctx: _Ctx) -> dict[str, str]:
    if ctx.target.node_selector is not None:
        return dict(ctx.target.node_selector)
    for host_name in w.hosts:
        host = ctx.stack.spec.hosts.get(host_name)
        if host is not None and host.gpus is not None:
            _check_label_value(ctx, host.gpus.model, f"the GPU node selector of {w.kind} `{w.name}`",
                               f"hosts.{host_name}.gpus.model")
            return {GPU_PRODUCT_LABEL: host.gpus.model}
    return {}  # no host says which GPU: the resource limit alone picks a GPU node


def _controller(w: Workload, ctx: _Ctx, stateful: bool, config_hash: str | None) -> Obj:
    pod_labels = _app_labels(ctx, w.name)
    pod_annotations: dict[str, str] = {}
    if config_hash:
        pod_annotations["hxpc.dev/config-hash"] = config_hash  # a changed ConfigMap rolls the pods
    if w.metrics is not None:
        pod_annotations.update({"prometheus.io/scrape": "true", "prometheus.io/port": str(w.metrics[0]),
                                "prometheus.io/path": w.metrics[1]})
    template_meta: Obj = {"labels": pod_labels}
    if pod_annotations:
        template_meta["annotations"] = pod_annotations
    template: Obj = {"metadata": template_meta, "spec": _pod(w, ctx)}
    spec: Obj = {"replicas": w.replicas, "selector": {"matchLabels": _selector(ctx, w.name)}, "template": template}
    annotations = {"hxpc.dev/depends-on": ",".join(w.depends_on)} if w.depends_on else {}
    if stateful:
        spec["serviceName"] = f"{w.name}-headless"
        claims = [(vol_name, {"accessModes": ["ReadWriteOnce"],
                              "resources": {"requests": {"storage": format_size(vol.size or 0)}}})
                  for vol_name, vol in sorted(w.volumes.items())]
        if ctx.per_replica_cache(w) and ctx.cache is not None:
            claims.append((CACHE_VOLUME, _cache_claim_spec(ctx.cache)))
            # replicas load their weights at once, as a Deployment's would; rollouts stay one pod at a time
            spec["podManagementPolicy"] = "Parallel"
        # apiVersion and kind as the server stores them, so a re-plan compares equal
        spec["volumeClaimTemplates"] = [
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": name, "labels": _app_labels(ctx, w.name)}, "spec": claim}
            for name, claim in claims]
        if w.max_unavailable > 1:
            spec["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": w.max_unavailable}}
        return _object(ctx, "apps/v1", "StatefulSet", w.name, w.name, {"spec": spec}, annotations)
    spec["progressDeadlineSeconds"] = max(600, w.startup_budget_s + PULL_AND_SCHEDULE_S)
    at_once = max(1, w.max_unavailable)
    rolling = {"maxSurge": 0, "maxUnavailable": at_once} if surge_blocker(w) else {"maxSurge": at_once,
                                                                                  "maxUnavailable": 0}
    spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": rolling}
    return _object(ctx, "apps/v1", "Deployment", w.name, w.name, {"spec": spec}, annotations)


def _pod_security(w: Workload) -> Obj:
    """The pod's user and group: the spec's `security`, else 65532 (see the module docstring)."""
    sec = w.security
    if sec is not None and sec.run_as_root:
        user, group = 0, sec.run_as_group if sec.run_as_group is not None else 0
    else:
        user = sec.run_as_user if sec is not None and sec.run_as_user is not None else RUN_AS
        group = (sec.run_as_group if sec is not None and sec.run_as_group is not None
                 else user if sec is not None and sec.run_as_user is not None else RUN_AS)
    return {"runAsNonRoot": user != 0, "runAsUser": user, "runAsGroup": group, "fsGroup": group,
            "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}}


def _pod(w: Workload, ctx: _Ctx) -> Obj:
    container, volumes = _container(w, ctx)
    pod: Obj = {
        "containers": [container],
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(w),
    }
    if volumes:
        pod["volumes"] = volumes
    if w.gpus:
        selector = _gpu_node_selector(w, ctx)
        if selector:
            pod["nodeSelector"] = selector
        pod["tolerations"] = [dict(GPU_TOLERATION)]
    return pod


def _literal(argv: Iterable[str]) -> list[str]:
    """Escape `$(VAR)` as `$$(VAR)`: the kubelet expands it from the container's environment (secrets
    included), while the other targets pass it through as written."""
    return [arg.replace("$(", "$$(") for arg in argv]


def _container(w: Workload, ctx: _Ctx) -> tuple[Obj, list[Obj]]:
    container: Obj = {"name": w.name, "image": w.image}
    command, args = w.command, list(w.args)
    if command == ():
        # an explicitly empty entrypoint: kubernetes cannot clear the image's ENTRYPOINT with `command: []`,
        # but running the args as the command is what the container runtimes do
        if not args:
            ctx.error("HX401", f"`command: []` without `args` of {w.kind} `{w.name}` cannot be expressed by the "
                      "kubernetes target (an empty command means the image's entrypoint there)",
                      _field(w, "command"), hint="give the command to run in `command` or `args`")
        command, args = tuple(args[:1]), args[1:]
    if command:
        container["command"] = _literal(command)
    if args:
        container["args"] = _literal(args)
    if w.ports:
        container["ports"] = [{"name": p, "containerPort": n} for p, n in w.ports.items()]
    if w.env:
        container["envFrom"] = [{"configMapRef": {"name": f"{w.name}-env"}}]
    env: list[Obj] = [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": "value"}}}
                      for var, secret in sorted(w.secrets.items())]
    mounts: list[Obj] = []
    volumes: list[Obj] = []
    if w.kind == "model":
        hf_home = w.env.get("HF_HOME", HF_HOME_DEFAULT)
        for var, value in (("HF_HOME", hf_home), ("HOME", w.env.get("HOME", TMP_DIR))):
            if var not in w.env:
                env.append({"name": var, "value": value})
        volumes.append({"name": "tmp", "emptyDir": {}})
        cache = _cache_volume(ctx)
        if cache is not None and not ctx.per_replica_cache(w):  # a per-replica claim comes from the template
            volumes.append(cache)
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts += [{"name": "tmp", "mountPath": TMP_DIR}, {"name": CACHE_VOLUME, "mountPath": hf_home},
                   {"name": "dshm", "mountPath": "/dev/shm"}]
    for vol_name, vol in sorted(w.volumes.items()):
        mounts.append({"name": vol_name, "mountPath": vol.path})
    if env:
        container["env"] = sorted(env, key=lambda e: str(e["name"]))
    if mounts:
        container["volumeMounts"] = mounts
    resources = _resources(w, ctx)
    if resources:
        container["resources"] = resources
    if w.probe is not None:
        container.update(_probes(w.probe, w.startup_budget_s))
    read_only = w.security.read_only_root_filesystem if w.security is not None else None
    container["securityContext"] = {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": w.kind == "model" if read_only is None else read_only,
    }
    return container, volumes


def _cache_volume(ctx: _Ctx) -> Obj | None:
    """The pod volume that holds a model's Hugging Face cache: the shared claim, a node path, or an emptyDir."""
    cache = ctx.cache
    if cache is None:
        return {"name": CACHE_VOLUME, "emptyDir": {}}
    if cache.host_path is not None:
        return {"name": CACHE_VOLUME, "hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"}}
    if cache.access_mode == "ReadWriteMany":
        return {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": MODEL_CACHE_CLAIM}}
    return None


def _resources(w: Workload, ctx: _Ctx) -> Obj:
    amounts: dict[str, str] = {}
    if w.cpu_millis is not None:
        amounts["cpu"] = format_cpu(w.cpu_millis)
    if w.memory_bytes is not None:
        amounts["memory"] = format_size(w.memory_bytes)
    resources: Obj = {}
    if amounts:
        resources = {"requests": dict(amounts), "limits": dict(amounts)}
    if w.gpus:
        # extended resources are limits only; the request defaults to the limit
        resources.setdefault("limits", {})[ctx.target.gpu_resource] = str(w.gpus)
    return resources


def _seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


def _handler(probe: Probe) -> Obj:
    if probe.kind == "http":
        return {"httpGet": {"path": probe.path or "/", "port": probe.port_name or probe.port}}
    if probe.kind == "tcp":
        return {"tcpSocket": {"port": probe.port_name or probe.port}}
    return {"exec": {"command": list(probe.command or ())}}


def _probes(probe: Probe, budget_s: int) -> Obj:
    period, timeout = _seconds(probe.interval_ms), _seconds(probe.timeout_ms)

    def make(failure_threshold: int) -> Obj:  # fresh dicts each: callers may edit one probe
        return {**_handler(probe), "periodSeconds": period, "timeoutSeconds": timeout,
                "failureThreshold": failure_threshold}

    return {"startupProbe": make(max(1, math.ceil(budget_s / period))),
            "readinessProbe": make(probe.retries), "livenessProbe": make(probe.retries)}
