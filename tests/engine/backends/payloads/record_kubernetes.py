"""Re-records `kubernetes.json`, the API payloads the kubernetes backend's pure tests read, from a real cluster.

Run from the repository root with the Kubernetes test binaries built (`.ci/install-kube.sh`):
`python tests/engine/backends/payloads/record_kubernetes.py`. It starts the control plane of
tests/kubecluster.py in a temporary directory (two kwok nodes with 8 GPUs each), applies `kubernetes.yaml`
through the engine (project `rec`, env `default`, namespace `rec-default`, the secret `db-password` from
the value `recorded-secret`), and records, by name:

- `applied`: the namespace's objects as the API server returns them after the apply (lists, so without
  apiVersion/kind, as the backend gets them), the inventory, the Namespace;
- `dry_run_api`: the server-side apply dry run of `api`'s manifest right after, and after
  `kubectl scale deployment/api --replicas=3` the live object (`api_scaled`) and its dry run
  (`dry_run_api_scaled`);
- `api_rolling`: `api` in the middle of a rollout a pod quota holds back;
- `pod_unschedulable` and `events_unschedulable`: a pod asking for 99 GPUs, once the scheduler gave up;
- `nodes` and `pods`: every node and pod at the end.

Then it stops the cluster. Uids, times and addresses stay as recorded: no test depends on their values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
sys.path.insert(0, str(REPO / "tests"))

import kubecluster  # noqa: E402

from hxpc.compiler.bundle import Meta  # noqa: E402
from hxpc.compiler.compile import spec_hash  # noqa: E402
from hxpc.compiler.pipeline import resolve_env  # noqa: E402
from hxpc.engine import plan_live  # noqa: E402
from hxpc.engine.apply import ApplyOptions, apply  # noqa: E402
from hxpc.engine.backends.kubernetes import KubernetesOptions  # noqa: E402
from hxpc.engine.backends.kubernetes.backend import KubernetesBackend  # noqa: E402
from hxpc.engine.backends.kubernetes.desired import Manifest  # noqa: E402
from hxpc.sources import FileSources  # noqa: E402

SPEC = HERE / "kubernetes.yaml"
OUT = HERE / "kubernetes.json"
NS = "rec-default"


def main() -> None:
    os.environ["REC_DB_PASSWORD"] = "recorded-secret"
    with tempfile.TemporaryDirectory() as tmp:
        cluster = kubecluster.start_cluster(Path(tmp))
        try:
            record(cluster)
        finally:
            cluster.stop()


def kubectl(cluster: kubecluster.Cluster, *args: str) -> Any:
    out = cluster.kubectl(*args).stdout
    return json.loads(out) if out.startswith("{") else out


def record(cluster: kubecluster.Cluster) -> None:
    cluster.add_nodes(2, gpus=8, labels={"nvidia.com/gpu.product": "A100-80GB"})
    cluster.add_persistent_volumes(1, size="5Gi")
    resolved = resolve_env(FileSources(str(SPEC)), "default")
    meta = Meta("rec", "default", SPEC.name, spec_hash(resolved))
    backend = KubernetesBackend(resolved.stack, meta, KubernetesOptions(kubeconfig=str(cluster.kubeconfig)))
    plan = plan_live({"kubernetes": backend}, resolved.stack.waves, project="rec", env="default",
                     spec_hash=meta.spec_hash)
    apply(plan, {"kubernetes": backend}, env="default", spec_hash=meta.spec_hash, project="rec",
          options=ApplyOptions(handle_signals=False, parallelism=1))
    out: dict[str, Any] = {}
    c = backend.cluster
    out["applied"] = {kind: c.list(api_version, kind, NS) for api_version, kind in (
        ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"), ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"), ("policy/v1", "PodDisruptionBudget"), ("v1", "PersistentVolumeClaim"))}
    out["namespace"] = c.get("v1", "Namespace", NS, None)
    api = next(d for k, d in backend.desired().items() if k.kind == "Deployment" and k.name == "api")
    assert isinstance(api.extra, Manifest)
    out["dry_run_api"] = c.apply(api.extra.body, dry_run=True)
    cluster.kubectl("-n", NS, "scale", "deployment/api", "--replicas=3")
    out["api_scaled"] = kubectl(cluster, "-n", NS, "get", "deployment", "api", "-o", "json", "--show-managed-fields")
    out["dry_run_api_scaled"] = c.apply(api.extra.body, dry_run=True)
    cluster.kubectl("-n", NS, "rollout", "status", "deployment/api", "--timeout=60s")
    running = len(kubectl(cluster, "-n", NS, "get", "pods", "-o", "json")["items"])
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "block", "namespace": NS},
        "spec": {"hard": {"pods": str(running)}}}))
    cluster.kubectl("-n", NS, "set", "image", "deployment/api", "api=hxpc-test/busybox:2")
    time.sleep(3)
    out["api_rolling"] = kubectl(cluster, "-n", NS, "get", "deployment", "api", "-o", "json", "--show-managed-fields")
    cluster.kubectl("-n", NS, "delete", "resourcequota", "block")
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                  "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}  # the namespace enforces it
    cluster.kubectl("-n", NS, "run", "greedy", "--image=hxpc-test/busybox:1", "--overrides", json.dumps(
        {"spec": {"containers": [{"name": "greedy", "image": "hxpc-test/busybox:1", "securityContext": restricted,
                                  "resources": {"limits": {"nvidia.com/gpu": "99"}}}]}}))
    kubecluster.wait_for(lambda: "Unschedulable" in cluster.kubectl(
        "-n", NS, "get", "pod", "greedy", "-o", "jsonpath={.status.conditions[*].reason}").stdout, 60,
        "the greedy pod to be unschedulable")
    kubecluster.wait_for(lambda: kubectl(cluster, "-n", NS, "get", "events", "--field-selector",
                                         "involvedObject.name=greedy", "-o", "json")["items"], 60, "its events")
    out["pod_unschedulable"] = kubectl(cluster, "-n", NS, "get", "pod", "greedy", "-o", "json")
    out["events_unschedulable"] = kubectl(cluster, "-n", NS, "get", "events", "--field-selector",
                                          "involvedObject.name=greedy", "-o", "json")["items"]
    out["nodes"] = kubectl(cluster, "get", "nodes", "-o", "json")["items"]
    out["pods"] = kubectl(cluster, "get", "pods", "-A", "-o", "json")["items"]
    OUT.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT.relative_to(REPO)} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as exc:
        sys.exit(f"{exc}: {exc.stderr}")
