"""A test's stack on the real control plane of tests/kubecluster.py: its spec, plans and applies, and reads.

Every `KubeStack` has its own project (so its own namespace `<project>-test`,
Lease and inventory) on the session's cluster, and `cleanup` deletes the
namespace and any Lease it left in `default`. Pods are run by kwok: they become
Ready as soon as they are scheduled on a kwok node, never run a container, and
pods scheduled on the "manual" node (`add_manual_node`, not kwok's) stay
Pending until a test patches their status, which is how tests inject faults
the cluster cannot produce without a kubelet (CrashLoopBackOff,
ImagePullBackOff). A ResourceQuota on pods (`block_new_pods`) keeps a rollout
waiting without failing it: the controller cannot create the new pod, the old
one keeps serving, and the health gate waits.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import textwrap
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubecluster
from kubecluster import Cluster, wait_for

import harnesses
from harnesses import Svc
from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import compile_env, spec_hash
from hxpc.compiler.pipeline import resolve_env
from hxpc.engine import plan_live
from hxpc.engine.apply import ApplyOptions, apply
from hxpc.engine.backends.kubernetes import KubernetesOptions, kstatus
from hxpc.engine.backends.kubernetes.backend import KubernetesBackend
from hxpc.engine.lock import LockHandle, new_lock_info
from hxpc.engine.plan import Plan
from hxpc.engine.render import render_json, render_text
from hxpc.engine.report import ApplyReport
from hxpc.sources import FileSources

IMAGE = "hxpc-test/busybox:1"   # never pulled: kwok runs no containers
IMAGE2 = "hxpc-test/busybox:2"
ENV = "test"
GPU_MODEL = "A100-80GB"
MANUAL_GPU_MODEL = "H100-MANUAL"  # only the manual node has it: pods there wait for a test to set their status
REPO = Path(__file__).resolve().parents[2]


def svc(port: int = 8080, *, image: str = IMAGE, replicas: int = 1, env: dict[str, str] | None = None,
        **extra: Any) -> dict[str, Any]:
    return {"image": image, "ports": {"http": port}, "replicas": replicas, "env": env or {},
            "health": {"http": {"path": "/health", "port": "http"}, "interval": "1s", "timeout": "1s",
                       "retries": 2}, **extra}


def model(*, gpus_model: str = GPU_MODEL, tensor_parallel: int = 2, replicas: int = 1, **extra: Any) -> dict[str, Any]:
    return {"source": "org/tiny-llm", "params_b": 1.0, "max_model_len": 4096, "tensor_parallel": tensor_parallel,
            "architecture": {"layers": 16, "kv_heads": 8, "head_dim": 64},
            "replicas": replicas, "port": 8000, "image": "hxpc-test/vllm:1",
            "hosts": ["gpu-manual" if gpus_model == MANUAL_GPU_MODEL else "gpu-kwok"], **extra}


class KubeStack:
    """One test's project on the shared cluster (and the contract suite's harness for kubernetes)."""

    name = "kubernetes"
    detects_secret_rotation = True   # a Secret's value is compared by hash at plan time

    def __init__(self, cluster: Cluster, tmp_path: Path):
        self.cluster = cluster
        self.tmp = tmp_path
        self.project = f"k{uuid.uuid4().hex[:8]}"
        self.namespace = f"{self.project}-{ENV}"
        self.scope = f"kubernetes:{self.namespace}"
        self.spec = tmp_path / f"{self.project}.yaml"
        self.shown: list[str] = []
        self.volumes = 0
        self.svcs: dict[str, Svc] = {}
        self.ports: dict[str, int] = {}

    # -- the spec -------------------------------------------------------------------------------------------------

    def write_raw(self, services: dict[str, Any], models: dict[str, Any] | None = None,
              secrets: dict[str, Any] | None = None, monitoring: bool = False, gpus_declared: int = 8,
              **target: Any) -> Path:
        """The spec; `gpus_declared` is what the spec's GPU host claims (the cluster's nodes have 8 each)."""
        doc: dict[str, Any] = {
            "apiVersion": "hxpc/v1", "project": self.project,
            "hosts": {"gpu-kwok": {"gpus": {"count": gpus_declared, "model": GPU_MODEL, "memory": "80Gi"}},
                      "gpu-manual": {"gpus": {"count": 8, "model": MANUAL_GPU_MODEL, "memory": "80Gi"}}},
            "services": services, "models": models or {}, "secrets": secrets or {},
            "targets": {"kubernetes": dict(target)}, "environments": {ENV: {}}}
        if monitoring:
            doc["monitoring"] = {"scrape_interval": "15s", "alerts": True, "dashboards": True}
        self.spec.write_text(json.dumps(doc, indent=1))  # JSON is YAML
        return self.spec

    # -- the engine -----------------------------------------------------------------------------------------------

    def backend(self, **options: Any) -> tuple[KubernetesBackend, Meta, Any]:
        resolved = resolve_env(FileSources(str(self.spec)), ENV)
        meta = Meta(resolved.stack.project, ENV, self.spec.name, spec_hash(resolved))
        opts = KubernetesOptions(kubeconfig=str(self.cluster.kubeconfig), **options)
        return KubernetesBackend(resolved.stack, meta, opts), meta, resolved.stack

    def plan(self, **options: Any) -> Plan:
        backend, meta, stack = self.backend(**options)
        plan = plan_live({"kubernetes": backend}, stack.waves, project=meta.project, env=ENV,
                         spec_hash=meta.spec_hash)
        self.shown += [render_text(plan), render_json(plan)]
        return plan

    def apply(self, plan: Plan | None = None, *, options: dict[str, Any] | None = None, **opts: Any) -> ApplyReport:
        backend, meta, stack = self.backend(**(options or {}))
        made = plan or plan_live({"kubernetes": backend}, stack.waves, project=meta.project, env=ENV,
                                 spec_hash=meta.spec_hash)
        progress = opts.pop("progress", None)
        report = apply(made, {"kubernetes": backend}, env=ENV, spec_hash=meta.spec_hash, project=meta.project,
                       options=ApplyOptions(handle_signals=False, backoff_s=0.1, **opts), progress=progress)
        self.shown.append(report.render())
        return report

    # -- reading the cluster --------------------------------------------------------------------------------------

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.cluster.kubectl("-n", self.namespace, *args, check=check).stdout

    def read(self, kind: str, name: str) -> dict[str, Any] | None:
        out = self.cluster.kubectl("-n", self.namespace, "get", kind, name, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def names(self, kind: str) -> list[str]:
        return sorted(self.kubectl("get", kind, "-o", "name").split())

    def pods_of(self, name: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-l", f"app.kubernetes.io/name={name}", "-o", "json")
        return list(json.loads(out)["items"])

    def lease(self) -> dict[str, Any] | None:
        for namespace in (self.namespace, "default"):
            out = self.cluster.kubectl("-n", namespace, "get", "lease", f"hxpc-lock-{self.project}-{ENV}", "-o",
                                       "json", check=False)
            if out.returncode == 0:
                return dict(json.loads(out.stdout))
        return None

    def wait_rolled_out(self, kind: str, name: str, timeout: float = 60) -> None:
        self.kubectl("rollout", "status", f"{kind}/{name}", f"--timeout={int(timeout)}s")

    # -- faults and obstacles -------------------------------------------------------------------------------------

    def block_new_pods(self) -> None:
        """A pod quota at what runs now: a rollout's new pod cannot be created, the old one keeps serving."""
        running = len(json.loads(self.kubectl("get", "pods", "-o", "json"))["items"])
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "block", "namespace": self.namespace},
            "spec": {"hard": {"pods": str(running)}}}))

    def set_waiting(self, pod: str, reason: str, message: str) -> None:
        """Test-only fault: what a kubelet reports for a container that cannot start (kwok runs none)."""
        status = {"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": pod.rsplit("-", 2)[0], "image": IMAGE, "imageID": "", "ready": False,
                                   "restartCount": 3, "state": {"waiting": {"reason": reason, "message": message}}}]}}
        self.cluster.kubectl("-n", self.namespace, "patch", "pod", pod, "--subresource=status", "--type=merge",
                             "-p", json.dumps(status))

    @contextlib.contextmanager
    def kubelet_for_manual_node(self) -> Iterator[None]:
        """Test-only stand-in for the kubelet the manual node lacks: a pod deleted there is confirmed gone
        (as a kubelet confirms a graceful deletion), so a controller can replace it."""
        stop = threading.Event()

        def confirm() -> None:
            while not stop.wait(0.5):
                out = self.cluster.kubectl("-n", self.namespace, "get", "pods", "-o", "json", check=False)
                for pod in json.loads(out.stdout or "{}").get("items", []):
                    if pod["spec"].get("nodeName") == "manual-0" and pod["metadata"].get("deletionTimestamp"):
                        self.cluster.kubectl("-n", self.namespace, "delete", "pod", pod["metadata"]["name"],
                                             "--grace-period=0", "--force", check=False)

        thread = threading.Thread(target=confirm, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(30)

    def cleanup(self) -> None:
        self.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false", "--ignore-not-found", check=False)
        self.cluster.kubectl("-n", "default", "delete", "lease", f"hxpc-lock-{self.project}-{ENV}",
                             "--ignore-not-found", check=False)

    # -- the contract suite's Harness -------------------------------------------------------------------------------

    def write(self, services: Mapping[str, Svc], secrets: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.svcs = dict(services)
        raw: dict[str, Any] = {}
        for name, s in services.items():
            port = self.ports.setdefault(name, 8080 + len(self.ports))
            spec = svc(port, image=IMAGE if s.version == 1 else IMAGE2, replicas=s.replicas, env=dict(s.env),
                       secrets=dict(s.secrets), depends_on=list(s.depends_on))
            if s.broken:  # more GPUs than any node has: the scheduler says so, and the gate fails fast
                spec["resources"] = {"gpus": 16}
            if s.volume:
                spec["volumes"] = {"data": {"path": "/data", "size": "1Gi"}}
            if not s.health:
                spec.pop("health")
            raw[name] = spec
        claims = sum(s.replicas for s in services.values() if s.volume)
        if claims > self.volumes:
            self.cluster.add_persistent_volumes(claims - self.volumes, size="5Gi",
                                                name_prefix=f"{self.project}-pv{self.volumes}-")
            self.volumes = claims
        self.write_raw(raw, secrets=dict(secrets or {}))

    def desired(self) -> set[str]:
        return {str(k) for k in self.backend()[0].desired()}

    def addresses(self, name: str) -> set[str]:
        return {str(k) for k, d in self.backend()[0].desired().items() if d.workload == name}

    def bookkeeping(self) -> set[str]:
        return {f"{self.scope}/ConfigMap/hxpc-inventory-{self.project}-{ENV}"}

    def _workload(self, name: str) -> dict[str, Any] | None:
        return self.read("deployment", name) or self.read("statefulset", name)

    def _settled(self, name: str) -> list[dict[str, Any]] | None:
        workload = self._workload(name)
        if workload is None or not kstatus.compute(workload).current:
            return None
        pods = self.pods_of(name)
        if len(pods) != workload["spec"]["replicas"] or any(p["metadata"].get("deletionTimestamp") for p in pods):
            return None
        return pods

    def instances(self, name: str) -> set[str]:
        pods = wait_for(lambda: self._settled(name), 60, f"{name}'s rollout to settle")
        return {p["metadata"]["uid"] for p in pods}

    def serving(self, name: str) -> bool:
        try:
            pods = wait_for(lambda: self._settled(name), 60, f"{name} to be current")
        except kubecluster.ClusterError:
            return False
        return all(kstatus.compute(p).current for p in pods)

    def exists(self, name: str) -> bool:
        return self._workload(name) is not None

    def add_stray(self) -> Any:
        self.kubectl("create", "configmap", "theirs", "--from-literal=k=v")
        self.kubectl("create", "configmap", "lookalike", "--from-literal=k=v")  # hxpc's labels, in no inventory
        self.kubectl("label", "configmap", "lookalike", "app.kubernetes.io/managed-by=hxpc",
                     f"hxpc.dev/project={self.project}", f"hxpc.dev/env={ENV}")
        return {n: self.read("configmap", n)["metadata"]["uid"] for n in ("theirs", "lookalike")}  # type: ignore[index]

    def stray_intact(self, stray: Any) -> bool:
        return all((self.read("configmap", n) or {}).get("metadata", {}).get("uid") == uid for n, uid in stray.items())

    def put_in_the_way(self, name: str) -> str:
        self.kubectl("create", "service", "clusterip", name, "--tcp=80:8080")
        return f"{self.scope}/Service/{name}"

    def change_outside(self, name: str) -> str:
        self.kubectl("label", "deployment", name, "edited=by-hand")
        return f"{self.scope}/Deployment/{name}: changed since the plan was made"

    def lock_held(self) -> bool:
        return self.lease() is not None

    def hold_lock(self) -> LockHandle:
        return self.backend()[0].lock(new_lock_info("0ther5pec", 600))

    def sees_secret(self, name: str, variable: str, value: str) -> bool:
        """Pods read it from the Secret (kwok runs no process to ask): the reference and the Secret's value."""
        env = {e["name"]: e for e in self._workload(name)["spec"]["template"]["spec"]["containers"][0]["env"]}  # type: ignore[index]
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        secret = self.read("secret", ref["name"]) or {}
        return bool(base64.b64decode(secret.get("data", {}).get(ref["key"], "")).decode() == value)

    def written(self) -> str:
        mine = f"hxpc.dev/project={self.project}"  # not the cluster's own (its CA certificate is random text)
        objects = json.loads(self.kubectl("get", "all,configmap,lease,pdb", "-l", mine, "-o", "json"))
        pods = json.loads(self.kubectl("get", "pods", "-l", f"app.kubernetes.io/part-of={self.project}", "-o",
                                       "json"))
        secrets = json.loads(self.kubectl("get", "secrets", "-l", mine, "-o", "json"))
        metadata = [s["metadata"] for s in secrets["items"]]          # a Secret's data is where the value belongs
        resolved = resolve_env(FileSources(str(self.spec)), ENV)
        artifacts = "".join(compile_env(resolved, self.spec.name).files.values())
        return "\n".join(self.shown) + json.dumps([objects, pods, metadata]) + artifacts

    # -- what only the kubernetes backend promises -------------------------------------------------------------------

    def verify_fresh(self, report: ApplyReport) -> None:
        actions = report.plan.actions
        assert actions[0].key.kind == "Namespace" and actions[-1].key.name == f"hxpc-inventory-{self.project}-{ENV}"
        inventory = json.loads(self.read("configmap", f"hxpc-inventory-{self.project}-{ENV}")["data"]["objects.json"])  # type: ignore[index]
        assert all(e["uid"] for e in inventory.values()) and len(inventory) == len(report.plan.actions) - 1

    def verify_replan(self) -> None:
        backend, meta, stack = self.backend()
        dry_runs = []
        apply_ = backend.cluster.apply
        backend.cluster.apply = lambda body, dry_run=False: dry_runs.append(body) or apply_(body, dry_run)  # type: ignore[method-assign]
        assert not plan_live({"kubernetes": backend}, stack.waves, project=meta.project, env=ENV,
                             spec_hash=meta.spec_hash).has_changes
        assert dry_runs == []   # every object still carries its hash and hxpc still owns its fields

    def verify_changed(self, plan: Plan, what: str) -> None:
        touched = {(a.kind, a.key.kind, a.key.name) for a in plan.touched}
        inventory = ("update", "ConfigMap", f"hxpc-inventory-{self.project}-{ENV}")
        if what == "version":
            assert touched == {("update", "Deployment", "web"), inventory}
        else:  # the pod template's config hash rolls the pods when their ConfigMap changes
            assert touched == {("update", "ConfigMap", "db-env"), ("update", "StatefulSet" if self.svcs["db"].volume
                                                                    else "Deployment", "db"), inventory}

    def verify_applied_change(self) -> None:
        assert all(p["spec"]["containers"][0]["image"] == IMAGE2 for p in self.pods_of("web"))

    def verify_pruned(self, name: str) -> None:
        if self.volumes:  # a claim holds data: it outlives its StatefulSet (it was never hxpc's)
            assert self.read("pvc", f"data-{name}-0") is not None
        # the prune it describes succeeded, so the inventory no longer names what went
        recorded = self.read("configmap", f"hxpc-inventory-{self.project}-{ENV}")["data"]["objects.json"]  # type: ignore[index]
        assert f"/{self.namespace}/{name}" not in recorded and f"/{self.namespace}/web" in recorded

    def verify_rolled_back(self, report: ApplyReport, name: str, before: set[str]) -> None:
        result = report.results[f"{self.scope}/Deployment/{name}"]
        assert "Unschedulable" in result.health and "Insufficient nvidia.com/gpu" in result.health
        assert "last events: Warning FailedScheduling" in result.health
        limits = self._workload(name)["spec"]["template"]["spec"]["containers"][0].get("resources", {})  # type: ignore[index]
        assert "nvidia.com/gpu" not in limits.get("limits", {})
        assert {(a.kind, a.key.kind) for a in self.plan().touched} == {("update", "Deployment"),
                                                                       ("update", "ConfigMap")}

    def verify_secret(self, name: str, value: str) -> None:
        secret = self.read("secret", "tok") or {}
        assert secret.get("type") == "Opaque" and secret["metadata"]["labels"]["hxpc.dev/project"] == self.project


def add_manual_node(cluster: Cluster, name: str = "manual-0", gpus: int = 8) -> str:
    """A node kwok does not manage: pods scheduled there stay Pending until a test sets their status."""
    import kubernetes.client

    core = kubernetes.client.CoreV1Api(cluster.api_client())
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    # the GPU taint keeps every pod that does not ask for GPUs (and so tolerates it) off this node
    gpu_taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    core.create_node({"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                            "nvidia.com/gpu.product": MANUAL_GPU_MODEL}},
                      "spec": {"taints": [gpu_taint]},
                      "status": {"capacity": resources, "allocatable": resources,
                                 "conditions": [{"type": "Ready", "status": "True", "reason": "Manual",
                                                 "message": "set by the test"}]}})

    def untainted() -> bool:
        node = core.read_node(name)
        if any(t.key == kubecluster.NOT_READY_TAINT for t in node.spec.taints or []):
            core.patch_node(name, {"spec": {"taints": [gpu_taint]}})
            return False
        return True

    wait_for(untainted, 30, f"node {name} without the not-ready taint")
    return name


# -- an apply in a subprocess, as the command line runs it (for signals and kill -9) ---------------------------------

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from hxpc.compiler.bundle import Meta
    from hxpc.compiler.compile import spec_hash
    from hxpc.compiler.pipeline import resolve_env
    from hxpc.engine import plan_live
    from hxpc.engine.apply import ApplyOptions, apply
    from hxpc.engine.backends.kubernetes import KubernetesOptions
    from hxpc.engine.backends.kubernetes.backend import KubernetesBackend
    from hxpc.engine.progress import PlainProgress
    from hxpc.engine.report import ApplyFailed, ApplyInterrupted
    from hxpc.sources import FileSources

    spec, env, kubeconfig = sys.argv[1], sys.argv[2], sys.argv[3]
    resolved = resolve_env(FileSources(spec), env)
    meta = Meta(resolved.stack.project, env, spec, spec_hash(resolved))
    backend = KubernetesBackend(resolved.stack, meta, KubernetesOptions(kubeconfig=kubeconfig))
    TARGET = "kubernetes"
""") + harnesses.APPLY_SCRIPT_TAIL


def start_apply(stack: KubeStack, **env: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`apply` in a subprocess; returns once it waits on a health gate."""
    script = stack.tmp / "apply_script.py"
    script.write_text(SCRIPT)
    return harnesses.start_apply(script, [str(stack.spec), ENV, str(stack.cluster.kubeconfig)], REPO, env,
                                 timeout=60)
