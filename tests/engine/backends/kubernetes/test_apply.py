"""Plan, apply and status against a real kube-apiserver (tests/kubecluster.py): what only Kubernetes promises.

The scenarios every backend shares (change one, prune, ownership, stale plans, rollback, the lock, secrets)
run on this cluster in tests/engine/backends/contract/, with the Kubernetes checks in
tests/harnesses/kubernetes.py. Here: waves with a StatefulSet's claim and a GPU model, monitoring and its
CRDs, adoption, drift named by field manager, saved plans' uid/resourceVersion, immutable fields, fail-fast
gates, a real concurrent apply, SIGINT and kill -9, status, and the command line's own flags.
Each test has its own project and namespace on the session's cluster (tests/harnesses/kubernetes.py);
pods are run by kwok and become Ready once scheduled on its nodes. Faults a cluster without a kubelet
cannot produce (CrashLoopBackOff, ImagePullBackOff) are injected by patching a pod's status on the node
kwok does not manage; everything else (scheduling, quotas, controllers, server-side apply) is the real
control plane's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultlab import KILL_RUNS, KILL_SEED, KubeLab, check_outcome
from harnesses.kubernetes import IMAGE2, MANUAL_GPU_MODEL, KubeStack, model, start_apply, svc
from kubecluster import Cluster, wait_for

from hxpc.engine.lock import new_lock_info
from hxpc.engine.objects import Change
from hxpc.engine.plan import NameClash, NeedsPermission, load_plan
from hxpc.engine.render import render_json, render_text
from hxpc.engine.report import ApplyFailed
from hxpc.engine.status import collect_status, render_status_text
from hxpc.errors import LockHeld, StalePlan

CRDS = Path(__file__).resolve().parent / "crds.yaml"


@pytest.fixture
def stack(kube_cluster: Cluster, tmp_path: Path) -> Iterator[KubeStack]:
    s = KubeStack(kube_cluster, tmp_path)
    try:
        yield s
    finally:
        s.cleanup()


def kinds(plan: Any) -> dict[str, str]:
    return {f"{a.key.kind}/{a.key.name}": a.kind for a in plan.actions}


def three_waves(s: KubeStack, **api: Any) -> None:
    s.write_raw({"db": svc(5432, volumes={"data": {"path": "/data", "size": "1Gi"}}),
             "api": svc(8080, replicas=2, depends_on=["db", "llm"], env={"MODE": "a"}, **api)},
            models={"llm": model()})


# -- fresh apply, re-plan -------------------------------------------------------------------------------------------

def test_fresh_apply_in_waves_then_a_replan_shows_no_changes(stack: KubeStack) -> None:
    stack.cluster.add_persistent_volumes(1, size="5Gi", name_prefix=f"{stack.project}-pv-")
    three_waves(stack)
    plan = stack.plan()
    order = [(a.wave, a.key.kind, a.key.name) for a in plan.actions]
    assert order[0] == (0, "Namespace", stack.namespace)
    waves = {f"{k}/{n}": w for w, k, n in order}
    assert waves["ConfigMap/api-env"] == 1
    assert waves["Service/api"] == waves["Service/db-headless"] == waves["PodDisruptionBudget/api"] == 2
    assert waves["StatefulSet/db"] == waves["Deployment/llm"] == 3          # the spec's first wave
    assert waves["Deployment/api"] == 4                                      # after what it depends on
    assert order[-1][1:] == ("ConfigMap", f"hxpc-inventory-{stack.project}-test")
    report = stack.apply(plan)
    assert report.outcome == "success", report.render()
    assert [w.gate for w in report.waves] == ["", "", "", "passed", "passed", ""]
    sts = stack.read("statefulset", "db")
    assert sts is not None and sts["status"]["readyReplicas"] == 1
    claim = stack.read("pvc", "data-db-0")
    assert claim is not None and claim["status"]["phase"] == "Bound"
    assert "hxpc.dev/project" not in claim["metadata"].get("labels", {})     # the claim is not hxpc's
    llm = stack.pods_of("llm")
    assert len(llm) == 1 and llm[0]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert stack.cluster.kubectl("get", "node", llm[0]["spec"]["nodeName"], "-o",
                                 "jsonpath={.metadata.labels.nvidia\\.com/gpu\\.product}").stdout == "A100-80GB"
    assert stack.lease() is None                                             # released
    inventory = json.loads(stack.read("configmap", f"hxpc-inventory-{stack.project}-test")["data"]["objects.json"])
    assert {"Deployment.apps/" + stack.namespace + "/api", "Namespace//" + stack.namespace} <= set(inventory)
    assert all(e["uid"] for e in inventory.values())
    # re-plan: nothing, including the StatefulSet's claim templates, the Services' cluster IPs and the
    # Deployments' defaulted strategies; a second plan is byte-identical
    again = stack.plan()
    assert not again.has_changes, render_text(again)
    assert render_json(again) == render_json(stack.plan())


def test_monitoring_objects_wait_for_their_crds_and_go_last(stack: KubeStack) -> None:
    stack.write_raw({"web": svc(8080, metrics={"port": "http", "path": "/metrics"})}, monitoring=True)
    absent = stack.plan()
    if any("ServiceMonitor" in w for w in absent.warnings):
        assert not [a for a in absent.actions if a.key.kind in ("ServiceMonitor", "PrometheusRule")]
        assert any("install its CRD" in w for w in absent.warnings), absent.warnings
        stack.cluster.kubectl("apply", "-f", str(CRDS))
        wait_for(lambda: stack.cluster.kubectl("get", "servicemonitors", "-A", check=False).returncode == 0, 30,
                 "the ServiceMonitor CRD to be served")
    present = stack.plan()
    assert not any("ServiceMonitor" in w for w in present.warnings)
    monitors = [a for a in present.actions if a.key.kind in ("ServiceMonitor", "PrometheusRule")]
    assert {a.key.kind for a in monitors} == {"ServiceMonitor", "PrometheusRule"}
    workloads = max(a.wave for a in present.actions if a.key.kind == "Deployment")
    assert min(a.wave for a in monitors) > workloads                          # monitoring goes last
    dashboards = [a for a in present.actions if a.key.name.startswith("grafana-dashboard-")]
    assert dashboards and all(a.wave == monitors[0].wave for a in dashboards)
    assert stack.apply(present).outcome == "success"
    assert stack.names("servicemonitors") == ["servicemonitor.monitoring.coreos.com/web"]
    assert not stack.plan().has_changes


# -- ownership, drift, stale plans, immutable fields, data, pod security -----------------------------------------

def test_an_object_in_the_way_is_refused_unless_adopted(stack: KubeStack) -> None:
    stack.write_raw({"web": svc(8080)})
    stack.apply()
    stack.kubectl("create", "service", "clusterip", "api", "--tcp=80:8080")
    stack.write_raw({"web": svc(8080), "api": svc(8081)})
    with pytest.raises(NameClash) as caught:
        stack.plan()
    assert f"kubernetes:{stack.namespace}/Service/api: exists without hxpc's ownership labels" in str(caught.value)
    assert stack.read("deployment", "api") is None                           # refused before anything was touched
    adopted = stack.plan(adopt=True)
    service = next(a for a in adopted.touched if a.key.kind == "Service")
    assert service.kind == "update"
    assert Change("add", ("metadata", "labels", "hxpc.dev/project"), None, stack.project) in service.changes
    assert stack.apply(options={"adopt": True}).outcome == "success"
    assert stack.read("service", "api")["metadata"]["labels"]["hxpc.dev/project"] == stack.project
    # server-side apply merges: the spec's port is added, the one kubectl set stays with kubectl
    assert sorted(p["port"] for p in stack.read("service", "api")["spec"]["ports"]) == [80, 8081]
    assert not stack.plan().has_changes

def test_a_field_changed_by_another_manager_is_named_and_taken_back(stack: KubeStack) -> None:
    stack.write_raw({"web": svc(8080, replicas=3)})
    stack.apply()
    stack.kubectl("scale", "deployment/web", "--replicas=2")
    stack.kubectl("annotate", "deployment/web", "team=theirs")                # a field hxpc never set
    plan = stack.plan()
    action = next(a for a in plan.touched if a.key.kind == "Deployment")
    assert action.reason == "spec.replicas 2 -> 3 (changed outside hxpc by kubectl)"
    assert "(changed outside hxpc by kubectl)" in render_text(plan)
    assert stack.apply(plan).outcome == "success"
    web = stack.read("deployment", "web")
    assert web["spec"]["replicas"] == 3
    assert web["metadata"]["annotations"]["team"] == "theirs"                 # stays with its owner
    assert not stack.plan().has_changes


def test_a_saved_plan_is_refused_after_an_outside_change(stack: KubeStack) -> None:
    stack.write_raw({"web": svc(8080), "db": svc(5432)})
    stack.apply()
    stack.write_raw({"web": svc(8080, env={"MODE": "b"}), "db": svc(5432)})
    saved = load_plan(render_json(stack.plan()))
    versions = {a.key.name: a.version for a in saved.touched}
    assert versions["web"] and versions["web"].count("/") == 1                # uid/resourceVersion recorded
    assert versions["web-env"] is None                                        # planned absent
    stack.kubectl("label", "deployment/web", "edited=by-hand")
    with pytest.raises(StalePlan) as caught:
        stack.apply(saved)
    assert caught.value.exit_code == 4
    assert f"kubernetes:{stack.namespace}/Deployment/web: changed since the plan was made" in str(caught.value)
    assert stack.read("configmap", "web-env") is None                         # nothing touched
    assert stack.lease() is None


def test_an_immutable_change_is_refused_without_allow_replace_and_keeps_the_claim(stack: KubeStack) -> None:
    stack.cluster.add_persistent_volumes(2, size="5Gi", name_prefix=f"{stack.project}-pv-")
    stack.write_raw({"db": svc(5432, volumes={"data": {"path": "/data", "size": "1Gi"}})})
    stack.apply()
    stack.kubectl("annotate", "pvc/data-db-0", "hxpc-test/data-marker=kept")
    claim = stack.read("pvc", "data-db-0")["metadata"]["uid"]
    stack.write_raw({"db": svc(5432, volumes={"data": {"path": "/data", "size": "2Gi"}})})
    plan = stack.plan()
    action = next(a for a in plan.touched if a.key.kind == "StatefulSet")
    assert action.kind == "replace" and "refuses to change it in place" in action.reason
    assert "--allow-replace" in action.refused
    with pytest.raises(NeedsPermission) as caught:
        stack.apply(plan)
    assert caught.value.exit_code == 4 and "StatefulSet/db: replace refused" in str(caught.value)
    report = stack.apply(options={"allow_replace": True})
    assert report.outcome == "success", report.render()
    sts = stack.read("statefulset", "db")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    kept = stack.read("pvc", "data-db-0")
    assert kept["metadata"]["uid"] == claim and kept["metadata"]["annotations"]["hxpc-test/data-marker"] == "kept"
    wait_for(lambda: (stack.read("statefulset", "db") or {}).get("status", {}).get("readyReplicas") == 1, 60,
             "db ready again")
    assert not stack.plan(allow_replace=True).has_changes


def test_a_model_cache_claim_is_kept_when_the_spec_drops_it(stack: KubeStack) -> None:
    stack.cluster.add_persistent_volumes(1, size="20Gi", access_modes=("ReadWriteMany",),
                                         name_prefix=f"{stack.project}-rwx-")
    stack.write_raw({}, models={"llm": model()}, model_cache={"size": "10Gi"})
    assert stack.apply().outcome == "success"
    claim = stack.read("pvc", "model-cache")
    assert claim is not None and claim["status"]["phase"] == "Bound"
    volumes = stack.read("deployment", "llm")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "hf-cache", "persistentVolumeClaim": {"claimName": "model-cache"}} in volumes
    stack.write_raw({}, models={"llm": model()})                                  # no cache any more
    plan = stack.plan()
    kept = next(a for a in plan.actions if a.key.kind == "PersistentVolumeClaim")
    assert kept.kind == "keep" and "--allow-delete-data" in kept.reason
    assert "  = kubernetes:" in render_text(plan) and "1 kept" in plan.summary_line()
    assert stack.apply(plan).outcome == "success"
    assert stack.read("pvc", "model-cache")["metadata"]["uid"] == claim["metadata"]["uid"]
    assert stack.plan().counts()["keep"] == 1                                     # still listed, still kept
    allowed = stack.plan(allow_delete_data=True)
    assert [a.key.name for a in allowed.touched if a.kind == "delete"] == ["model-cache"]
    assert stack.apply(options={"allow_delete_data": True}).outcome == "success"
    wait_for(lambda: stack.read("pvc", "model-cache") is None, 60, "the claim to be deleted")
    after = stack.plan()
    assert not after.has_changes and after.counts()["keep"] == 0


def test_a_workload_that_runs_as_root_is_warned_and_admitted_under_baseline(stack: KubeStack) -> None:
    stack.write_raw({"web": svc(8080, security={"run_as_root": True})})
    plan = stack.plan()
    assert any('`web`: its pods leave Pod Security "restricted" because it runs as root' in w
               for w in plan.warnings), plan.warnings
    assert stack.apply(plan).outcome == "success"
    labels = stack.read("namespace", stack.namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    [pod] = stack.pods_of("web")
    assert pod["spec"]["securityContext"]["runAsUser"] == 0
    stack.write_raw({"web": svc(8080, security={"run_as_user": 10001, "read_only_root_filesystem": True})})
    assert stack.apply().outcome == "success"                                    # back to restricted
    labels = stack.read("namespace", stack.namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    stack.wait_rolled_out("deployment", "web")
    assert all(p["spec"]["securityContext"]["runAsUser"] == 10001 for p in stack.pods_of("web")
               if not p["metadata"].get("deletionTimestamp"))


# -- health gates and rollback ---------------------------------------------------------------------------------------

def test_a_rollout_that_cannot_schedule_fails_fast_and_is_rolled_back(stack: KubeStack) -> None:
    stack.write_raw({}, models={"llm": model(tensor_parallel=2)})
    stack.apply()

    def templates() -> list[str]:
        return sorted(p["metadata"]["labels"]["pod-template-hash"] for p in stack.pods_of("llm")
                      if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running")

    old = templates()
    assert len(old) == 1
    # the spec believes in 32 GPUs; the cluster has two nodes of 8: 24 cannot be scheduled
    stack.write_raw({}, models={"llm": model(tensor_parallel=8, replicas=3)}, gpus_declared=32)
    plan = stack.plan()
    assert any("`llm`: 3 replica(s) need 8 nvidia.com/gpu each" in w and "only 2 can be scheduled" in w
               for w in plan.warnings), plan.warnings
    began = time.monotonic()
    with pytest.raises(ApplyFailed) as caught:
        stack.apply(plan)
    took = time.monotonic() - began
    report = caught.value.report
    result = report.results[f"kubernetes:{stack.namespace}/Deployment/llm"]
    assert result.status == "rolled_back", report.render()
    assert "Unschedulable" in result.health and "Insufficient nvidia.com/gpu" in result.health
    assert "last events: Warning FailedScheduling" in result.health
    assert took < 180, f"failing took {took:.0f}s: the gate must not wait out the model's budget"
    dep = stack.read("deployment", "llm")
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    # the old template's ReplicaSet serves alone again; Kubernetes' proportional scaling of the rollback may
    # have replaced its pod, so the template is compared, not the pod
    wait_for(lambda: templates() == old, 60, "the old template's pod alone again")
    assert stack.lease() is None


@pytest.mark.parametrize("reason", ["CrashLoopBackOff", "ImagePullBackOff"])
def test_a_pod_that_cannot_start_fails_the_gate_naming_it(stack: KubeStack, reason: str) -> None:
    stack.write_raw({}, models={"llm": model(gpus_model=MANUAL_GPU_MODEL)})
    events: list[str] = []

    def fault(event: Any) -> None:
        events.append(event.kind)
        if event.kind == "gate":
            pod = wait_for(lambda: next(iter(p["metadata"]["name"] for p in stack.pods_of("llm")
                                              if p["spec"].get("nodeName")), None), 30, "llm's pod scheduled")
            stack.set_waiting(pod, reason, "injected by the test")

    with pytest.raises(ApplyFailed) as caught:
        stack.apply(progress=fault)
    result = caught.value.report.results[f"kubernetes:{stack.namespace}/Deployment/llm"]
    assert f": {reason}: container" in result.health and "injected by the test" in result.health
    assert result.status == "rolled_back"
    assert stack.read("deployment", "llm") is None                           # created in the wave: deleted


def test_a_statefulsets_pod_stuck_at_the_failed_revision_is_replaced_on_rollback(stack: KubeStack) -> None:
    stack.cluster.add_persistent_volumes(1, size="5Gi", name_prefix=f"{stack.project}-pv-")

    def db(host: str) -> dict[str, Any]:
        return svc(5432, volumes={"data": {"path": "/data", "size": "1Gi"}}, resources={"gpus": 1}, hosts=[host])

    stack.write_raw({"db": db("gpu-kwok")})
    stack.apply()
    old_revision = stack.read("statefulset", "db")["status"]["currentRevision"]

    def fault(event: Any) -> None:  # the new revision's pod lands on the manual node: make it crash
        if event.kind == "gate":
            def stuck() -> str | None:
                return next((p["metadata"]["name"] for p in stack.pods_of("db") if p["spec"].get("nodeName") ==
                             "manual-0"), None)
            stack.set_waiting(wait_for(stuck, 60, "db's new pod on the manual node"), "CrashLoopBackOff",
                              "injected by the test")

    stack.write_raw({"db": db("gpu-manual")})
    with pytest.raises(ApplyFailed) as caught, stack.kubelet_for_manual_node():
        stack.apply(progress=fault)
    result = caught.value.report.results[f"kubernetes:{stack.namespace}/StatefulSet/db"]
    assert result.status == "rolled_back" and "CrashLoopBackOff" in result.health, caught.value.report.render()
    # the controller never replaces a pod that is not ready: rollback deleted it, and the old revision is back
    sts = stack.read("statefulset", "db")
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"] == old_revision
    [pod] = stack.pods_of("db")
    assert pod["metadata"]["labels"]["controller-revision-hash"] == old_revision
    assert pod["spec"]["nodeName"] != "manual-0"


def test_a_replaced_statefulset_rolled_back_is_still_hxpcs_to_prune(stack: KubeStack) -> None:
    stack.cluster.add_persistent_volumes(2, size="5Gi", name_prefix=f"{stack.project}-pv-")

    def db(size: str, gpus: int) -> dict[str, Any]:
        return svc(5432, volumes={"data": {"path": "/data", "size": size}}, resources={"gpus": gpus},
                   hosts=["gpu-kwok"])

    stack.write_raw({"db": db("1Gi", 1)}, gpus_declared=32)
    stack.apply()
    first = stack.read("statefulset", "db")["metadata"]["uid"]
    # an immutable change (the claim's size) whose new pod cannot be scheduled (16 GPUs; the nodes have 8)
    stack.write_raw({"db": db("2Gi", 16)}, gpus_declared=32)
    with pytest.raises(ApplyFailed) as caught:
        stack.apply(options={"allow_replace": True})
    result = caught.value.report.results[f"kubernetes:{stack.namespace}/StatefulSet/db"]
    assert result.status == "rolled_back" and "Unschedulable" in result.health, caught.value.report.render()
    back = stack.read("statefulset", "db")
    assert back["metadata"]["uid"] != first                                  # made again by the rollback
    assert back["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    # the inventory follows the new uid: once the spec drops it, it is pruned
    stack.write_raw({"web": svc(8080)}, gpus_declared=32)
    plan = stack.plan()
    assert kinds(plan)["StatefulSet/db"] == "delete", render_text(plan)
    assert stack.apply(plan).outcome == "success"
    assert stack.read("statefulset", "db") is None and stack.read("pvc", "data-db-0") is not None  # not hxpc's


# -- locking and interrupts ------------------------------------------------------------------------------------------

def test_a_second_concurrent_apply_is_refused(stack: KubeStack) -> None:
    stack.write_raw({"web": svc(8080)})
    stack.apply()
    stack.block_new_pods()
    stack.write_raw({"web": svc(8080, env={"V": "2"})})
    second = stack.plan()
    proc, _ = start_apply(stack)
    try:
        lease = stack.lease()
        assert lease is not None and "pid" in lease["spec"]["holderIdentity"]
        with pytest.raises(LockHeld) as caught:
            stack.apply(second)
        assert caught.value.exit_code == 4
        assert f"pid {proc.pid} since " in str(caught.value)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(120)


def test_sigint_mid_apply_reverts_the_wave_and_releases_the_lease(stack: KubeStack) -> None:
    stack.write_raw({"web": svc(8080)})
    stack.apply()
    old_template = stack.read("deployment", "web")["spec"]["template"]
    stack.block_new_pods()
    stack.write_raw({"web": svc(8080, env={"V": "2"})})
    proc, lines = start_apply(stack)
    assert stack.lease() is not None
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 130
    time.sleep(0.2)
    report = json.loads(next(line for line in lines if line.startswith("REPORT "))[len("REPORT "):])
    assert report["outcome"] == "interrupted" and "SIGINT" in report["message"]
    statuses = {a["address"]: a["status"] for a in report["actions"]}
    assert statuses[f"kubernetes:{stack.namespace}/Deployment/web"] == "rolled_back"
    assert stack.lease() is None
    assert stack.read("deployment", "web")["spec"]["template"] == old_template


def test_after_kill_9_mid_apply_the_next_apply_takes_the_dead_holders_lease_and_converges(stack: KubeStack) -> None:
    stack.write_raw({"web": svc(8080)})
    stack.apply()
    stack.block_new_pods()
    stack.write_raw({"web": svc(8080, env={"V": "2"})})
    proc, _ = start_apply(stack)
    proc.kill()
    proc.wait(10)
    assert stack.lease() is not None                                          # the dead apply's
    stack.kubectl("delete", "resourcequota", "block")
    # its holder died on this machine: the Lease is taken over at once, not after its TTL
    report = stack.apply()
    assert report.outcome == "success", report.render()
    assert any("took over the kubernetes lock" in n and "is no longer running" in n for n in report.notes)
    assert not stack.plan().has_changes and stack.lease() is None


def test_a_lease_held_from_elsewhere_is_respected_until_it_lapses(stack: KubeStack) -> None:
    stack.write_raw({"web": svc(8080)})
    stack.apply()
    backend, _, _ = stack.backend()
    # a holder on another machine (a CI runner): nothing here can prove it dead
    elsewhere = dataclasses.replace(new_lock_info("elsewhere", ttl_s=3), boot_id="another-boot", pid=1)
    backend.lock(elsewhere)
    stack.write_raw({"web": svc(8080, env={"V": "2"})})
    with pytest.raises(LockHeld, match=rf"lock id {elsewhere.lock_id}; taken over after its TTL") as held:
        stack.apply()
    assert held.value.exit_code == 4
    time.sleep(4)                                                             # it was never renewed
    report = stack.apply()
    assert report.outcome == "success", report.render()
    assert any("took over the kubernetes lock" in n for n in report.notes)
    assert stack.lease() is None


def test_kill_9_at_random_moments_of_a_kubernetes_apply(kube_cluster: Cluster, tmp_path: Path) -> None:
    lab = KubeLab(tmp_path, kube_cluster)
    try:
        tally = lab.kill_loop(KILL_RUNS, random.Random(KILL_SEED), on_outcome=check_outcome)
        assert tally.converged == KILL_RUNS and tally.data_lost == 0
    finally:
        lab.cleanup()


def test_unlock_breaks_the_lease_by_its_id_only(stack: KubeStack) -> None:
    stack.write_raw({"web": svc(8080)})
    stack.apply()
    backend, _, _ = stack.backend()
    held = backend.lock(new_lock_info("elsewhere", ttl_s=600))
    env = {**os.environ, "KUBECONFIG": str(stack.cluster.kubeconfig)}

    def unlock(lock_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hxpc", "unlock", str(stack.spec), "--env", "test",
                               "--lock-id", lock_id], capture_output=True, text=True, env=env, timeout=120)

    wrong = unlock("not-the-id")
    assert wrong.returncode == 4 and held.info.lock_id in wrong.stderr and stack.lease() is not None
    right = unlock(held.info.lock_id)
    assert right.returncode == 0, right.stderr
    assert stack.lease() is None


# -- secrets and status ----------------------------------------------------------------------------------------------

def test_status_shows_each_objects_kstatus(stack: KubeStack) -> None:
    stack.write_raw({"web": svc(8080, replicas=2)})
    stack.apply()
    backend, _, _ = stack.backend()
    rows = collect_status({"kubernetes": backend})
    web = next(r for r in rows if r.key.kind == "Deployment")
    assert web.state == "live" and web.healthy is True
    assert web.status.startswith("Current (2/2 ready)")
    text = render_status_text(rows)
    assert f"kubernetes:{stack.namespace}/Service/web" in text and "Current" in text
    stack.block_new_pods()
    stack.kubectl("set", "image", "deployment/web", f"web={IMAGE2}")         # a rollout that cannot proceed
    backend, _, _ = stack.backend()
    rows = collect_status({"kubernetes": backend}, timeout_s=2)
    web = next(r for r in rows if r.key.kind == "Deployment")
    assert web.healthy is False and "InProgress" in web.detail, web


def test_the_command_line_takes_the_backends_own_options(stack: KubeStack,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from hxpc.cli import main

    stack.cluster.add_persistent_volumes(1, size="5Gi", name_prefix=f"{stack.project}-pv-")
    stack.write_raw({"db": svc(5432, volumes={"data": {"path": "/data", "size": "1Gi"}})})
    spec, config = str(stack.spec), str(stack.cluster.kubeconfig)
    assert main(["plan", spec, "--env", "test", "--kubeconfig", config, "--detailed-exitcode"]) == 2
    assert main(["apply", spec, "--env", "test", "--kubeconfig", config, "--yes"]) == 0
    out = capsys.readouterr().out
    assert "Apply complete" in out and "note: `kubernetes` is not planned" not in out
    assert main(["status", spec, "--env", "test", "--kubeconfig", config]) == 0
    assert f"kubernetes:{stack.namespace}/StatefulSet/db" in capsys.readouterr().out
    stack.write_raw({"db": svc(5432, volumes={"data": {"path": "/data", "size": "2Gi"}})})
    saved = stack.tmp / "plan.json"
    assert main(["plan", spec, "--env", "test", "--kubeconfig", config, "-o", str(saved)]) == 0
    assert "REFUSED: an immutable field changes: pass --allow-replace" in capsys.readouterr().out
    assert main(["apply", str(saved), "--kubeconfig", config]) == 4
    assert "replace refused" in capsys.readouterr().err
    assert main(["plan", spec, "--env", "test", "--kubeconfig", config, "--allow-replace"]) == 0
    assert "REFUSED" not in capsys.readouterr().out
    assert main(["plan", spec, "--env", "test", "--kubeconfig", str(stack.tmp / "missing")]) == 1
    assert "cannot load the Kubernetes configuration" in capsys.readouterr().err
    assert main(["plan", spec, "--env", "test", "--kubeconfig", config, "--context", "hxpc-test"]) == 0
    assert main(["plan", spec, "--env", "test", "--kubeconfig", config, "--context", "elsewhere"]) == 1
    assert "context elsewhere" in capsys.readouterr().err
