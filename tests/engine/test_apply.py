"""The executor against an in-memory backend (a fake, for failure injection): waves, parallelism,
health gates and rollback, retries, interrupts, locking, saved plans and the metrics file."""

from __future__ import annotations

import io
import itertools
import re
import signal
import subprocess
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool
from fakes import MemoryLock

from hxpc.engine import plan_live
from hxpc.engine.apply import ApplyOptions, apply
from hxpc.engine.backend import ActionContext, HealthResult, TransientError, Undo, read_live
from hxpc.engine.lock import LockInfo, PrimitiveLock, acquire
from hxpc.engine.objects import DesiredObject, Gate, LiveObject, LiveState, ObjectKey
from hxpc.engine.plan import Action, Plan, load_plan
from hxpc.engine.progress import Event, PlainProgress
from hxpc.engine.render import render_json
from hxpc.engine.report import ApplyFailed, ApplyInterrupted
from hxpc.errors import BackendError, LockHeld, StalePlan

SPEC = "5pec5pec5pec5pec"
WAVES = (("db", "cache"), ("api",), ("web",))


def key(name: str) -> ObjectKey:
    return ObjectKey("fake", "hxp-dev", "container", name)


class FakeBackend:
    """A live system in a dict; records when each action starts and ends, and injects failures."""

    target = "fake"

    def __init__(self, desired: dict[ObjectKey, DesiredObject], live: dict[ObjectKey, LiveObject] | None = None):
        self._desired = desired
        self.objects: dict[ObjectKey, LiveObject] = dict(live or {})
        self.lockstore = MemoryLock()
        self.log: list[tuple[str, str, float]] = []
        self.reads: list[list[ObjectKey] | None] = []
        self.fail: dict[str, list[Exception]] = {}
        self.unhealthy: set[str] = set()
        self.probed: list[str] = []
        self.delay = 0.0
        self.on_apply: Any = None
        self.guard = threading.Lock()

    def desired(self) -> dict[ObjectKey, DesiredObject]:
        return self._desired

    def read_raw(self, keys: Collection[ObjectKey] | None = None) -> dict[str, Any]:
        self.reads.append(sorted(keys) if keys is not None else None)
        return {"containers": [{"key": k, "state": dict(o.state), "owned": o.owned, "workload": o.workload}
                               for k, o in self.objects.items() if keys is None or k in keys]}

    def parse(self, raw: dict[str, Any]) -> LiveState:
        return {c["key"]: LiveObject(c["key"], c["state"], c["owned"], c["workload"]) for c in raw["containers"]}

    def record(self, what: str, k: ObjectKey) -> None:
        with self.guard:
            self.log.append((what, k.name, time.monotonic()))

    def apply_action(self, action: Action, ctx: ActionContext) -> Undo | None:
        self.record("start", action.key)
        if self.on_apply:
            self.on_apply(action, ctx)
        time.sleep(self.delay)
        queue = self.fail.get(action.key.name)
        if queue:
            raise queue.pop(0)
        previous = self.objects.get(action.key)
        if action.kind == "delete":
            self.objects.pop(action.key)
        else:
            assert ctx.desired is not None
            self.objects[action.key] = LiveObject(action.key, ctx.desired.state, True, ctx.desired.workload)
        self.record("end", action.key)
        return Undo(action.key, "restore the previous container", previous)

    def rollback(self, undo: Undo) -> None:
        self.record("rollback", undo.key)
        if undo.data is None:
            self.objects.pop(undo.key, None)
        else:
            self.objects[undo.key] = undo.data

    def health(self, k: ObjectKey, deadline: float) -> HealthResult:
        with self.guard:
            self.probed.append(k.name)
        if k.name in self.unhealthy:
            return HealthResult(False, "HTTP 500 from /health")
        return HealthResult(True, "HTTP 200")

    def lock(self, info: LockInfo) -> PrimitiveLock:
        return acquire(self.lockstore, info, "hxp/dev")


def want(name: str, workload: str, image: str = "img:2") -> DesiredObject:
    return DesiredObject(key(name), {"image": image}, workload, gate=Gate(0.3, 0.02))


def have(name: str, workload: str, image: str = "img:1") -> LiveObject:
    return LiveObject(key(name), {"image": image}, True, workload)


def world() -> FakeBackend:
    """db and cache (wave 0), api x2 (wave 1), web (wave 2); api-1 and web-1 exist at img:1; old-1 is pruned."""
    desired = {d.key: d for d in [want("db-1", "db"), want("cache-1", "cache"), want("api-1", "api"),
                                  want("api-2", "api"), want("web-1", "web")]}
    live = {o.key: o for o in [have("api-1", "api"), have("web-1", "web"), have("old-1", "old")]}
    return FakeBackend(desired, live)


def make(backend: FakeBackend) -> Plan:
    return plan_live({"fake": backend}, WAVES, project="hxp", env="dev", spec_hash=SPEC)


def run(backend: FakeBackend, p: Plan | None = None, **opts: Any) -> Any:
    opts.setdefault("backoff_s", 0.01)
    return apply(p or make(backend), {"fake": backend}, env="dev", spec_hash=SPEC, options=ApplyOptions(**opts))


def spans(backend: FakeBackend) -> dict[str, tuple[float, float]]:
    starts = {n: t for w, n, t in backend.log if w == "start"}
    return {n: (starts[n], t) for w, n, t in backend.log if w == "end"}


def test_apply_runs_waves_in_dependency_order_and_converges() -> None:
    backend = world()
    report = run(backend)
    assert report.outcome == "success"
    s = spans(backend)
    assert max(s["db-1"][1], s["cache-1"][1]) <= min(s["api-1"][0], s["api-2"][0])
    assert max(s["api-1"][1], s["api-2"][1]) <= s["web-1"][0] <= s["web-1"][1] <= s["old-1"][0]
    assert not make(backend).has_changes                     # re-plan after apply: nothing to do
    assert backend.lockstore.payload is None                 # lock released
    assert sorted(set(backend.probed)) == ["api-1", "api-2", "cache-1", "db-1", "web-1"]
    assert [w.gate for w in report.waves] == ["passed", "passed", "passed", ""]  # deletes have no gate
    assert "Applied: 3 added, 2 changed, 0 replaced, 1 destroyed, 0 restarted." in report.render()


def test_actions_in_one_wave_overlap_up_to_parallelism() -> None:
    desired = {d.key: d for d in (want(f"db-{i}", "db") for i in range(4))}
    backend = FakeBackend(desired)
    backend.delay = 0.2
    run(backend, parallelism=4)
    s = spans(backend)
    assert max(a for a, _ in s.values()) < min(b for _, b in s.values())  # all started before any ended
    serial = FakeBackend(desired)
    serial.delay = 0.05
    run(serial, parallelism=1)
    ordered = sorted(spans(serial).values())
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ordered))


def test_failed_health_gate_rolls_back_that_wave_only() -> None:
    backend = world()
    backend.unhealthy = {"api-2"}
    before = dict(backend.objects)
    with pytest.raises(ApplyFailed) as caught:
        run(backend)
    report = caught.value.report
    assert caught.value.exit_code == 1
    assert "health gate failed in wave 1: fake:hxp-dev/container/api-2" in str(caught.value)
    assert backend.objects[key("api-1")] == before[key("api-1")]   # restored
    assert key("api-2") not in backend.objects                     # its create undone
    assert backend.objects[key("db-1")].state == {"image": "img:2"}  # earlier wave kept: it passed its gate
    statuses = {r.action.key.name: r.status for r in report.results.values()}
    assert statuses == {"db-1": "ok", "cache-1": "ok", "api-1": "rolled_back", "api-2": "rolled_back",
                        "web-1": "pending", "old-1": "pending"}
    assert "not healthy after 0.3s: HTTP 500 from /health" in report.render()
    assert [w.gate for w in report.waves] == ["passed", "failed"]
    assert backend.lockstore.payload is None


def test_transient_failures_are_retried_then_succeed() -> None:
    backend = world()
    backend.fail["db-1"] = [TransientError("connection reset by peer"), TransientError("HTTP 503")]
    out = io.StringIO()
    report = apply(make(backend), {"fake": backend}, env="dev", spec_hash=SPEC,
                   options=ApplyOptions(backoff_s=0.01), progress=PlainProgress(out))
    result = next(r for r in report.results.values() if r.action.key.name == "db-1")
    assert (result.status, result.attempts, result.retries) == ("ok", 3, ["connection reset by peer", "HTTP 503"])
    assert "create retrying: connection reset by peer; retrying in 0.01s (attempt 2 of 5)" in out.getvalue()
    assert "retried 2x: HTTP 503" in report.render()


def test_transient_failures_give_up_after_the_bound() -> None:
    backend = world()
    backend.fail["db-1"] = [TransientError("timeout")] * 10
    with pytest.raises(ApplyFailed, match=r"db-1: timeout \(gave up after 3 attempts\)"):
        run(backend, retries=2)


def test_permanent_failure_fails_at_once_with_the_systems_message() -> None:
    backend = world()
    backend.fail["cache-1"] = [BackendError("pull access denied for img, repository does not exist")]
    backend.delay = 0.05
    with pytest.raises(ApplyFailed) as caught:
        run(backend)
    assert "fake:hxp-dev/container/cache-1: pull access denied for img" in str(caught.value)
    results = {r.action.key.name: r for r in caught.value.report.results.values()}
    assert results["cache-1"].attempts == 1
    assert results["db-1"].status == "rolled_back"        # the rest of its wave is undone
    assert key("db-1") not in backend.objects
    assert backend.lockstore.payload is None


def test_sigint_stops_new_actions_reverts_the_wave_and_releases_the_lock() -> None:
    backend = world()
    previous = signal.getsignal(signal.SIGINT)

    def interrupt(action: Action, ctx: ActionContext) -> None:
        if action.key.name == "cache-1":
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            assert ctx.stop.wait(5), "the signal handler should set the stop event"

    backend.on_apply = interrupt
    with pytest.raises(ApplyInterrupted) as caught:
        run(backend, parallelism=1)
    report = caught.value.report
    assert caught.value.exit_code == 130
    statuses = {r.action.key.name: r.status for r in report.results.values()}
    assert statuses["cache-1"] == "rolled_back"           # it was under way: finished, then reverted
    assert statuses["db-1"] == "skipped"                  # not started after the signal
    assert {statuses[n] for n in ("api-1", "api-2", "web-1", "old-1")} == {"pending"}
    assert "db-1" not in {n for _, n, _ in backend.log}
    assert report.outcome == "interrupted" and "SIGINT" in report.message
    assert backend.lockstore.payload is None
    assert signal.getsignal(signal.SIGINT) is previous
    assert key("cache-1") not in backend.objects


def test_stop_event_during_the_gate_interrupts_too() -> None:
    backend = world()
    backend.unhealthy = {"db-1"}
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(ApplyInterrupted):
        apply(make(backend), {"fake": backend}, env="dev", spec_hash=SPEC,
              options=ApplyOptions(stop=stop, handle_signals=False))
    assert key("db-1") not in backend.objects and backend.lockstore.payload is None


def test_a_held_lock_refuses_with_holder_and_since() -> None:
    backend = world()
    other = LockInfo("alice@ci-7 pid 4242", time.time() - 60, "other", 900)
    backend.lockstore.payload = other.to_dict()
    with pytest.raises(LockHeld) as caught:
        run(backend)
    assert caught.value.exit_code == 4
    assert f"alice@ci-7 pid 4242 since {other.since_iso}" in str(caught.value)
    assert not backend.log                                  # nothing touched
    assert backend.lockstore.payload == other.to_dict()     # and the other apply's lock kept


def test_an_expired_lock_is_taken_over() -> None:
    backend = world()
    backend.lockstore.payload = LockInfo("bob@dead pid 1", time.time() - 3600, "old", 600).to_dict()
    report = run(backend)
    assert report.outcome == "success"
    assert "of bob@dead pid 1 (since " in report.render() and "its TTL expired" in report.render()
    assert backend.lockstore.payload is None


def test_lock_protocol_against_a_concurrent_holder() -> None:
    store = MemoryLock()
    mine = LockInfo("me@here pid 1", float(int(time.time())), SPEC, 60)
    handle = acquire(store, mine, "hxp/dev")
    with pytest.raises(LockHeld, match="me@here pid 1"):
        acquire(store, LockInfo("you@there pid 2", time.time(), SPEC, 60), "hxp/dev")
    handle.release()
    handle.release()                                        # idempotent
    assert store.payload is None


def test_saved_plan_is_refused_after_an_outside_change() -> None:
    backend = world()
    saved = load_plan(render_json(make(backend)))
    backend.objects[key("api-1")] = have("api-1", "api", image="img:0")    # someone changed it by hand
    backend.reads.clear()
    with pytest.raises(StalePlan) as caught:
        run(backend, saved)
    assert "fake:hxp-dev/container/api-1: changed since the plan was made: image was img:1, now img:0" \
           in str(caught.value)
    assert caught.value.exit_code == 4
    assert backend.reads == [sorted(a.key for a in saved.touched)]       # only what the plan touches
    assert not backend.log and backend.lockstore.payload is None


def test_saved_plan_for_another_spec_or_env_is_refused() -> None:
    backend = world()
    saved = make(backend)
    with pytest.raises(StalePlan, match="spec is now"):
        apply(saved, {"fake": backend}, env="dev", spec_hash="different", options=ApplyOptions())
    with pytest.raises(StalePlan, match="environment `dev`, not `prod`"):
        apply(saved, {"fake": backend}, env="prod", spec_hash=SPEC, options=ApplyOptions())
    assert not backend.log


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    line_re = re.compile(r'^([a-z_]+)\{((?:[a-z_]+="[^"]*",?)*)\} (\S+)$')
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = line_re.match(line)
        assert m, f"not exposition format: {line!r}"
        labels = frozenset(re.findall(r'([a-z_]+)="([^"]*)"', m.group(2)))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def check_with_promtool(path: Path) -> None:
    done = subprocess.run([require_tool("promtool"), "check", "metrics"], input=path.read_bytes(), capture_output=True)
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()


def test_metrics_file_after_success_and_failure(tmp_path: Path) -> None:
    path = tmp_path / "textfile" / "hxpc.prom"
    run(world(), metrics_file=path)
    m = parse_metrics(path.read_text())
    base = {("project", "hxp"), ("env", "dev")}
    assert m[("hxpc_apply_success", frozenset(base))] == 1
    assert m[("hxpc_apply_outcome", frozenset(base | {("outcome", "success")}))] == 1
    assert m[("hxpc_apply_actions", frozenset(base | {("kind", "create"), ("result", "ok")}))] == 3
    assert m[("hxpc_apply_actions", frozenset(base | {("kind", "delete"), ("result", "ok")}))] == 1
    waves = [lbl for (name, lbl) in m if name == "hxpc_apply_wave_duration_seconds"]
    assert sorted(dict(w)["wave"] for w in waves) == ["0", "1", "2", "3"]
    check_with_promtool(path)

    failing = world()
    failing.unhealthy = {"db-1"}
    with pytest.raises(ApplyFailed):
        run(failing, metrics_file=path)
    m = parse_metrics(path.read_text())
    assert m[("hxpc_apply_success", frozenset(base))] == 0
    assert m[("hxpc_apply_outcome", frozenset(base | {("outcome", "failed")}))] == 1
    assert m[("hxpc_apply_actions", frozenset(base | {("kind", "create"), ("result", "rolled_back")}))] == 2
    assert not list(path.parent.glob(".hxpc.prom.*"))     # written atomically: no temporary left behind
    check_with_promtool(path)


def test_progress_events_cover_waves_actions_and_gates() -> None:
    events: list[Event] = []
    run_events = world()
    apply(make(run_events), {"fake": run_events}, env="dev", spec_hash=SPEC, options=ApplyOptions(),
          progress=events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    assert {"wave", "action", "done", "gate", "healthy"} <= set(kinds)
    assert events[-1].message.startswith("Apply complete after")


def test_no_changes_touches_nothing() -> None:
    backend = world()
    run(backend)
    backend.log.clear()
    report = run(backend)
    assert report.outcome == "success" and not backend.log
    assert read_live(backend) == backend.parse(backend.read_raw(None))


def test_status_reports_live_missing_extra_and_health() -> None:
    from hxpc.engine.status import all_healthy, collect_status, render_status_json, render_status_text

    backend = world()
    backend.unhealthy = {"api-1"}
    rows = {r.key.name: r for r in collect_status({"fake": backend})}
    assert (rows["api-1"].state, rows["api-1"].healthy, rows["api-1"].detail) == ("live", False,
                                                                                 "HTTP 500 from /health")
    assert (rows["web-1"].state, rows["web-1"].healthy) == ("live", True)
    assert (rows["db-1"].state, rows["db-1"].healthy) == ("missing", None)
    assert rows["old-1"].state == "extra"
    assert not all_healthy(list(rows.values()))
    text = render_status_text(list(rows.values()))
    assert re.search(r"^fake:hxp-dev/container/api-1 +live +UNHEALTHY +\(HTTP 500 from /health\)$", text, re.M)
    assert '"format_version": 1' in render_status_json(list(rows.values()))
