"""The kubernetes backend: plan, apply and probe a stack's objects on a Kubernetes API server.

Reading (`read_raw`) costs one GET of the namespace, one list per kind hxpc
applies there (label-selected by hxpc's ownership labels when planning; every
object of the touched kinds when apply re-reads, so one created since the plan
cannot be taken over), and a server-side apply dry run (field manager `hxpc`,
in parallel) of each desired object that may differ: an object still carrying
the desired hash whose fields hxpc still owns exactly as the inventory
recorded needs none. A dry run the server refuses because a field is immutable
is previewed as a new object and planned as a replace (refused unless
`--allow-replace`). When the stack asks for GPUs, the nodes and the pods
holding GPUs are read too, for the plan's feasibility warnings.

Applying is server-side apply with force (the spec is the source of truth,
fields others changed are taken back, fields hxpc never set stay theirs).
Secrets get their values from the environment or files at apply time (the
preflight refuses the apply, naming each one missing, before anything is
touched). A replace deletes the object (a StatefulSet with
propagationPolicy=Orphan, so its pods and claims are adopted by the new one)
and creates it again. Deletes are prunes the plan proved (see parse.py).
Before a wave creates objects, the inventory first records their names, so an
apply that dies cannot leave objects no inventory knows; the inventory's own
action, after every delete, records what the apply left.

The health gate is kstatus (kstatus.py) and fails fast, naming the pod, its
reason and its last events, when a pod cannot start (pods.py). Rollback
re-applies what hxpc had applied before the wave (the fields hxpc owned on the
live object, never the compiled spec), deletes what the wave created (never a
PersistentVolumeClaim or Namespace), recreates what it deleted, deletes a
StatefulSet's pods stuck at the failed revision, and waits for them to be
current again. The lock is a Lease, renewed while the apply runs (lease.py).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from hxpc.compiler.bundle import Meta, TargetError
from hxpc.compiler.model import ResolvedStack
from hxpc.compiler.targets import config_of
from hxpc.compiler.targets.kubernetes import KubernetesTarget, namespace_of, pod_security_level
from hxpc.engine.backend import ActionContext, HealthResult, TransientError, Undo
from hxpc.engine.backends.kubernetes import KubernetesOptions, feasibility, fields, inventory, kstatus, pods
from hxpc.engine.backends.kubernetes.client import ApiError, Cluster
from hxpc.engine.backends.kubernetes.desired import (
    WORKLOAD_KINDS,
    Manifest,
    Wanted,
    desired_objects,
    with_secret_value,
)
from hxpc.engine.backends.kubernetes.lease import LeaseLock
from hxpc.engine.backends.kubernetes.normalize import (
    TARGET,
    Obj,
    id_of,
    key_of,
    meta,
    owned_by,
    state_of,
    without_server_fields,
)
from hxpc.engine.backends.kubernetes.parse import DATA_KINDS, DryRun, Policy, Raw, parse, unchanged_since_applied
from hxpc.engine.lock import LockInfo, PrimitiveLock, acquire
from hxpc.engine.objects import DesiredObject, LiveState, ObjectKey
from hxpc.engine.plan import Action
from hxpc.engine.secrets import read_secrets
from hxpc.errors import BackendError, SpecError

T = TypeVar("T")
K = TypeVar("K")
PARALLEL = 16
UNSCHEDULABLE_GRACE_S = 15.0
WAIT_GONE_S = 120.0
ROLLBACK_WAIT_S = 300.0
POLL_S = 1.0
IMMUTABLE_HINTS = ("immutable", "may not change once set", "updates to statefulset spec for fields other than",
                   "field is not mutable")
REPLACE_REFUSAL = ("an immutable field changes: pass --allow-replace to delete and recreate it "
                   "(a StatefulSet keeps its pods and claims)")
DATA_REPLACE_REFUSAL = ("an immutable field changes, and recreating it deletes its data: pass --allow-replace "
                        "and --allow-delete-data to delete and recreate it")


# What rollback needs (`Undo.data`), one class per kind of change.
@dataclass(frozen=True)
class DeleteNew:
    """Undo a create: delete the object this uid names."""

    api_version: str
    kind: str
    namespace: str | None
    name: str
    uid: str


@dataclass(frozen=True)
class Reapply:
    """Undo an update: apply again what hxpc had applied before it (from the live object's managed fields)."""

    body: Mapping[str, Any]


@dataclass(frozen=True)
class Recreate:
    """Undo a delete (or a replace, `new_uid` set: delete the new object first): create the old one again."""

    body: Mapping[str, Any]
    new_uid: str | None = None
    propagation: str = "Background"


def _manifest(want: DesiredObject) -> Manifest:
    assert isinstance(want.extra, Manifest), want.key
    return want.extra


def _immutable(exc: ApiError) -> bool:
    text = " ".join((str(exc), *exc.causes)).lower()
    return exc.status == 422 and any(hint in text for hint in IMMUTABLE_HINTS)


def _ns(obj: Mapping[str, Any]) -> str | None:
    return None if obj.get("kind") == "Namespace" else str(meta(obj).get("namespace") or "") or None


class KubernetesBackend:
    target = TARGET

    def __init__(self, stack: ResolvedStack, meta: Meta, options: KubernetesOptions | None = None,
                 cluster: Cluster | None = None, environ: Mapping[str, str] | None = None):
        self.stack, self.meta = stack, meta
        self.options = options or KubernetesOptions()
        self.cluster = cluster or Cluster(self.options.kubeconfig, self.options.context)
        self.namespace = namespace_of(stack)
        self.config = config_of(stack.spec, KubernetesTarget) or KubernetesTarget()
        self.policy = Policy(meta.owner_labels, self.options.allow_delete_data, self.options.adopt)
        self.inventory_name = inventory.name_of(meta.project, meta.env)
        self._environ = os.environ if environ is None else environ
        self._wanted: Wanted | None = None
        self._secrets: dict[str, str] = {}
        self._unreadable: dict[str, str] = {}
        self._raw: dict[ObjectKey, Obj] = {}
        self._last: Raw | None = None
        self._applied: dict[str, inventory.Entry] = {}
        self._deleted: set[str] = set()
        self._wave_creates: list[Manifest] = []
        self._recorded_wave = False
        self._unschedulable_since: dict[str, float] = {}
        self._guard = threading.Lock()
        self._inventory_guard = threading.Lock()  # one inventory write at a time (see _record_creates)

    # -- desired --------------------------------------------------------------------------------------------------

    def _secret_value(self, name: str) -> str | None:
        if name not in self._secrets and name not in self._unreadable:
            values, problems = read_secrets([name], self.stack.spec.secrets, self._environ)
            self._secrets.update(values)
            for problem in problems:
                self._unreadable[name] = problem
        return self._secrets.get(name)

    def desired(self) -> Mapping[ObjectKey, DesiredObject]:
        if self._wanted is None:
            try:
                wanted = desired_objects(self.stack, self.meta, self.cluster.served, self._secret_value)
            except TargetError as exc:
                raise SpecError(exc.diagnostics) from exc
            def refusal(key: ObjectKey) -> str:
                if key.kind in DATA_KINDS and not (self.options.allow_replace and self.options.allow_delete_data):
                    return DATA_REPLACE_REFUSAL  # a claim or namespace recreated is its data deleted
                return "" if self.options.allow_replace else REPLACE_REFUSAL

            wanted.objects = {k: dataclasses.replace(d, replace_refusal=refusal(k)) for k, d in wanted.objects.items()}
            self._wanted = wanted
        return self._wanted.objects

    # -- reading --------------------------------------------------------------------------------------------------

    def _parallel(self, calls: Mapping[K, Callable[[], T]]) -> dict[K, T]:
        if not calls:
            return {}
        with ThreadPoolExecutor(max_workers=min(PARALLEL, len(calls)), thread_name_prefix="hxpc-k8s") as pool:
            futures = {k: pool.submit(c) for k, c in calls.items()}
            return {k: f.result() for k, f in futures.items()}

    def _inventory_object(self) -> Obj | None:
        return self.cluster.get("v1", "ConfigMap", self.inventory_name, self.namespace)

    def read_raw(self, keys: Collection[ObjectKey] | None = None) -> Raw:
        """Planning (`keys` None): what hxpc owns in the namespace, dry runs of what may change, GPU capacity.
        Apply (`keys`): the touched objects and anything now standing where they would go."""
        wanted = self.desired()
        full = keys is None
        touched = set(keys or ())
        raw = Raw(full=full)
        namespace = self.cluster.get("v1", "Namespace", self.namespace, None)
        if full:
            raw.nodes, raw.pods, raw.warnings = self._gpu_capacity(wanted)
            raw.gpu_checked = not raw.warnings
        if namespace is None:
            self._remember_read(raw)
            return raw  # nothing can exist in a namespace that does not
        raw.objects.append(namespace)
        raw.inventory = self._inventory_object()
        previous = inventory.decode(raw.inventory)
        kinds: dict[str, tuple[str, str]] = {}
        for key, want in wanted.items():
            if (full or key in touched) and key.kind != "Namespace":
                kinds[key.kind] = (_manifest(want).api_version, key.kind)
        for entry in previous.values():
            if entry.namespace and (full or any(k.kind == entry.kind for k in touched)):
                kinds.setdefault(entry.kind, (entry.api_version, entry.kind))
        selector = ",".join(f"{k}={v}" for k, v in sorted(self.meta.owner_labels.items())) if full else None
        listed = self._parallel({kind: partial(self._list_kind, api_version, kind, selector)
                                 for kind, (api_version, _) in kinds.items()})
        for items in listed.values():
            raw.objects += [o for o in items if full or key_of(o) in touched]
        live = {key_of(o): o for o in raw.objects}
        candidates = [k for k in wanted if (full or k in touched) and k.kind != "Namespace"]
        candidates += [k for k in wanted if k.kind == "Namespace" and k in live and (full or k in touched)]
        raw.dry_runs = self._dry_runs(candidates, live, previous, full)
        if full:
            for key, dry in raw.dry_runs.items():
                if key not in live and dry.result is not None and meta(dry.result).get("resourceVersion"):
                    # a desired name taken by something that is not hxpc's
                    raw.in_the_way[key] = (self.cluster.get(_manifest(wanted[key]).api_version, key.kind, key.name,
                                                            _ns(dict(_manifest(wanted[key]).body)))
                                           if self.policy.adopt else None)
        self._remember_read(raw)
        return raw

    def _list_kind(self, api_version: str, kind: str, selector: str | None) -> list[Obj]:
        return self.cluster.list(api_version, kind, self.namespace, selector) if self.cluster.served(
            api_version, kind) else []

    def _remember_read(self, raw: Raw) -> None:
        found = {key_of(o): o for o in raw.objects}
        found.update({k: o for k, o in raw.in_the_way.items() if o is not None})
        with self._guard:
            self._raw.update(found)
            self._last = raw

    def _dry_runs(self, candidates: Sequence[ObjectKey], live: Mapping[ObjectKey, Obj],
                  previous: Mapping[str, inventory.Entry], full: bool) -> dict[ObjectKey, DryRun]:
        wanted = self.desired()
        calls: dict[ObjectKey, Callable[[], DryRun]] = {}
        for key in candidates:
            want = wanted[key]
            manifest = _manifest(want)
            if manifest.inventory:
                continue
            obj = live.get(key)
            if obj is None and not full:
                continue  # apply re-read: absent, so a create (nothing to compare)
            if manifest.secret is not None and self._secret_value(manifest.secret) is None:
                continue  # the value is unknown now: compared as unchanged, and the plan warns
            if (obj is not None and owned_by(obj, self.policy.owner_labels)
                    and unchanged_since_applied(obj, want, previous.get(manifest.id))
                    and (manifest.secret is None or state_of(obj).get("data") == want.state.get("data"))):
                continue
            calls[key] = partial(self._dry_run, key, manifest)
        return self._parallel(calls)

    def _body(self, manifest: Manifest) -> Obj:
        if manifest.secret is None:
            return dict(manifest.body)
        value = self._secret_value(manifest.secret)
        if value is None:
            raise BackendError(f"secret `{manifest.secret}`: {self._unreadable.get(manifest.secret, 'unreadable')}")
        return with_secret_value(manifest.body, value)

    def _dry_run(self, key: ObjectKey, manifest: Manifest) -> DryRun:
        body = self._body(manifest)
        try:
            return DryRun(self.cluster.apply(body, dry_run=True))
        except ApiError as exc:
            if not _immutable(exc):
                raise BackendError(f"{key}: the API server refuses the manifest: {exc}") from exc
            refusal = str(exc).split(": ", 1)[-1]
        # what it would be as a new object (a dry-run create under another name), to show the changes
        preview = dict(body)
        preview["metadata"] = {**body["metadata"], "name": f"{str(body['metadata']['name'])[:45]}-hxpc-preview"}
        try:
            made = self.cluster.create(preview, dry_run=True)
        except ApiError as exc:
            raise BackendError(f"{key}: the API server refuses it in place ({refusal}) and as a new object: "
                               f"{exc}") from exc
        made["metadata"] = {**made.get("metadata", {}), "name": body["metadata"]["name"]}
        return DryRun(made, f"the server refuses to change it in place ({refusal})")

    def _gpu_capacity(self, wanted: Mapping[ObjectKey, DesiredObject]) -> tuple[list[Obj], list[Obj], list[str]]:
        demands = [d for d in (feasibility.demand_of(_manifest(w).body, self.config.gpu_resource)
                               for k, w in wanted.items() if k.kind in WORKLOAD_KINDS) if d is not None]
        if not demands:
            return [], [], []
        resource = self.config.gpu_resource
        try:
            nodes = [n for n in self.cluster.list("v1", "Node", None)
                     if feasibility.gpus_of(((n.get("status") or {}).get("allocatable") or {}).get(resource)) > 0]
            # only the pods on GPU nodes, a list per node (in parallel): never every pod of the cluster
            per_node = self._parallel({str(n["metadata"]["name"]): partial(
                self.cluster.list, "v1", "Pod", None,
                field_selector=f"spec.nodeName={n['metadata']['name']},status.phase!=Succeeded,status.phase!=Failed")
                for n in nodes})
        except ApiError as exc:
            return [], [], [f"cannot check that the GPU workloads fit: {exc}"]
        return nodes, [p for pods in per_node.values() for p in pods], []

    def parse(self, raw: Raw) -> LiveState:
        return parse(raw, self.desired(), self.policy)

    def plan_warnings(self) -> list[str]:
        wanted = self.desired()
        out = list(self._wanted.skipped if self._wanted else [])
        raw = self._last
        if raw is not None:
            out += raw.warnings
            demands = [d for d in (feasibility.demand_of(_manifest(w).body, self.config.gpu_resource)
                                   for k, w in wanted.items() if k.kind in WORKLOAD_KINDS) if d is not None]
            if demands and raw.gpu_checked:
                out += feasibility.check(demands, raw.nodes, raw.pods, self.config.gpu_resource,
                                         f"{self.meta.project}-{self.meta.env}")
        for _, problem in sorted(self._unreadable.items()):
            out.append(f"{problem}: its value is not compared now, and apply needs it")
        for w in self.stack.workloads.values():
            level, why = pod_security_level(w, self.config.model_cache)
            if level != "restricted":
                out.append(f"{w.kind} `{w.name}`: its pods leave Pod Security \"restricted\" because {why}; "
                           f"namespace {self.namespace} enforces \"{level}\"")
        return out

    # -- applying -------------------------------------------------------------------------------------------------

    def _lease(self) -> LeaseLock:
        return LeaseLock(self.cluster, self.namespace, f"hxpc-lock-{self.meta.project}-{self.meta.env}",
                         self.meta.owner_labels)

    def lock(self, info: LockInfo) -> PrimitiveLock:
        """The Lease; the engine renews it while the apply runs (`hxpc.engine.lock.Renewal`)."""
        return acquire(self._lease(), info, f"{self.meta.project}/{self.meta.env} in namespace {self.namespace}")

    def lock_primitives(self) -> dict[str, LeaseLock]:
        return {f"namespace {self.namespace}": self._lease()}

    def prepare(self, actions: Sequence[Action]) -> None:
        """Before anything is touched: the value of every Secret the plan writes."""
        wanted = self.desired()
        names = {_manifest(wanted[a.key]).secret for a in actions
                 if a.kind in ("create", "update", "replace") and a.key in wanted}
        needed = sorted(n for n in names if n is not None)
        problems = [self._unreadable[n] for n in needed if self._secret_value(n) is None]
        if problems:
            raise BackendError("missing secrets; nothing was touched:\n" + "\n".join(f"  {p}" for p in problems))

    def begin_wave(self, actions: Sequence[Action]) -> None:
        wanted = self.desired()
        creates = [_manifest(wanted[a.key]) for a in actions if a.kind == "create" and a.key in wanted]
        with self._guard:
            self._wave_creates = [m for m in creates if not m.inventory and m.kind != "Namespace"]
            self._recorded_wave = False

    def end_wave(self, actions: Sequence[Action]) -> None:
        """Nothing is batched per wave."""

    def _record_creates(self) -> None:
        """Before the wave's first create: the inventory names what the wave creates (see the module)."""
        # the wave's parallel creates wait here until the inventory names them all; a failed write is tried
        # again by the next create (or its retry), so nothing is created before it is recorded
        with self._inventory_guard:
            with self._guard:
                if self._recorded_wave or not self._wave_creates:
                    return
                creates = list(self._wave_creates)
            entries = inventory.decode(self._inventory_object())
            for m in creates:
                entry = inventory.Entry(m.api_version, m.kind, str(m.body["metadata"].get("namespace") or ""),
                                        str(m.body["metadata"]["name"]))
                entries.setdefault(entry.id, entry)
            self.cluster.apply(inventory.manifest(self.inventory_name, self.namespace, self.meta.owner_labels,
                                                  entries.values()))
            with self._guard:
                self._recorded_wave = True

    def _remember(self, manifest: Manifest, result: Mapping[str, Any]) -> None:
        m = meta(result)
        entry = inventory.Entry(manifest.api_version, manifest.kind, str(m.get("namespace") or "")
                                if manifest.kind != "Namespace" else "", str(m.get("name")), str(m.get("uid") or ""),
                                manifest.hash, fields.own_digest(result))
        with self._guard:
            self._applied[entry.id] = entry

    def apply_action(self, action: Action, ctx: ActionContext) -> Undo | None:
        key = action.key
        old = self._raw.get(key)
        if action.kind == "delete":
            return self._delete(key, old)
        want = ctx.desired or self.desired()[key]
        manifest = _manifest(want)
        if manifest.inventory:
            self._write_inventory()
            return None
        body = self._body(manifest)
        if action.kind == "replace" and old is not None:
            return self._replace(key, manifest, body, old)
        if action.kind == "create":
            self._record_creates()
        result = self.cluster.apply(body)
        self._remember(manifest, result)
        if action.kind == "create" or old is None:
            if manifest.kind in DATA_KINDS:
                return None  # never deleted by a rollback: it may already hold data
            return Undo(key, f"delete the new {key.kind} {key.name}",
                        DeleteNew(manifest.api_version, key.kind, _ns(body), key.name, str(meta(result).get("uid"))))
        before = fields.applied_part(old)
        if before is None:
            return None  # adopted: hxpc had applied nothing to restore
        return Undo(key, f"re-apply {key.kind} {key.name} as hxpc had applied it", Reapply(before))

    def _wait_gone(self, api_version: str, kind: str, name: str, namespace: str | None, uid: str) -> None:
        deadline = time.monotonic() + WAIT_GONE_S
        while time.monotonic() < deadline:
            now = self.cluster.get(api_version, kind, name, namespace)
            if now is None or meta(now).get("uid") != uid:
                return
            time.sleep(POLL_S)
        finalizers = ", ".join(meta(now or {}).get("finalizers") or [])
        held = f" (held by its finalizers {finalizers})" if finalizers else ""
        message = f"{kind} {name} is still being deleted after {WAIT_GONE_S:g}s{held}"
        if kind in DATA_KINDS:  # a claim in use by pods stays until they go: waiting longer does not help
            raise BackendError(f"{message}: stop the pods that use it, then apply again")
        raise TransientError(message)

    def _delete(self, key: ObjectKey, old: Obj | None) -> Undo | None:
        if old is None:
            return None  # already gone
        uid = str(meta(old).get("uid"))
        api_version = str(old.get("apiVersion"))
        self.cluster.delete(api_version, key.kind, key.name, _ns(old), uid=uid)
        with self._guard:
            self._deleted.add(id_of(old))
        if key.kind in DATA_KINDS:
            return None  # its data went with it: nothing can bring it back
        return Undo(key, f"create {key.kind} {key.name} again", Recreate(without_server_fields(old)))

    def _replace(self, key: ObjectKey, manifest: Manifest, body: Obj, old: Obj) -> Undo:
        uid = str(meta(old).get("uid"))
        # a StatefulSet's pods and claims stay (orphaned) and are adopted by the new one
        propagation = "Orphan" if key.kind == "StatefulSet" else "Background"
        self.cluster.delete(manifest.api_version, key.kind, key.name, _ns(body), uid=uid, propagation=propagation)
        self._wait_gone(manifest.api_version, key.kind, key.name, _ns(body), uid)
        result = self.cluster.apply(body)
        self._remember(manifest, result)
        return Undo(key, f"delete the new {key.kind} {key.name} and create the previous one again",
                    Recreate(without_server_fields(old), str(meta(result).get("uid")), propagation))

    def _write_inventory(self) -> None:
        wanted = self.desired()
        previous = inventory.decode(self._inventory_object())
        entries: dict[str, inventory.Entry] = {}
        for want in wanted.values():
            manifest = _manifest(want)
            if manifest.inventory:
                continue
            entry = self._applied.get(manifest.id)
            if entry is None:
                before = previous.get(manifest.id)
                if before is not None and before.uid and before.fields:
                    entry = dataclasses.replace(before, hash=manifest.hash)
                else:
                    entry = self._entry_of(manifest.api_version, manifest.kind, dict(manifest.body), manifest.hash)
            if entry is not None:
                entries[entry.id] = entry
        for object_id, before in previous.items():
            if object_id in entries or object_id in self._deleted:
                continue
            carried = self._entry_of(before.api_version, before.kind, {
                "kind": before.kind, "metadata": {"name": before.name, "namespace": before.namespace}}, before.hash)
            if carried is not None and (not before.uid or carried.uid == before.uid):
                entries[object_id] = dataclasses.replace(carried, fields=before.fields or carried.fields)
        self.cluster.apply(inventory.manifest(self.inventory_name, self.namespace, self.meta.owner_labels,
                                              entries.values()))

    def _entry_of(self, api_version: str, kind: str, body: Mapping[str, Any], digest: str) -> inventory.Entry | None:
        """The live object's entry (uid, the fields hxpc owns), or None when it is not there or not hxpc's."""
        if not self.cluster.served(api_version, kind):
            return None
        name = str(meta(body).get("name"))
        obj = self.cluster.get(api_version, kind, name, _ns(body))
        if obj is None or not owned_by(obj, self.meta.owner_labels):
            return None
        m = meta(obj)
        return inventory.Entry(api_version, kind, "" if kind == "Namespace" else str(m.get("namespace") or ""),
                               name, str(m.get("uid") or ""), digest, fields.own_digest(obj))

    # -- rollback -------------------------------------------------------------------------------------------------

    def rollback(self, undo: Undo) -> None:
        match undo.data:
            case DeleteNew(api_version=api_version, kind=kind, namespace=namespace, name=name, uid=uid):
                self.cluster.delete(api_version, kind, name, namespace, uid=uid)
                self._wait_gone(api_version, kind, name, namespace, uid)
            case Reapply(body=body):
                self.cluster.apply(body)
                self._settle(undo.key, dict(body))
            case Recreate(body=body, new_uid=new_uid, propagation=propagation):
                api_version, kind = str(body["apiVersion"]), str(body["kind"])
                name, namespace = str(body["metadata"]["name"]), _ns(body)
                if new_uid:
                    self.cluster.delete(api_version, kind, name, namespace, uid=new_uid, propagation=propagation)
                    self._wait_gone(api_version, kind, name, namespace, new_uid)
                self._rerecord(self.cluster.apply(body))
                self._settle(undo.key, dict(body))
            case other:
                raise TypeError(f"no rollback for {other!r}")

    def _rerecord(self, made: Mapping[str, Any]) -> None:
        """A rollback made an object again, under a new uid: the inventory follows it, or a later prune could
        never prove the object hxpc's (prune needs the inventory's uid to match)."""
        m = meta(made)
        entry = inventory.Entry(str(made.get("apiVersion")), str(made.get("kind")),
                                "" if made.get("kind") == "Namespace" else str(m.get("namespace") or ""),
                                str(m.get("name")))
        with self._inventory_guard:
            entries = inventory.decode(self._inventory_object())
            before = entries.get(entry.id)
            if before is None:
                return
            entries[entry.id] = dataclasses.replace(before, uid=str(m.get("uid") or ""),
                                                    fields=fields.own_digest(made))
            self.cluster.apply(inventory.manifest(self.inventory_name, self.namespace, self.meta.owner_labels,
                                                  entries.values()))
        with self._guard:
            self._deleted.discard(entry.id)
            self._applied.pop(entry.id, None)

    def _settle(self, key: ObjectKey, body: Obj) -> None:
        """After a rollback: a StatefulSet's pods stuck at the failed revision go (the controller never replaces
        a pod that is not ready), then wait until the workload is current again."""
        if key.kind not in WORKLOAD_KINDS:
            return
        want = self.desired().get(key)
        budget = want.gate.budget_s if want is not None and want.gate is not None else ROLLBACK_WAIT_S
        deadline = time.monotonic() + budget
        api_version, namespace = str(body["apiVersion"]), _ns(body)
        cleared = key.kind != "StatefulSet"
        while True:
            obj = self.cluster.get(api_version, key.kind, key.name, namespace)
            if obj is None:
                raise BackendError(f"{key.kind} {key.name} is gone after its rollback")
            status = kstatus.compute(obj)
            if status.current:
                return
            if not cleared and (obj.get("status") or {}).get("observedGeneration", 0) >= meta(obj).get("generation", 0):
                self._delete_stuck_pods(obj)
                cleared = True
            if time.monotonic() >= deadline:
                raise BackendError(f"{key.kind} {key.name} is not current {budget:g}s after its rollback: "
                                   f"{status.describe()}")
            time.sleep(POLL_S * 2)

    def _pods_of(self, obj: Mapping[str, Any]) -> list[Obj]:
        labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return self.cluster.list("v1", "Pod", _ns(obj), label_selector=selector) if selector else []

    def _delete_stuck_pods(self, sts: Mapping[str, Any]) -> None:
        revision = (sts.get("status") or {}).get("updateRevision")
        for pod in self._pods_of(sts):
            m = meta(pod)
            at = (m.get("labels") or {}).get("controller-revision-hash")
            if revision and at != revision and not kstatus.compute(pod).current:
                self.cluster.delete("v1", "Pod", str(m.get("name")), _ns(pod), uid=str(m.get("uid")))

    # -- health ---------------------------------------------------------------------------------------------------

    def health(self, key: ObjectKey, deadline: float) -> HealthResult:
        want = self.desired().get(key)
        if want is None or key.kind not in WORKLOAD_KINDS:
            return HealthResult(True, "")
        manifest = _manifest(want)
        obj = self.cluster.get(manifest.api_version, key.kind, key.name, self.namespace)
        if obj is None:
            return HealthResult(False, f"{key.kind} {key.name} does not exist", final=True)
        status = kstatus.compute(obj)
        if status.current:
            return HealthResult(True, status.describe())
        its_pods = self._pods_of(obj)
        found = pods.problems(its_pods)
        now = time.monotonic()
        fatal = []
        for problem in found:
            if problem.needs_grace:
                with self._guard:
                    since = self._unschedulable_since.setdefault(f"{problem.uid}/{problem.reason}", now)
                if now - since < UNSCHEDULABLE_GRACE_S:
                    continue
            fatal.append(problem)
        if fatal or status.state == "Failed":
            return HealthResult(False, self._report(status, fatal), final=True)
        waiting = "; ".join(pods.not_ready(its_pods))
        return HealthResult(False, status.describe() + (f"; {waiting}" if waiting else ""))

    def _report(self, status: kstatus.Status, fatal: Sequence[pods.PodProblem]) -> str:
        parts = [status.describe()]
        for problem in fatal[:3]:
            events = self.cluster.list("v1", "Event", self.namespace,
                                       field_selector=f"involvedObject.kind=Pod,involvedObject.name={problem.pod}")
            recent = pods.recent_events(events)
            parts.append(problem.describe() + (f"; last events: {' | '.join(recent)}" if recent else ""))
        return "; ".join(parts)

