"""The contract every apply backend keeps, run on each one's real live system through its harness.

Docker Engine, systemd hosts and a Kubernetes API server each get the same scenarios (tests/harnesses/
describes the harnesses): a fresh apply in dependency waves, an empty and deterministic re-plan, a change
that touches only its service, a prune that removes only what the spec dropped (and never data), objects
that are not hxpc's left alone or refused when in the way, a saved plan refused after an outside change, a
failing health gate rolled back, the apply lock, and secrets that reach only the service. At each step the
harness also checks what only its backend promises (`verify_*`).
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from pathlib import Path

import pytest
from harnesses import Harness, Svc

from hxpc.engine.plan import NameClash, load_plan
from hxpc.engine.progress import Event, PlainProgress
from hxpc.engine.render import render_json, render_markdown, render_text
from hxpc.engine.report import ApplyFailed
from hxpc.errors import BackendError, LockHeld, StalePlan


def two(**web: object) -> dict[str, Svc]:
    """web (two replicas) depends on db (no health check: gated by the runtime alone)."""
    return {"web": Svc(replicas=2, depends_on=("db",), **web),  # type: ignore[arg-type]
            "db": Svc(env={"MODE": "a"}, health=False)}


def apart(**web: object) -> dict[str, Svc]:
    """web (two replicas) and db, independent: a backend may restart what depends on a restarted service."""
    return {"web": Svc(replicas=2, **web), "db": Svc(env={"MODE": "a"}, health=False)}  # type: ignore[arg-type]


def waves_of(plan: object, addresses: set[str]) -> set[int]:
    return {a.wave for a in plan.actions if str(a.key) in addresses}  # type: ignore[attr-defined]


def test_a_fresh_apply_creates_every_service_in_dependency_waves(harness: Harness) -> None:
    harness.write(two())
    plan = harness.plan()
    assert {a.kind for a in plan.actions} == {"create"}
    # what db runs on is live and healthy before web's starts (a backend may place config ahead of both)
    assert max(waves_of(plan, harness.addresses("db"))) < max(waves_of(plan, harness.addresses("web")))
    report = harness.apply(plan)
    assert report.outcome == "success", report.render()
    assert harness.serving("web") and harness.serving("db")
    assert not harness.lock_held()
    harness.verify_fresh(report)


def test_a_replan_after_apply_shows_no_changes(harness: Harness) -> None:
    harness.write(two())
    harness.apply()
    first, second = harness.plan(), harness.plan()
    assert not first.has_changes, render_text(first)
    assert {a.kind for a in first.actions} == {"noop"}
    assert render_json(first) == render_json(second)      # same spec and live state: byte-identical
    harness.verify_replan()


def test_changing_one_service_touches_only_it(harness: Harness) -> None:
    harness.write(apart())
    harness.apply()
    before = {n: harness.instances(n) for n in ("web", "db")}
    harness.write(apart(version=2))
    plan = harness.plan()
    touched = {str(a.key) for a in plan.touched}
    assert touched & harness.addresses("web") and touched <= harness.addresses("web") | harness.bookkeeping()
    harness.verify_changed(plan, "version")
    assert harness.apply(plan).outcome == "success"
    after = {n: harness.instances(n) for n in ("web", "db")}
    assert after["db"] == before["db"] and not after["web"] & before["web"]
    harness.verify_applied_change()

    services = apart(version=2)
    services["db"] = Svc(env={"MODE": "b"}, health=False)
    harness.write(services)
    plan = harness.plan()
    touched = {str(a.key) for a in plan.touched}
    assert touched & harness.addresses("db") and touched <= harness.addresses("db") | harness.bookkeeping()
    harness.verify_changed(plan, "env")
    harness.apply(plan)
    assert harness.instances("web") == after["web"] and harness.instances("db") != after["db"]
    assert not harness.plan().has_changes


def test_removing_a_service_prunes_it_and_nothing_else(harness: Harness) -> None:
    harness.write({"web": Svc(), "db": Svc(volume=True)})
    harness.apply()
    db = harness.addresses("db")
    web = harness.instances("web")
    harness.write({"web": Svc()})
    plan = harness.plan()
    deleted = {str(a.key) for a in plan.touched if a.kind == "delete"}
    assert deleted and deleted <= db
    assert not {str(a.key) for a in plan.touched} & harness.addresses("web")
    assert harness.apply(plan).outcome == "success"
    assert not harness.exists("db") and harness.instances("web") == web
    harness.verify_pruned("db")
    assert not harness.plan().has_changes


def test_objects_that_are_not_hxpcs_are_left_alone_or_refused_when_in_the_way(harness: Harness) -> None:
    harness.write({"web": Svc()})
    harness.apply()
    stray = harness.add_stray()
    plan = harness.plan()                                # the strays are not even in the plan
    assert not plan.has_changes and {str(a.key) for a in plan.actions} == harness.desired()
    harness.write({})                                   # the spec wants nothing: still only our own objects go
    harness.apply()
    assert not harness.exists("web") and harness.stray_intact(stray)

    address = harness.put_in_the_way("api")
    harness.write({"web": Svc(), "api": Svc()})
    with pytest.raises(NameClash) as caught:
        harness.plan()
    assert f"{address}: exists without hxpc's ownership labels" in str(caught.value)
    assert caught.value.exit_code == 1
    assert not harness.exists("web")                     # refused before anything was touched


def test_a_saved_plan_is_refused_after_an_outside_change(harness: Harness) -> None:
    harness.write(two())
    harness.apply()
    web = harness.instances("web")
    services = two()
    services["db"] = Svc(env={"MODE": "b"}, health=False)
    harness.write(services)
    saved = load_plan(render_json(harness.plan()))
    expected = harness.change_outside("db")
    with pytest.raises(StalePlan) as caught:
        harness.apply(saved)
    assert caught.value.exit_code == 4
    assert expected in str(caught.value)
    assert harness.instances("web") == web and not harness.lock_held()


def test_a_failing_health_gate_rolls_the_wave_back(harness: Harness) -> None:
    harness.write({"web": Svc()})
    harness.apply()
    before = harness.instances("web")
    harness.write({"web": Svc(broken=True)})
    with pytest.raises(ApplyFailed) as caught:
        harness.apply()
    report = caught.value.report
    assert caught.value.exit_code == 1 and "health gate failed" in str(caught.value)
    web = {r.status for address, r in report.results.items() if address in harness.addresses("web")}
    assert "rolled_back" in web and not web & {"failed", "rollback_failed"}, report.render()
    assert harness.serving("web")                        # the previous version serves again
    assert not harness.lock_held()
    harness.verify_rolled_back(report, "web", before)
    harness.write({"web": Svc()})
    again = harness.plan()
    assert not again.has_changes, render_text(again)      # live is exactly the previous spec again


def test_a_second_apply_is_refused_while_the_lock_is_held(harness: Harness) -> None:
    harness.write({"web": Svc()})
    holder = harness.hold_lock()
    try:
        assert harness.lock_held()
        with pytest.raises(LockHeld) as caught:
            harness.apply()
        assert caught.value.exit_code == 4
        assert "another apply holds the lock" in str(caught.value) and holder.info.holder in str(caught.value)
        assert not harness.exists("web")
    finally:
        holder.release()
    assert not harness.lock_held()


def test_secrets_reach_only_the_service(harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    value = f'tok "3n" $HOME `x` \\ end-{uuid.uuid4().hex[:8]}'
    in_file = f"file-secret-{uuid.uuid4().hex[:8]}"
    (tmp_path / "hf-token").write_text(in_file + "\n")
    var = f"HXT_{uuid.uuid4().hex[:8].upper()}_TOKEN"
    services = {"web": Svc(replicas=2, secrets={"TOKEN": "tok", "HF": "hf"})}
    secrets = {"tok": {"env": var}, "hf": {"file": str(tmp_path / "hf-token")}}
    harness.write(services, secrets)
    monkeypatch.delenv(var, raising=False)
    with pytest.raises(BackendError, match=f"secret `tok`: environment variable {var} is not set"):
        harness.apply()
    assert not harness.exists("web") and not harness.lock_held()       # nothing touched
    monkeypatch.setenv(var, value)
    log = io.StringIO()
    events: list[Event] = []
    progress = PlainProgress(log)
    plan = harness.plan()
    shown = render_text(plan) + render_json(plan) + render_markdown(plan)
    report = harness.apply(plan, progress=lambda e: (events.append(e), progress(e)))
    assert report.outcome == "success", report.render()
    assert harness.sees_secret("web", "TOKEN", value) and harness.sees_secret("web", "HF", in_file)
    everything = shown + log.getvalue() + repr(events) + report.render() + json.dumps(report.to_dict())
    everything += harness.written() + caplog.text
    for leaked in (value, in_file, "3n"):
        assert leaked not in everything
    harness.verify_secret("web", value)
    # a new value alone: seen by hash where the backend compares values, never shown
    monkeypatch.setenv(var, value + "-rotated")
    rotated = harness.plan()
    assert rotated.has_changes == harness.detects_secret_rotation
    assert all(a.reason.endswith("changed (sensitive)") for a in rotated.touched if a.kind != "noop"
               and str(a.key) not in harness.bookkeeping())
    assert value not in render_json(rotated)
