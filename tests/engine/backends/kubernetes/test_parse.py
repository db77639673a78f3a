"""The kubernetes backend's pure half against API payloads recorded from a real cluster (payloads/kubernetes.json,
written by payloads/record_kubernetes.py from payloads/kubernetes.yaml): normalization, field ownership,
kstatus, pod faults, GPU feasibility, the inventory and the live state a plan reads."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import spec_hash
from hxpc.compiler.pipeline import resolve_env
from hxpc.engine.backends.kubernetes import feasibility, fields, inventory, kstatus, pods
from hxpc.engine.backends.kubernetes.desired import Manifest, desired_objects
from hxpc.engine.backends.kubernetes.normalize import key_of, owned_by, state_of, without_server_fields
from hxpc.engine.backends.kubernetes.parse import Policy, Raw, parse, unchanged_since_applied
from hxpc.engine.diff import attribute, diff_states
from hxpc.engine.objects import DesiredObject, ObjectKey
from hxpc.sources import FileSources

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads"
RECORDED: dict[str, Any] = json.loads((PAYLOADS / "kubernetes.json").read_text())
OWNER = {"app.kubernetes.io/managed-by": "hxpc", "hxpc.dev/project": "rec", "hxpc.dev/env": "default"}


def applied(kind: str, name: str) -> dict[str, Any]:
    return copy.deepcopy(next(o for o in RECORDED["applied"][kind] if o["metadata"]["name"] == name))


def every_applied() -> list[dict[str, Any]]:
    return [copy.deepcopy(o) for items in RECORDED["applied"].values() for o in items] + [
        copy.deepcopy(RECORDED["namespace"])]


@pytest.fixture(scope="module")
def wanted() -> dict[ObjectKey, DesiredObject]:
    resolved = resolve_env(FileSources(str(PAYLOADS / "kubernetes.yaml")), "default")
    meta = Meta("rec", "default", "kubernetes.yaml", spec_hash(resolved))
    return desired_objects(resolved.stack, meta, lambda api_version, kind: True,
                           lambda name: "recorded-secret").objects


def manifest(want: DesiredObject) -> Manifest:
    assert isinstance(want.extra, Manifest)
    return want.extra


def raw_of(objects: list[dict[str, Any]]) -> Raw:
    inv = next(o for o in objects if o["metadata"]["name"] == "hxpc-inventory-rec-default")
    return Raw(objects=[o for o in objects if o is not inv], inventory=inv, full=True)


# -- normalization and field ownership ------------------------------------------------------------------------------

def test_a_live_object_and_the_dry_run_of_its_manifest_compare_equal() -> None:
    live, dry = applied("Deployment", "api"), RECORDED["dry_run_api"]
    assert live["metadata"]["resourceVersion"] and live["status"]
    assert state_of(live) == state_of(dry)
    normalized = state_of(live)
    assert "status" not in normalized and "managedFields" not in normalized["metadata"]
    assert "hxpc.dev/hash" not in normalized["metadata"].get("annotations", {})
    # the server's defaults are in both: the comparison never needs to know them
    spec = normalized["spec"]
    assert spec["revisionHistoryLimit"] == 10 and spec["template"]["spec"]["dnsPolicy"] == "ClusterFirst"


def test_secret_values_are_compared_by_hash_only() -> None:
    secret = applied("Secret", "db-password")
    state = state_of(secret)
    assert state["data"]["value"].startswith("sha256:") and "recorded-secret" not in json.dumps(state)


def test_another_managers_change_is_attributed_to_it() -> None:
    scaled, dry = RECORDED["api_scaled"], RECORDED["dry_run_api_scaled"]
    writers = fields.writers(scaled)
    assert writers[("spec", "replicas")] == "kubectl"
    assert ("status",) not in writers and not any(p[0] == "status" for p in writers)
    changes = attribute(diff_states(state_of(scaled), state_of(dry)), writers)
    assert [(c.where, c.old, c.new, c.by) for c in changes] == [("spec.replicas", 3, 2, "kubectl")]
    # kubectl took the field: hxpc's owned fields (and so their digest) changed
    assert fields.own_digest(scaled) != fields.own_digest(applied("Deployment", "api"))


def covers(big: Any, small: Any) -> bool:
    """Everything in `small` is in `big` (mappings by key, lists element by element)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and covers(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(big) == len(small) and all(map(covers, big, small))
    return bool(big == small)


def test_what_hxpc_applied_is_its_manifest(wanted: dict[ObjectKey, DesiredObject]) -> None:
    for obj in every_applied():
        key = key_of(obj)
        if key not in wanted or key.kind == "Secret" or manifest(wanted[key]).inventory:
            continue
        part, body = fields.applied_part(obj), manifest(wanted[key]).body
        assert part is not None and covers(part, body), key
        # and nothing the server or its controllers added (a port's protocol is part of its key, so it stays)
        assert "status" not in part and part["metadata"].get("annotations") == body["metadata"].get("annotations")
        assert fields.digest(json.loads(json.dumps(part))) != ""


def test_a_live_object_becomes_a_body_to_create_again() -> None:
    service = without_server_fields(applied("Service", "api"))
    assert "uid" not in service["metadata"] and "status" not in service
    assert "clusterIP" not in service["spec"] and "clusterIPs" not in service["spec"]   # a new address
    headless = without_server_fields(applied("Service", "db-headless"))
    assert headless["spec"]["clusterIP"] == "None"                                       # not an address


# -- kstatus and pods ------------------------------------------------------------------------------------------------

def test_kstatus_of_recorded_objects() -> None:
    assert kstatus.compute(applied("Deployment", "api")).describe().startswith("Current (2/2 ready)")
    rolling = kstatus.compute(RECORDED["api_rolling"])
    assert (rolling.state, rolling.message) == ("InProgress", "0 of 3 replicas updated")
    assert kstatus.compute(applied("StatefulSet", "db")).state == "Current"
    assert kstatus.compute(applied("PersistentVolumeClaim", "data-db-0")).message == "Bound"
    assert kstatus.compute(RECORDED["namespace"]).state == "Current"
    assert kstatus.compute(RECORDED["pod_unschedulable"]).state == "InProgress"
    stuck = copy.deepcopy(RECORDED["api_rolling"])
    progressing = next(c for c in stuck["status"]["conditions"] if c["type"] == "Progressing")
    progressing.update(reason="ProgressDeadlineExceeded", status="False", message='ReplicaSet "api-x" has timed out')
    assert kstatus.compute(stuck).state == "Failed"
    behind = applied("Deployment", "api")
    behind["metadata"]["generation"] += 1
    assert kstatus.compute(behind).message.startswith("the controller has not yet seen generation")
    sts = applied("StatefulSet", "db")
    sts["status"]["updateRevision"] = "db-new"
    assert "update revision db-new" in kstatus.compute(sts).message
    # scaled down: the controller saw it, but the extra pods still run
    for kind, name in (("Deployment", "api"), ("StatefulSet", "db")):
        shrinking = applied(kind, name)
        shrinking["spec"]["replicas"] = shrinking["status"]["replicas"] - 1
        assert kstatus.compute(shrinking).describe().startswith("InProgress"), kind
        assert "1 extra replica(s) pending termination" in kstatus.compute(shrinking).message


def test_a_pod_that_cannot_start_is_named_with_its_reason_and_events() -> None:
    found = pods.problems([RECORDED["pod_unschedulable"]])
    assert len(found) == 1 and found[0].reason == "Unschedulable" and found[0].needs_grace
    assert "Insufficient nvidia.com/gpu" in found[0].describe()
    events = pods.recent_events(RECORDED["events_unschedulable"])
    assert events and events[-1].startswith("Warning FailedScheduling") and "nvidia.com/gpu" in events[-1]
    crashing = copy.deepcopy(RECORDED["pod_unschedulable"])
    crashing["status"] = {"phase": "Running", "containerStatuses": [
        {"name": "greedy", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]}
    assert [(p.reason, p.needs_grace) for p in pods.problems([crashing])] == [("CrashLoopBackOff", False)]
    ready = [p for p in RECORDED["pods"] if p["metadata"]["name"].startswith("api-")]
    assert ready and pods.problems(ready) == []


def test_a_pod_not_ready_says_why() -> None:
    assert pods.not_ready([RECORDED["pod_unschedulable"]])[0].startswith(
        f"pod {RECORDED['pod_unschedulable']['metadata']['name']}: PodScheduled is False (Unschedulable): ")
    probing = copy.deepcopy(RECORDED["pod_unschedulable"])
    probing["status"] = {"phase": "Running", "conditions": [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready "
         "status: [api]"}]}
    creating = copy.deepcopy(probing)
    creating["metadata"]["name"] = "zz-creating"
    creating["status"]["containerStatuses"] = [{"name": "api", "state": {"waiting": {"reason": "ContainerCreating"}}}]
    said = pods.not_ready([creating, probing])
    assert said == [f"pod {probing['metadata']['name']}: Ready is False (ContainersNotReady): containers with "
                    "unready status: [api]", "pod zz-creating: container api ContainerCreating"]
    assert pods.not_ready([creating] * 5)[-1] == "and 2 more pod(s) not ready"


def test_gpu_feasibility_counts_what_others_already_hold() -> None:
    nodes = [n for n in RECORDED["nodes"] if "nvidia.com/gpu" in n["status"]["allocatable"]]
    selector = {"nvidia.com/gpu.product": "A100-80GB"}
    tolerations = ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    fits = feasibility.Demand("llm", 2, 8, selector, tolerations)
    assert feasibility.check([fits], nodes, RECORDED["pods"], "nvidia.com/gpu", "rec-default") == []
    too_many = feasibility.Demand("big", 3, 8, selector, tolerations)
    [warning] = feasibility.check([too_many], nodes, RECORDED["pods"], "nvidia.com/gpu", "rec-default")
    assert warning.startswith("`big`: 3 replica(s) need 8 nvidia.com/gpu each on nodes matching "
                              "nvidia.com/gpu.product=A100-80GB; only 2 can be scheduled")
    # another stack's pods hold GPUs: they count
    free = feasibility.free_gpus(nodes, RECORDED["pods"], "nvidia.com/gpu", "another-stack")
    assert sum(free.values()) == 16 - 2   # the recorded llm pod holds 2
    elsewhere = feasibility.Demand("x", 1, 1, {"nvidia.com/gpu.product": "H100"}, tolerations)
    assert "0 matching node(s)" in feasibility.check([elsewhere], nodes, [], "nvidia.com/gpu", "i")[0]


# -- the inventory and the live state -------------------------------------------------------------------------------

def test_the_recorded_inventory_names_every_applied_object(wanted: dict[ObjectKey, DesiredObject]) -> None:
    entries = inventory.decode(applied("ConfigMap", "hxpc-inventory-rec-default"))
    desired_ids = {manifest(w).id for w in wanted.values() if not manifest(w).inventory}
    assert set(entries) == desired_ids
    assert all(e.uid and e.fields and e.hash for e in entries.values())
    assert inventory.decode(inventory.manifest("x", "ns", OWNER, entries.values())) == entries
    assert inventory.decode({"data": {"objects.json": "not json"}}) == {}


def test_a_replan_needs_no_dry_run_and_finds_nothing_to_do(wanted: dict[ObjectKey, DesiredObject]) -> None:
    objects = every_applied()
    entries = inventory.decode(applied("ConfigMap", "hxpc-inventory-rec-default"))
    for obj in objects:
        key = key_of(obj)
        if key in wanted and not manifest(wanted[key]).inventory:
            assert unchanged_since_applied(obj, wanted[key], entries[manifest(wanted[key]).id]), key
    scaled = RECORDED["api_scaled"]
    assert not unchanged_since_applied(scaled, wanted[key_of(scaled)], entries["Deployment.apps/rec-default/api"])
    live = parse(raw_of(objects), wanted, Policy(OWNER))
    assert set(live) == set(wanted)                      # pods' claim and the cluster's ConfigMap are not hxpc's
    for key, obj in live.items():
        assert obj.owned and obj.state == obj.target_state, key


def test_only_what_the_inventory_names_is_pruned_and_data_is_kept(wanted: dict[ObjectKey, DesiredObject]) -> None:
    objects = every_applied()
    claim = next(o for o in objects if o["kind"] == "PersistentVolumeClaim")
    claim["metadata"]["labels"] = {**claim["metadata"].get("labels", {}), **OWNER}   # as if hxpc had made it
    inv = next(o for o in objects if o["metadata"]["name"] == "hxpc-inventory-rec-default")
    entries = inventory.decode(inv)
    entries["PersistentVolumeClaim/rec-default/data-db-0"] = inventory.Entry(
        "v1", "PersistentVolumeClaim", "rec-default", "data-db-0", claim["metadata"]["uid"], "h", "f")
    inv["data"]["objects.json"] = inventory.encode(entries.values())
    lookalike = copy.deepcopy(applied("ConfigMap", "api-env"))
    lookalike["metadata"].update(name="lookalike", uid="other")          # hxpc's labels, but no inventory entry
    objects.append(lookalike)
    without_api = {k: d for k, d in wanted.items() if d.workload != "api"}
    inv_key = next(k for k, d in without_api.items() if manifest(d).inventory)
    without_api[inv_key] = dataclasses.replace(without_api[inv_key], state={"objects": {
        manifest(d).id: manifest(d).hash for k, d in without_api.items() if k != inv_key}})   # as desired() makes it
    live = parse(raw_of(objects), without_api, Policy(OWNER))
    pruned = sorted(f"{k.kind}/{k.name}" for k, o in live.items() if k not in without_api and not o.keep)
    assert pruned == ["ConfigMap/api-env", "Deployment/api", "PodDisruptionBudget/api", "Service/api"]
    kept = live[key_of(claim)]
    assert kept.keep == "a PersistentVolumeClaim holds data: it is deleted only with --allow-delete-data"
    assert key_of(lookalike) not in live
    allowed = parse(raw_of(objects), without_api, Policy(OWNER, allow_delete_data=True))
    assert not allowed[key_of(claim)].keep
    target = live[inv_key].target_state
    assert target is not None and "PersistentVolumeClaim/rec-default/data-db-0" in target["objects"]
    assert "Deployment.apps/rec-default/api" not in target["objects"]


def test_an_object_in_the_way_is_not_hxpcs_unless_adopted(wanted: dict[ObjectKey, DesiredObject]) -> None:
    objects = every_applied()
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "api")
    service["metadata"]["labels"] = {"app": "theirs"}
    assert not owned_by(service, OWNER)
    assert not parse(raw_of(objects), wanted, Policy(OWNER))[key_of(service)].owned
    assert parse(raw_of(objects), wanted, Policy(OWNER, adopt=True))[key_of(service)].owned

