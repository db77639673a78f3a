"""What a backend can tell the planner beyond "equal or not": phases around the workload waves, a final
object after the deletes, objects kept instead of pruned, the live system's own target state, replaces
it requires (and refusals without a permission), who changed a field outside hxpc, and plan warnings."""

from __future__ import annotations

import json

import pytest

from hxpc.engine.apply import ApplyOptions, apply
from hxpc.engine.objects import DesiredObject, LiveObject, ObjectKey
from hxpc.engine.plan import NeedsPermission, load_plan, make_plan
from hxpc.engine.render import render_json, render_markdown, render_text

WAVES = (("db",), ("api",))


def key(kind: str, name: str) -> ObjectKey:
    return ObjectKey("k", "ns", kind, name)


def want(kind: str, name: str, state: dict[str, object] | None = None, **extra: object) -> DesiredObject:
    return DesiredObject(key(kind, name), state or {"v": 1}, **extra)  # type: ignore[arg-type]


def plan_of(desired: list[DesiredObject], live: list[LiveObject] = (), warnings: tuple[str, ...] = ()):  # type: ignore[assignment]
    return make_plan({d.key: d for d in desired}, {lo.key: lo for lo in live}, WAVES, project="p", env="e",
                     spec_hash="h", warnings=warnings)


def test_phases_place_objects_before_and_after_the_waves_and_final_after_deletes() -> None:
    desired = [want("Namespace", "ns", phase=-3), want("Secret", "s", phase=-2), want("Service", "db", phase=-1,
                                                                                        workload="db"),
               want("Network", "shared"), want("Deployment", "db", workload="db"),
               want("Deployment", "api", workload="api"), want("ServiceMonitor", "api", phase=1, workload="api"),
               want("Inventory", "inv", after_deletes=True)]
    live = [LiveObject(key("Deployment", "old"), {"v": 1}, workload="old")]
    plan = plan_of(desired, live)
    order = [(a.wave, a.key.kind) for a in plan.actions]
    assert order == [(0, "Namespace"), (1, "Secret"), (2, "Service"), (3, "Network"), (4, "Deployment"),
                     (5, "Deployment"), (6, "ServiceMonitor"), (7, "Deployment"), (8, "Inventory")]
    assert [a.key.name for a in plan.actions if a.wave in (4, 5)] == ["db", "api"]
    assert plan.actions[7].kind == "delete"


def test_a_kept_object_is_listed_not_pruned_and_never_applied() -> None:
    live = [LiveObject(key("PersistentVolumeClaim", "cache"), {"v": 1}, workload=None,
                       keep="holds data; pass --allow-delete-data to delete it"),
            LiveObject(key("Deployment", "gone"), {"v": 1}, workload="gone")]
    plan = plan_of([], live)
    assert {a.key.name: a.kind for a in plan.actions} == {"cache": "keep", "gone": "delete"}
    assert [a.key.name for a in plan.touched] == ["gone"]
    assert plan.counts()["keep"] == 1
    assert plan.summary_line() == "Plan: 0 to add, 0 to change, 0 to replace, 1 to destroy, 1 kept."
    text = render_text(plan)
    assert "  = k:ns/PersistentVolumeClaim/cache  (kept, not pruned: holds data; pass --allow-delete-data" in text
    assert "| kept |" in render_markdown(plan)
    only_kept = plan_of([], live[:1])
    assert not only_kept.has_changes
    assert "k:ns/PersistentVolumeClaim/cache" in render_text(only_kept)
    assert "1 object(s) the spec no longer has are kept" in only_kept.summary_line()


def test_the_live_systems_target_state_is_what_the_plan_diffs_against() -> None:
    desired = [want("Deployment", "api", {"spec": {"replicas": 3}}, workload="api")]
    defaulted = {"spec": {"replicas": 3, "strategy": "RollingUpdate"}}
    same = LiveObject(key("Deployment", "api"), defaulted, target_state=defaulted)
    assert plan_of(desired, [same]).actions[0].kind == "noop"
    drifted = LiveObject(key("Deployment", "api"), {"spec": {"replicas": 2, "strategy": "RollingUpdate"}},
                         target_state=defaulted, writers={("spec", "replicas"): "kubectl"})
    action = plan_of(desired, [drifted]).actions[0]
    assert (action.kind, action.reason) == ("update", "spec.replicas 2 -> 3 (changed outside hxpc by kubectl)")
    assert action.changes[0].by == "kubectl"
    assert "(changed outside hxpc by kubectl)" in render_text(plan_of(desired, [drifted]))
    assert load_plan(render_json(plan_of(desired, [drifted]))).actions[0].changes[0].by == "kubectl"


def test_a_replace_the_backend_requires_is_refused_without_permission() -> None:
    live = LiveObject(key("StatefulSet", "db"), {"spec": {"size": 1}}, target_state={"spec": {"size": 2}},
                      must_replace="spec.volumeClaimTemplates is immutable")
    refused = plan_of([want("StatefulSet", "db", {"spec": {"size": 2}}, workload="db",
                            replace_refusal="pass --allow-replace to delete and recreate it")], [live])
    action = refused.actions[0]
    assert action.kind == "replace"
    assert action.reason == "spec.volumeClaimTemplates is immutable: spec.size 1 -> 2"
    assert action.refused == "pass --allow-replace to delete and recreate it"
    assert "REFUSED: pass --allow-replace" in render_text(refused)
    assert "refused without a permission" in refused.summary_line()
    assert json.loads(render_json(refused))["actions"][0]["refused"].startswith("pass --allow-replace")
    with pytest.raises(NeedsPermission) as caught:
        apply(refused, {}, env="e", spec_hash="h", project="p", options=ApplyOptions(handle_signals=False))
    assert caught.value.exit_code == 4
    assert "k:ns/StatefulSet/db: replace refused: pass --allow-replace" in str(caught.value)
    allowed = plan_of([want("StatefulSet", "db", {"spec": {"size": 2}}, workload="db")], [live])
    assert allowed.actions[0].kind == "replace" and not allowed.refused


def test_warnings_lead_every_view_and_survive_a_saved_plan() -> None:
    plan = plan_of([want("Deployment", "api", workload="api")], warnings=("k: model `big` cannot be scheduled",))
    assert render_text(plan).splitlines()[2] == "Warning: k: model `big` cannot be scheduled"
    assert "> **Warning:** k: model `big` cannot be scheduled" in render_markdown(plan)
    assert load_plan(render_json(plan)).warnings == ("k: model `big` cannot be scheduled",)
