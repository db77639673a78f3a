"""Benchmark: `hxpc plan` for the kubernetes target against a real API server, beside `kubectl diff --server-side`.

Starts the test control plane of tests/kubecluster.py (etcd, kube-apiserver, controllers, scheduler, kwok;
built by .ci/install-kube.sh) with kwok nodes enough for every pod, then for each N applies a generated
stack of N services (a ConfigMap, a Service and a Deployment each, plus the Namespace and the inventory)
with `hxpc apply`, and measures on the settled cluster:

- hxpc's plan, best of 3 (a fresh backend each time, discovery included), and the HTTP requests one plan
  sends to the API server (counted at the client): the live state is one list per kind in the namespace,
  and no object needs a server-side dry run while its hash annotation and hxpc's managed fields show it
  unchanged since hxpc applied it;
- the same plan after one service's image changed (one dry run), and after every one changed (N dry runs,
  in parallel);
- `kubectl diff --server-side --field-manager=hxpc` on the very manifests `hxpc compile` writes, best of
  3, where kubectl is installed: kubectl dry-runs every object, one request each.

Everything the bench made goes with the cluster. Run by bench/plan.py (its kubernetes case), or alone:
python bench/plan_kubernetes.py [N ...]   (default 10 100 500)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import kubecluster  # noqa: E402

from hxpc.compiler.bundle import Meta  # noqa: E402
from hxpc.compiler.compile import compile_env, spec_hash  # noqa: E402
from hxpc.compiler.pipeline import resolve_env  # noqa: E402
from hxpc.engine import plan_live  # noqa: E402
from hxpc.engine.apply import ApplyOptions, apply  # noqa: E402
from hxpc.engine.backends.kubernetes import KubernetesOptions  # noqa: E402
from hxpc.engine.backends.kubernetes.backend import KubernetesBackend  # noqa: E402
from hxpc.engine.plan import Plan  # noqa: E402
from hxpc.sources import FileSources  # noqa: E402

ENV = "bench"
IMAGE = "hxpc-test/busybox:1"


def write_spec(directory: Path, project: str, n: int, changed: int | None = None) -> Path:
    """N services; service `changed` (-1: every one) on another image."""
    services = {f"s{i:04d}": {"image": IMAGE if changed not in (i, -1) else "hxpc-test/busybox:2",
                              "ports": {"http": 8080},
                              "env": {"INDEX": str(i)}, "resources": {"cpu": "10m", "memory": "16Mi"}}
                for i in range(n)}
    spec = directory / f"{project}.yaml"
    spec.write_text(json.dumps({"apiVersion": "hxpc/v1", "project": project, "services": services,
                                "targets": {"kubernetes": {}}, "environments": {ENV: {}}}))
    return spec


def backend(spec: Path, kubeconfig: Path) -> tuple[KubernetesBackend, Meta, Any]:
    resolved = resolve_env(FileSources(str(spec)), ENV)
    meta = Meta(resolved.stack.project, ENV, spec.name, spec_hash(resolved))
    return KubernetesBackend(resolved.stack, meta, KubernetesOptions(kubeconfig=str(kubeconfig))), meta, resolved


def counted_plan(spec: Path, kubeconfig: Path) -> tuple[float, Counter[str], Plan]:
    """One plan with a fresh backend; its wall time and the API requests it sent (method and resource)."""
    b, meta, resolved = backend(spec, kubeconfig)
    calls: Counter[str] = Counter()
    api = b.cluster.api
    send = api.call_api

    def counting(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        path = url.split("?", 1)[0].split("/", 3)[-1]
        query = url.split("?", 1)[1] if "?" in url else ""
        kind = "dry-run" if "dryRun=All" in query else method
        resource = path.rstrip("/").split("/")[-2 if method == "PATCH" else -1] if path.count("/") > 3 else path
        calls[f"{kind} {resource}"] += 1
        return send(method, url, *args, **kwargs)

    api.call_api = counting  # type: ignore[method-assign]
    began = time.monotonic()
    plan = plan_live({"kubernetes": b}, resolved.stack.waves, project=meta.project, env=ENV,
                     spec_hash=meta.spec_hash)
    return time.monotonic() - began, calls, plan


def best_plan(spec: Path, kubeconfig: Path) -> tuple[float, Counter[str], Plan]:
    best: tuple[float, Counter[str], Plan] | None = None
    for _ in range(3):
        took, calls, plan = counted_plan(spec, kubeconfig)
        if best is None or took < best[0]:
            best = (took, calls, plan)
    assert best is not None
    return best


def kubectl_diff(spec: Path, out: Path, kubeconfig: Path) -> tuple[float, int] | None:
    if shutil.which("kubectl") is None:
        return None
    resolved = resolve_env(FileSources(str(spec)), ENV)
    files = compile_env(resolved, spec.name, ["kubernetes"]).files
    shutil.rmtree(out, ignore_errors=True)
    for path, text in files.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text)
    manifests = out / ENV / "kubernetes"
    best, code = float("inf"), 0
    for _ in range(3):
        began = time.monotonic()
        done = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "diff", "--server-side",
                               "--field-manager=hxpc", "--force-conflicts", "-f", str(manifests)],
                              capture_output=True, text=True, check=False)
        best, code = min(best, time.monotonic() - began), done.returncode
        if done.returncode not in (0, 1):
            raise SystemExit(f"kubectl diff failed: {done.stderr[-500:]}")
    return best, code


def main(sizes: Sequence[int]) -> None:
    bin_dir = kubecluster.binaries()
    if bin_dir is None:
        raise SystemExit(f"the Kubernetes test binaries are missing: {kubecluster.INSTALL_HINT}")
    with tempfile.TemporaryDirectory() as tmp:
        cluster = kubecluster.start_cluster(Path(tmp) / "cluster", bin_dir=bin_dir)
        try:
            cluster.add_nodes(max(2, (max(sizes) + 199) // 200), gpus=0, pods=250, name_prefix="node-")
            print(f"{'N':>5} {'objects':>8} {'apply (s)':>10} {'plan (s)':>9} {'API calls/plan':>15} "
                  f"{'1 changed (s)':>14} {'calls':>6} {'all changed (s)':>16} {'calls':>6} "
                  f"{'kubectl diff (s)':>17}  calls of the unchanged plan")
            for n in sizes:
                run(n, Path(tmp), cluster)
        finally:
            cluster.stop()


def run(n: int, tmp: Path, cluster: kubecluster.Cluster) -> None:
    project = f"bench{n}"
    spec = write_spec(tmp, project, n)
    b, meta, resolved = backend(spec, cluster.kubeconfig)
    first = plan_live({"kubernetes": b}, resolved.stack.waves, project=project, env=ENV, spec_hash=meta.spec_hash)
    began = time.monotonic()
    apply(first, {"kubernetes": b}, env=ENV, spec_hash=meta.spec_hash, project=project,
          options=ApplyOptions(parallelism=16, handle_signals=False))
    applied = time.monotonic() - began
    took, calls, plan = best_plan(spec, cluster.kubeconfig)
    if plan.has_changes:
        raise SystemExit(f"N={n}: the plan after apply is not empty: {plan.summary_line()}")
    objects = len(plan.actions)
    (tmp / "changed").mkdir(exist_ok=True)
    one, one_calls, one_plan = best_plan(write_spec(tmp / "changed", project, n, changed=0), cluster.kubeconfig)
    assert [a.key.name for a in one_plan.touched if a.key.kind == "Deployment"] == ["s0000"], one_plan.summary_line()
    every, every_calls, every_plan = best_plan(write_spec(tmp / "changed", project, n, changed=-1),
                                               cluster.kubeconfig)
    assert sum(1 for a in every_plan.touched if a.key.kind == "Deployment") == n, every_plan.summary_line()
    diff = kubectl_diff(spec, tmp / "kubectl", cluster.kubeconfig)
    shown = f"{diff[0]:>17.2f}" if diff else f"{'(no kubectl)':>17}"
    detail = ", ".join(f"{k} x{v}" for k, v in sorted(calls.items()))
    print(f"{n:>5} {objects:>8} {applied:>10.1f} {took:>9.2f} {sum(calls.values()):>15} {one:>14.2f} "
          f"{sum(one_calls.values()):>6} {every:>16.2f} {sum(every_calls.values()):>6} {shown}  {detail}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10, 100, 500])
