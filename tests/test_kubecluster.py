"""The local Kubernetes control plane of tests/kubecluster.py, proven against the behaviour tests rely on.

Each test drives the real apiserver, controllers, scheduler and kwok: a Deployment becomes
available, the scheduler honours nvidia.com/gpu capacity and node selectors, a StatefulSet's
claim binds to a fixture PersistentVolume, kubectl (including server-side apply dry-run) works
with the written kubeconfig, and stop() leaves no process behind. Without the binaries the
tests skip (fail in CI) with the hint to run `.ci/install-kube.sh`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubecluster
import pytest
from kubecluster import Cluster, ComponentExited, wait_for

IMAGE = "hxpc-test/busybox:1"  # never pulled: kwok runs no containers
GPU_PRODUCT = "A100-80GB"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One control plane for the module, with two 8-GPU nodes labelled like the manifests expect."""
    started = time.monotonic()
    running = kubecluster.session_cluster(tmp_path_factory)
    up = time.monotonic()
    running.add_nodes(2, gpus=8, labels={"nvidia.com/gpu.product": GPU_PRODUCT})
    print(f"cluster started in {up - started:.1f}s, nodes Ready {time.monotonic() - up:.1f}s later")
    yield running
    running.stop()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> str:
    """A fresh namespace named after the test, ready for pods (its default ServiceAccount exists)."""
    name = request.node.name.replace("_", "-").lower()[:50].rstrip("-")
    cluster.create_namespace(name)
    return name


def core(cluster: Cluster) -> Any:
    import kubernetes.client

    return kubernetes.client.CoreV1Api(cluster.api_client())


def pod_ready(pod: Any) -> bool:
    conditions = {c.type: c.status for c in pod.status.conditions or []}
    return bool(pod.status.phase == "Running" and conditions.get("Ready") == "True")


def processes_mentioning(path: Path) -> list[str]:
    """Command lines of live processes that name `path` (every component gets its work directory in a flag)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited while we looked
        if str(path) in args and "pytest" not in args:
            found.append(args)
    return found


def gpu_pod(name: str, gpus: int, node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": node_selector or {},
            "containers": [{"name": "main", "image": IMAGE,
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
    }


def test_server_reports_its_real_version(cluster: Cluster) -> None:
    import kubernetes.client

    assert kubernetes.client.VersionApi(cluster.api_client()).get_code().git_version == kubecluster.KUBE_VERSION


def test_deployment_becomes_available(cluster: Cluster, namespace: str) -> None:
    import kubernetes.client

    apps = kubernetes.client.AppsV1Api(cluster.api_client())
    labels = {"app": "web"}
    apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "web", "image": IMAGE}]}},
        },
    })
    wait_for(lambda: apps.read_namespaced_deployment_status("web", namespace).status.ready_replicas == 2, 60,
             "deployment web to have 2 ready replicas")
    pods = core(cluster).list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    assert all(pod_ready(pod) for pod in pods)
    assert all(pod.spec.node_name for pod in pods)


def test_scheduler_honours_gpu_capacity_and_node_selector(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    api.create_namespaced_pod(namespace, gpu_pod("too-many-gpus", 9))
    api.create_namespaced_pod(namespace, gpu_pod("four-gpus", 4, {"nvidia.com/gpu.product": GPU_PRODUCT}))

    def unschedulable() -> str | None:
        pod = api.read_namespaced_pod("too-many-gpus", namespace)
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                return str(condition.message)
        return None

    message = wait_for(unschedulable, 60, "pod too-many-gpus to be marked Unschedulable")
    assert "Insufficient nvidia.com/gpu" in message
    assert api.read_namespaced_pod("too-many-gpus", namespace).status.phase == "Pending"

    def scheduled_and_ready() -> Any:
        pod = api.read_namespaced_pod("four-gpus", namespace)
        return pod if pod_ready(pod) else None

    pod = wait_for(scheduled_and_ready, 60, "pod four-gpus to be scheduled and Ready")
    node = api.read_node(pod.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.product"] == GPU_PRODUCT


def test_statefulset_claim_binds_to_a_fixture_volume(cluster: Cluster, namespace: str) -> None:
    import kubernetes.client

    # A class of their own, so these volumes serve only this claim whatever else runs on the cluster.
    volumes = cluster.add_persistent_volumes(1, size="10Gi", storage_class="hxpc-sts", name_prefix="sts-pv-")
    api = core(cluster)
    api.create_namespaced_service(namespace, {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]},
    })
    kubernetes.client.AppsV1Api(cluster.api_client()).create_namespaced_stateful_set(namespace, {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "replicas": 1,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                         "spec": {"containers": [{"name": "db", "image": IMAGE,
                                                  "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "hxpc-sts",
                         "resources": {"requests": {"storage": "5Gi"}}},
            }],
        },
    })
    def bound() -> Any:
        claim = api.read_namespaced_persistent_volume_claim("data-db-0", namespace)
        return claim if claim.status.phase == "Bound" else None

    pvc = wait_for(bound, 60, "claim data-db-0 to be Bound")
    assert pvc.spec.volume_name in volumes
    wait_for(lambda: pod_ready(api.read_namespaced_pod("db-0", namespace)), 60, "pod db-0 to be Ready")

    # Deleting the namespace finishes: kwok removes the pod, the protection controllers the
    # claim's finalizer, and the binder releases the volume.
    api.delete_namespace(namespace)

    def namespace_gone() -> bool:
        try:
            api.read_namespace(namespace)
        except kubernetes.client.ApiException as error:
            return error.status == 404
        return False

    wait_for(namespace_gone, 60, f"namespace {namespace} to be deleted")
    assert api.read_persistent_volume(volumes[0]).status.phase == "Released"


def test_kubectl_and_server_side_apply_dry_run(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    nodes = cluster.kubectl("get", "nodes", "-o", "name").stdout.split()
    assert {"node/gpu-0", "node/gpu-1"} <= set(nodes)

    manifest = tmp_path / "config.yaml"
    manifest.write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {namespace}\n"
                        "data:\n  mode: fast\n")
    result = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", str(manifest))
    assert "configmap/settings serverside-applied (server dry run)" in result.stdout
    # Dry run: the server validated and defaulted the object but stored nothing.
    missing = cluster.kubectl("get", "configmap", "settings", "-n", namespace, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr
    # A schema error is the server's to report, which is what the dry run is for.
    manifest.write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {namespace}\n"
                        "data:\n  mode: [not, a, string]\n")
    invalid = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", str(manifest), check=False)
    assert invalid.returncode != 0


def test_stop_leaves_no_processes(tmp_path: Path) -> None:
    bin_dir = kubecluster.require_binaries()
    started = time.monotonic()
    cluster = kubecluster.start_cluster(tmp_path, bin_dir=bin_dir)
    print(f"cluster started in {time.monotonic() - started:.1f}s")
    pids = cluster.pids
    assert len(pids) == len(kubecluster.BINARIES)
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    cluster.stop()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert processes_mentioning(tmp_path) == []
    cluster.stop()  # idempotent


def test_failing_component_is_reported_with_its_log(tmp_path: Path) -> None:
    real = kubecluster.require_binaries()
    # The real binaries, except an apiserver that dies at once: the error must say which and why.
    fake = tmp_path / "cache"
    (fake / "bin").mkdir(parents=True)
    (fake / "stage").symlink_to(real.parent / "stage")
    for name in kubecluster.BINARIES:
        (fake / "bin" / name).symlink_to(real / name)
    (fake / "bin" / "kube-apiserver").unlink()
    (fake / "bin" / "kube-apiserver").write_text("#!/bin/sh\necho 'no etcd for you' >&2\nexit 3\n")
    (fake / "bin" / "kube-apiserver").chmod(0o755)
    with pytest.raises(ComponentExited, match=r"kube-apiserver exited with code 3(.|\n)*no etcd for you"):
        kubecluster.start_cluster(tmp_path / "work", bin_dir=fake / "bin")
    # etcd, started before the apiserver, was stopped again.
    assert (tmp_path / "work" / "logs" / "etcd.log").exists()
    assert processes_mentioning(tmp_path) == []


def test_missing_binaries_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HXPC_KUBE_CACHE", str(tmp_path))
    assert kubecluster.binaries() is None
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"install-kube\.sh"):
        kubecluster.require_binaries()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match=r"install-kube\.sh"):
        kubecluster.require_binaries()
