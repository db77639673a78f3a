"""Rolling updates in the engine, against an in-memory fleet of replicas (a fake, for failure injection and
exact timing): plans say what rolls in which step, apply keeps `max_unavailable` and rolls back a failure.

The fake runs replicas of one workload as objects that hold one replica (as Docker containers do) or
several (as a systemd template unit on a host does). A replica serves from `ready_at` on; a sampler thread
counts the serving replicas every 5 ms while an apply runs. The real-system versions of these tests are
tests/engine/backends/docker/test_rolling.py and systemd/test_rolling.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from fakes import MemoryLock

from hxpc.engine import plan_live
from hxpc.engine.apply import ApplyOptions, apply
from hxpc.engine.backend import ActionContext, HealthResult, Undo
from hxpc.engine.lock import LockInfo, PrimitiveLock, acquire
from hxpc.engine.objects import DesiredObject, Gate, LiveObject, LiveState, ObjectKey, Rollout
from hxpc.engine.plan import Action, Plan, load_plan
from hxpc.engine.render import render_json, render_markdown, render_text
from hxpc.engine.report import ApplyFailed, ApplyInterrupted
from hxpc.engine.rolling import Rolling, Step

SPEC = "5pec5pec5pec5pec"
STARTUP_S = 0.15   # how long a replica takes to serve after it starts




@dataclasses.dataclass
class Replica:
    version: str
    ready_at: float | None   # None: stopped


class Fleet:
    """Replicas in memory, grouped into objects; implements Backend, WaveHooks-free, and Rolling."""

    target = "fake"

    def __init__(self, objects: Mapping[str, Sequence[str]], *, workload: str = "web", version: str = "v1",
                 max_unavailable: int = 1, exclusive: str = "publishes host port 8080", budget: float = 2.0):
        self.objects = {name: list(replicas) for name, replicas in objects.items()}
        self.workload, self.max_unavailable, self.exclusive, self.budget = workload, max_unavailable, exclusive, budget
        self.want = "v2"
        now = time.monotonic()
        self.replicas: dict[str, list[Replica]] = {r: [Replica(version, now)] for rs in objects.values() for r in rs}
        self.broken: set[tuple[str, str]] = set()     # (replica, version) that never becomes healthy
        self.lockstore = MemoryLock()
        self.guard = threading.Lock()
        self.calls: list[tuple[str, tuple[str, ...], float, float]] = []   # roll calls: name, replicas, start, end
        self.running_rolls = 0
        self.most_rolls_at_once = 0
        self.delay = 0.0
        self.on_roll: Any = None

    # -- what a client sees ------------------------------------------------------------------------------------
    def versions(self) -> dict[str, list[str]]:
        with self.guard:
            return {r: [c.version for c in cs if c.ready_at is not None] for r, cs in sorted(self.replicas.items())}

    # -- Backend ------------------------------------------------------------------------------------------------
    def key(self, name: str) -> ObjectKey:
        return ObjectKey("fake", "hxp-dev", "object", name)

    def desired(self) -> dict[ObjectKey, DesiredObject]:
        out = {}
        for name, replicas in self.objects.items():
            rollout = Rollout(tuple(replicas), self.max_unavailable, self.exclusive)
            out[self.key(name)] = DesiredObject(self.key(name), {"image": self.want}, self.workload,
                                                replace_on=("*",), gate=Gate(self.budget, 0.02), rollout=rollout)
        return out

    def read_raw(self, keys: Collection[ObjectKey] | None = None) -> dict[str, Any]:
        with self.guard:
            out = {}
            for name, replicas in self.objects.items():
                if not all(r in self.replicas for r in replicas):
                    continue  # never created
                running = [r for r in replicas if any(c.ready_at is not None for c in self.replicas[r])]
                versions = {c.version for r in replicas for c in self.replicas[r] if c.ready_at is not None}
                out[name] = {"image": sorted(versions)[0] if versions else "none", "serving": running}
            return out

    def parse(self, raw: Mapping[str, Any]) -> LiveState:
        return {self.key(n): LiveObject(self.key(n), {"image": o["image"]}, True, self.workload,
                                        serving=frozenset(o["serving"])) for n, o in raw.items()}

    def apply_action(self, action: Action, ctx: ActionContext) -> Undo | None:
        return self.roll(action, ctx, Step(tuple(self.objects[action.key.name]), False, True))

    def rollback(self, undo: Undo) -> None:
        previous: dict[str, list[Replica]] = undo.data  # type: ignore[assignment]
        now = time.monotonic()
        with self.guard:
            for r, copies in previous.items():
                self.replicas[r] = [Replica(c.version, now + STARTUP_S if c.ready_at is not None else None)
                                    for c in copies[:1]]

    def health(self, key: ObjectKey, deadline: float) -> HealthResult:
        return self.replica_health(key, self.objects[key.name], deadline)

    def lock(self, info: LockInfo) -> PrimitiveLock:
        return acquire(self.lockstore, info, "hxp/dev")

    # -- Rolling ------------------------------------------------------------------------------------------------
    def roll(self, action: Action, ctx: ActionContext, step: Step) -> Undo | None:
        began = time.monotonic()
        with self.guard:
            self.running_rolls += 1
            self.most_rolls_at_once = max(self.most_rolls_at_once, self.running_rolls)
        try:
            if self.on_roll:
                self.on_roll(action, step)
            time.sleep(self.delay)
            now = time.monotonic()
            with self.guard:
                previous = {r: [dataclasses.replace(c) for c in self.replicas.get(r, [])] for r in step.replicas}
                for r in step.replicas:
                    new = Replica(self.want, now + STARTUP_S)
                    if step.start_first:
                        self.replicas[r] = [new, *self.replicas[r]]   # the old copy keeps serving beside it
                    else:
                        self.replicas[r] = [new]
            return Undo(action.key, "bring the previous replicas back", previous)
        finally:
            with self.guard:
                self.running_rolls -= 1
                self.calls.append((action.key.name, step.replicas, began, time.monotonic()))

    def retire(self, undo: Undo) -> None:
        with self.guard:
            for r in undo.data:  # type: ignore[attr-defined]
                self.replicas[r] = self.replicas[r][:1]

    def restored_health(self, undo: Undo, deadline: float) -> HealthResult:
        return self.replica_health(undo.key, list(undo.data), deadline)  # type: ignore[call-overload]

    def replica_health(self, key: ObjectKey, replicas: Sequence[str], deadline: float) -> HealthResult:
        now = time.monotonic()
        with self.guard:
            for r in replicas:
                newest = self.replicas[r][0]
                if (r, newest.version) in self.broken:
                    return HealthResult(False, f"{r}: HTTP 500 from /health")
                if newest.ready_at is None or newest.ready_at > now:
                    return HealthResult(False, f"{r}: connection refused")
        return HealthResult(True, "HTTP 200")


def fleet_serving(fleet: Fleet) -> int:
    """Replicas with at least one serving copy."""
    now = time.monotonic()
    with fleet.guard:
        return sum(1 for r, copies in fleet.replicas.items()
                   if any(c.ready_at is not None and c.ready_at <= now and (r, c.version) not in fleet.broken
                          for c in copies))


@contextmanager
def sampling(fleet: Fleet) -> Iterator[list[int]]:
    """Count the serving replicas every 5 ms while the body runs."""
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(fleet_serving(fleet))
            time.sleep(0.005)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


def make(fleet: Fleet) -> Plan:
    return plan_live({"fake": fleet}, (("web",),), project="hxp", env="dev", spec_hash=SPEC)


def run(fleet: Fleet, p: Plan | None = None, **opts: Any) -> Any:
    opts.setdefault("backoff_s", 0.01)
    opts.setdefault("handle_signals", False)
    return apply(p or make(fleet), {"fake": fleet}, env="dev", spec_hash=SPEC, options=ApplyOptions(**opts))


def three() -> Fleet:
    return Fleet({"web-1": ["web-1"], "web-2": ["web-2"], "web-3": ["web-3"]})


# -- plans ---------------------------------------------------------------------------------------------------------

def test_fake_is_a_rolling_backend() -> None:
    assert isinstance(three(), Rolling)


def test_plan_rolls_each_replica_in_its_own_step() -> None:
    plan = make(three())
    updates = {a.key.name: a.update for a in plan.actions}
    assert all(u is not None for u in updates.values())
    assert [(u.replicas, u.steps, u.total_steps, u.order, u.at_once, u.serving, u.downtime_s)
            for u in updates.values() if u] == [
        (("web-1",), (1,), 3, "stop-first", 1, 3, None), (("web-2",), (2,), 3, "stop-first", 1, 3, None),
        (("web-3",), (3,), 3, "stop-first", 1, 3, None)]
    text = render_text(plan)
    assert ("update: rolls web-2 in step 2 of 3, 1 at a time, each healthy before the next; at least 2 of 3 keep "
            "serving (stop-first: it publishes host port 8080)") in text
    assert "Downtime" not in text
    md = render_markdown(plan)
    assert "| fake | `web` | 3 of 3 | 1 | stop-first | publishes host port 8080 | none |" in md
    # the saved plan carries it, and loads back to the same plan
    saved = render_json(plan)
    assert json.loads(saved)["actions"][1]["update"]["steps"] == [2]
    assert load_plan(saved) == plan


def test_replicas_of_one_object_roll_across_objects_in_natural_order() -> None:
    fleet = Fleet({"host-a": ["web@0", "web@2", "web@10"], "host-b": ["web@1", "web@3"]}, max_unavailable=2)
    plan = make(fleet)
    updates = {a.key.name: a.update for a in plan.actions if a.update}
    assert updates["host-a"].replicas == ("web@0", "web@2", "web@10")
    assert updates["host-a"].steps == (1, 2, 3)       # @0 @1 | @2 @3 | @10
    assert updates["host-b"].steps == (1, 2)
    assert {u.total_steps for u in updates.values()} == {3}


def test_a_single_replica_on_a_fixed_port_is_downtime_with_its_length() -> None:
    fleet = Fleet({"web-1": ["web-1"]}, budget=45)
    plan = make(fleet)
    update = plan.actions[0].update
    assert update is not None and update.downtime_s == 45
    text = render_text(plan)
    assert ("update: DOWNTIME up to 45s (its startup budget): web-1 is the only serving replica and goes down "
            "before its replacement starts (stop-first: it publishes host port 8080)") in text
    assert "Downtime this plan cannot avoid:\n  web on fake: up to 45s (its startup budget), because it " \
           "publishes host port 8080 and no other replica serves meanwhile" in text
    md = render_markdown(plan)
    assert md.index("> **Downtime this plan cannot avoid:**") < md.index("### fake")
    assert "| fake | `web` | 1 of 1 | 1 | stop-first | publishes host port 8080 | **up to 45s** |" in md


def test_max_unavailable_as_large_as_the_replicas_is_downtime_too() -> None:
    plan = make(Fleet({"a": ["a"], "b": ["b"]}, max_unavailable=2))
    assert {a.update.downtime_s for a in plan.actions if a.update} == {2.0}


def test_start_first_avoids_downtime_even_for_one_replica() -> None:
    plan = make(Fleet({"web-1": ["web-1"]}, exclusive="", max_unavailable=0))
    update = plan.actions[0].update
    assert update is not None and (update.order, update.downtime_s, update.at_once) == ("start-first", None, 1)
    assert "at least 1 of 1 keep serving (start-first: it holds nothing exclusive" in render_text(plan)


def test_replicas_that_are_down_or_new_do_not_roll() -> None:
    fleet = three()
    with fleet.guard:
        fleet.replicas["web-2"][0].ready_at = None          # stopped: nothing to keep serving
    fleet.objects["web-4"] = ["web-4"]                      # new: created
    plan = make(fleet)
    kinds = {a.key.name: (a.kind, a.update.replicas if a.update else None) for a in plan.actions}
    assert kinds["web-4"] == ("create", None)
    assert kinds["web-2"][1] is None
    assert kinds["web-1"][1] == ("web-1",) and kinds["web-3"][1] == ("web-3",)
    assert {a.update.serving for a in plan.actions if a.update} == {2}


# -- apply ---------------------------------------------------------------------------------------------------------

def test_three_replicas_one_at_a_time_keep_two_serving() -> None:
    fleet = three()
    with sampling(fleet) as samples:
        report = run(fleet)
    assert report.outcome == "success"
    assert [w.gate for w in report.waves] == ["passed"]
    assert fleet.versions() == {"web-1": ["v2"], "web-2": ["v2"], "web-3": ["v2"]}
    assert min(samples) >= 2 and samples.count(2) > 0     # it did take one down at a time
    calls = sorted(fleet.calls, key=lambda c: c[2])
    assert [c[1] for c in calls] == [("web-1",), ("web-2",), ("web-3",)]
    # each step started only after the one before was healthy
    assert all(b[2] >= a[3] + STARTUP_S for a, b in itertools.pairwise(calls))
    assert not make(fleet).has_changes


def test_two_at_a_time_keep_the_rest_serving() -> None:
    fleet = Fleet({f"w{i}": [f"w{i}"] for i in range(5)}, max_unavailable=2)
    fleet.delay = 0.3   # so the two replacements of a step visibly overlap, however loaded the machine
    with sampling(fleet) as samples:
        run(fleet)
    assert min(samples) >= 3 and samples.count(3) > 0
    assert fleet.most_rolls_at_once == 2


def test_start_first_keeps_every_replica_serving() -> None:
    fleet = Fleet({"a": ["a"], "b": ["b"], "c": ["c"]}, exclusive="", max_unavailable=0)
    with sampling(fleet) as samples:
        run(fleet)
    assert min(samples) == 3
    assert fleet.versions() == {"a": ["v2"], "b": ["v2"], "c": ["v2"]}   # old copies retired


def test_failure_on_the_second_replica_rolls_back_the_first_and_leaves_the_third() -> None:
    fleet = three()
    fleet.broken = {("web-2", "v2")}
    with sampling(fleet) as samples, pytest.raises(ApplyFailed) as caught:
        run(fleet)
    assert fleet.versions() == {"web-1": ["v1"], "web-2": ["v1"], "web-3": ["v1"]}
    assert [c[1] for c in sorted(fleet.calls, key=lambda c: c[2])] == [("web-1",), ("web-2",)]   # web-3 untouched
    message = str(caught.value)
    assert ("health gate failed for replica web-2 of web (fake:hxp-dev/object/web-2): replica web-2 not "
            "healthy after 2s: web-2: HTTP 500 from /health") in message
    assert "rolled back: web-1, web-2; never touched, still the previous version: web-3" in message
    assert "wave 0 was rolled back" in message
    statuses = {r.action.key.name: r.status for r in caught.value.report.results.values()}
    assert statuses == {"web-1": "rolled_back", "web-2": "rolled_back", "web-3": "skipped"}
    assert [w.gate for w in caught.value.report.waves] == ["failed"]
    rendered = caught.value.report.render()
    assert "health gate failed for replica web-2" in rendered
    assert "not started: the roll stopped at replica web-2; its replicas still run the previous version" in rendered
    # the rollback went one replica at a time too: never fewer than two serving
    assert min(samples) >= 2


def test_a_replace_that_fails_outright_is_named() -> None:
    fleet = three()

    def fail(action: Action, step: Step) -> None:
        if action.key.name == "web-2":
            raise RuntimeError("port is already allocated")

    fleet.on_roll = fail
    with pytest.raises(ApplyFailed, match=r"replica web-2 of web \(fake:hxp-dev/object/web-2\) failed: RuntimeError: "
                                          r"port is already allocated; rolled back: web-1; never touched, still "
                                          r"the previous version: web-3; wave 0"):
        run(fleet)
    assert fleet.versions() == {"web-1": ["v1"], "web-2": ["v1"], "web-3": ["v1"]}


def test_parallelism_bounds_rolls_of_different_workloads() -> None:
    web, api = three(), Fleet({"api-1": ["api-1"], "api-2": ["api-2"]}, workload="api")

    class Two:
        """Both fleets as one backend: one target, two workloads rolling side by side."""

        target = "fake"

        def __getattr__(self, name: str) -> Any:
            return getattr(web, name)

        def desired(self) -> dict[ObjectKey, DesiredObject]:
            return {**web.desired(), **api.desired()}

        def read_raw(self, keys: Collection[ObjectKey] | None = None) -> Any:
            return {**web.read_raw(), **api.read_raw()}

        def parse(self, raw: Any) -> LiveState:
            return {k: dataclasses.replace(o, workload="api" if k.name.startswith("api") else "web")
                    for k, o in web.parse(raw).items()}

        def of(self, key: ObjectKey) -> Fleet:
            return api if key.name.startswith("api") else web

        def roll(self, action: Action, ctx: ActionContext, step: Step) -> Undo | None:
            return self.of(action.key).roll(action, ctx, step)

        def retire(self, undo: Undo) -> None:
            self.of(undo.key).retire(undo)

        def rollback(self, undo: Undo) -> None:
            self.of(undo.key).rollback(undo)

        def replica_health(self, key: ObjectKey, replicas: Sequence[str], deadline: float) -> HealthResult:
            return self.of(key).replica_health(key, replicas, deadline)

        def restored_health(self, undo: Undo, deadline: float) -> HealthResult:
            return self.of(undo.key).restored_health(undo, deadline)

        def health(self, key: ObjectKey, deadline: float) -> HealthResult:
            return self.of(key).health(key, deadline)

    both = Two()
    web.delay = api.delay = 0.1
    plan = plan_live({"fake": both}, (("api", "web"),), project="hxp", env="dev", spec_hash=SPEC)  # type: ignore[dict-item]
    calls = []
    for parallelism in (1, 4):
        web.__init__({"web-1": ["web-1"], "web-2": ["web-2"], "web-3": ["web-3"]})  # type: ignore[misc]
        api.__init__({"api-1": ["api-1"], "api-2": ["api-2"]}, workload="api")  # type: ignore[misc]
        web.delay = api.delay = 0.1
        apply(plan, {"fake": both}, env="dev", spec_hash=SPEC,  # type: ignore[dict-item]
              options=ApplyOptions(parallelism=parallelism, handle_signals=False))
        spans = sorted([(c[2], c[3]) for c in web.calls + api.calls])
        overlaps = any(b[0] < a[1] for a, b in itertools.pairwise(spans))
        calls.append(overlaps)
    assert calls == [False, True]   # one action at a time with --parallelism 1; the two rolls overlap with 4


def test_interrupt_between_steps_reverts_what_rolled() -> None:
    fleet = three()
    stop = threading.Event()

    def interrupt(action: Action, step: Step) -> None:
        if action.key.name == "web-2":
            stop.set()

    fleet.on_roll = interrupt
    with pytest.raises(ApplyInterrupted) as caught:
        run(fleet, stop=stop)
    assert [w.gate for w in caught.value.report.waves] == ["interrupted"]
    assert fleet.versions() == {"web-1": ["v1"], "web-2": ["v1"], "web-3": ["v1"]}
    statuses = {r.action.key.name: r.status for r in caught.value.report.results.values()}
    assert statuses == {"web-1": "rolled_back", "web-2": "rolled_back", "web-3": "skipped"}


def test_a_plan_saved_before_updates_existed_still_rolls() -> None:
    fleet = three()
    data = json.loads(render_json(make(fleet)))
    for action in data["actions"]:
        del action["update"]
    old = load_plan(json.dumps(data))
    assert all(a.update is None for a in old.actions)
    with sampling(fleet) as samples:
        run(fleet, old)
    assert min(samples) >= 2
    assert fleet.versions() == {"web-1": ["v2"], "web-2": ["v2"], "web-3": ["v2"]}


def test_lock_ttl_covers_every_step_of_a_roll() -> None:
    from hxpc.engine.rollout import wave_budget

    fleet = Fleet({f"w{i}": [f"w{i}"] for i in range(4)}, budget=100)
    plan = make(fleet)
    # four steps of 100 s each, twice (a failed roll is rolled back a step at a time, each gated)
    assert wave_budget(plan.actions, fleet.desired(), frozenset({"replace"})) == 800
