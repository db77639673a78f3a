"""Carrying out rolling updates inside a wave: a workload's replicas replaced a step at a time, each gated.

`WaveRolls` takes the actions of a wave that replace serving replicas (`Action.update`, see
hxpc.engine.rollout; worked out here from the objects read under the lock when the plan was saved
without them) and leaves every other action to the executor's usual parallel run. Each workload's roll
on a target runs in a thread of its own: step by step it hands the step's replicas to their backend
(`Rolling.roll`) through the executor's pool, so `--parallelism` still bounds the actions running at once
across services; it gates exactly those replicas (`Rolling.replica_health`) within their startup budget;
after a start-first step it retires the old replicas (`Rolling.retire`). The first failure anywhere in
the wave (a roll's step or gate, or another action) stops every roll before its next step. Rolling back
undoes the steps done, newest first, and waits for each restored replica to serve again before undoing
the next, so a rollback never takes more replicas down at once than the roll did. Replicas the roll never
reached keep running the previous version, and the failure names the replica that failed and why.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from hxpc.engine.backend import ActionContext, Backend, HealthResult, Undo
from hxpc.engine.objects import DesiredObject, LiveObject, ObjectKey
from hxpc.engine.rollout import plan_updates
from hxpc.errors import HxpcError

if TYPE_CHECKING:
    from hxpc.engine.plan import Action, Plan
    from hxpc.engine.report import ActionResult, ApplyReport, WaveResult

T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    """What one `Rolling.roll` call replaces: `replicas` of the action's object, start-first or stop-first.
    On the object's `first` step the backend also does what takes nothing serving down: replicas that are
    new or were down start, files are written, removed replicas go."""

    replicas: tuple[str, ...]
    start_first: bool
    first: bool


@runtime_checkable
class Rolling(Protocol):
    """What a backend whose desired objects carry a `Rollout` provides so that their replicas roll."""

    def roll(self, action: Action, ctx: ActionContext, step: Step) -> Undo | None:
        """Replace `step.replicas` of the action's object: stop each old replica, then start its replacement;
        or, with `step.start_first`, start the replacement beside the old one, which keeps serving until
        `retire`. As `apply_action`: the Undo restores what this call changed, and a call that fails undoes
        itself."""
        ...

    def retire(self, undo: Undo) -> None:
        """A start-first step passed its gate: stop the old replicas it started beside (kept, stopped, until
        the wave ends, so a rollback can still bring them back)."""
        ...

    def replica_health(self, key: ObjectKey, replicas: Sequence[str], deadline: float) -> HealthResult:
        """One probe round of only these replicas of the object."""
        ...

    def restored_health(self, undo: Undo, deadline: float) -> HealthResult:
        """One probe round of the replicas a rollback of `undo` brought back, judged by their previous
        version's own checks (the spec's may have changed with the update that failed)."""
        ...


class Executor(Protocol):
    """What the executor (hxpc.engine.apply) lends a wave's rolls."""

    plan: Plan
    backends: Mapping[str, Backend]
    desired: dict[ObjectKey, DesiredObject]
    live: dict[ObjectKey, LiveObject]
    stop: threading.Event
    report: ApplyReport

    def context(self, action: Action) -> ActionContext: ...

    def retry(self, call: Callable[[], T], what: str, result: ActionResult | None, cancel: threading.Event) -> T: ...

    def emit(self, kind: str, action: Action | None = None, message: str = "", wave: int | None = None) -> None: ...


@dataclass
class _Done:
    """One `roll` call that went through: what it replaced, in which step, and how to undo it."""

    action: Action
    replicas: tuple[str, ...]
    step: int
    undo: Undo | None


@dataclass
class _Roll:
    """One workload's roll on one target: its steps, in order, each a list of (action, replicas)."""

    target: str
    workload: str
    steps: list[list[tuple[Action, tuple[str, ...]]]]
    done: list[_Done] = field(default_factory=list)
    failure: str = ""          # the replica that failed and why
    stopped_at: str = ""       # that replica's name
    failed: set[tuple[ObjectKey, str]] = field(default_factory=set)   # replicas whose replacement undid itself
    gate_failed: bool = False
    gated: bool = False

    @property
    def actions(self) -> list[Action]:
        seen: dict[ObjectKey, Action] = {}
        for parts in self.steps:
            for action, _ in parts:
                seen.setdefault(action.key, action)
        return list(seen.values())

    def untouched(self) -> list[str]:
        reached = {(d.action.key, r) for d in self.done for r in d.replicas} | self.failed
        return [r for parts in self.steps for a, replicas in parts for r in replicas if (a.key, r) not in reached]


def _steps(actions: Sequence[Action]) -> list[list[tuple[Action, tuple[str, ...]]]]:
    by_step: dict[int, dict[ObjectKey, tuple[Action, list[str]]]] = {}
    for action in actions:
        assert action.update is not None
        for replica, step in zip(action.update.replicas, action.update.steps, strict=True):
            by_step.setdefault(step, {}).setdefault(action.key, (action, []))[1].append(replica)
    return [[(a, tuple(rs)) for _, (a, rs) in sorted(parts.items())] for _, parts in sorted(by_step.items())]


class WaveRolls:
    """The rolls of one wave (see the module): `start`, then `wait` or `halt`, then `rollback` on failure."""

    def __init__(self, run: Executor, pool: ThreadPoolExecutor, wave: int, actions: Sequence[Action],
                 record: WaveResult):
        self.run, self.pool, self.wave, self.record = run, pool, wave, record
        self.abort = threading.Event()
        self._never = threading.Event()
        self._threads: list[threading.Thread] = []
        if actions and not any(a.update is not None for a in run.plan.actions):
            # a plan saved before updates existed: work them out from the objects read under the lock
            updates = plan_updates(actions, run.desired, run.live)
            actions = [dataclasses.replace(a, update=updates[a.key]) if a.key in updates else a for a in actions]
        self.actions = list(actions)   # the wave's actions, each with its update
        groups: dict[tuple[str, str], list[Action]] = {}
        self.plain: list[Action] = []
        for action in actions:
            if action.update is not None and isinstance(run.backends[action.key.target], Rolling):
                groups.setdefault((action.key.target, action.workload or str(action.key)), []).append(action)
            else:
                self.plain.append(action)
        self.rolls = [_Roll(target, workload, _steps(members))
                      for (target, workload), members in sorted(groups.items())]

    # -- running ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        for roll in self.rolls:
            thread = threading.Thread(target=self._run, args=(roll,), name=f"hxpc-roll-{roll.workload}")
            self._threads.append(thread)
            thread.start()

    def wait(self) -> None:
        for thread in self._threads:
            thread.join()
        self._threads = []
        if any(r.gated for r in self.rolls) and self.record.gate in ("", "passed", "waiting"):
            if any(r.gate_failed for r in self.rolls):
                self.record.gate = "failed"
            elif self.run.stop.is_set():
                self.record.gate = "interrupted"
            elif not self.abort.is_set():
                self.record.gate = "passed"

    def halt(self) -> None:
        """Stop every roll before its next step, and wait for the steps under way."""
        self.abort.set()
        self.wait()

    @property
    def failure(self) -> str:
        return next((r.failure for r in self.rolls if r.failure), "")

    def _cut(self) -> bool:
        return self.abort.is_set() or self.run.stop.is_set()

    def _fail(self, roll: _Roll, message: str, gate: bool = False) -> None:
        roll.failure, roll.gate_failed = message, gate
        self.abort.set()  # every other roll of the wave stops before its next step

    def _run(self, roll: _Roll) -> None:
        try:
            self._steps_of(roll)
        except Exception as exc:  # noqa: BLE001 - a bug here must still fail the wave and roll it back
            self._fail(roll, f"rolling {roll.workload} on {roll.target}: {type(exc).__name__}: {exc}")

    def _steps_of(self, roll: _Roll) -> None:
        started: set[ObjectKey] = set()
        for number, parts in enumerate(roll.steps, start=1):
            if self._cut():
                return
            calls = []
            for action, replicas in parts:
                assert action.update is not None
                step = Step(replicas, action.update.start_first, action.key not in started)
                started.add(action.key)
                calls.append(self.pool.submit(self._replace, roll, action, step, number))
            outcomes = [c.result() for c in calls]
            roll.done += [d for d in outcomes if isinstance(d, _Done)]
            errors = [o for o in outcomes if isinstance(o, str)]
            if errors:
                self._fail(roll, errors[0])
                return
            steps_done = [d for d in outcomes if isinstance(d, _Done)]
            problem = self._gate(roll, steps_done, self._cut)
            if problem is None:
                return  # cut short: the wave is failing or interrupted
            if problem:
                self._fail(roll, problem, gate=True)
                return
            for d in steps_done:
                if d.action.update is not None and d.action.update.start_first and d.undo is not None:
                    problem = self._retire(roll, d)
                    if problem:
                        self._fail(roll, problem)
                        return

    def _replace(self, roll: _Roll, action: Action, step: Step, number: int) -> _Done | str:
        run = self.run
        result = run.report.result(action)
        backend = run.backends[action.key.target]
        assert isinstance(backend, Rolling) and action.update is not None
        names = ", ".join(step.replicas)
        run.emit("action", action, f"replica {names} (step {number} of {len(roll.steps)}, {action.update.order}): "
                                   f"{action.reason}")
        began = time.monotonic()
        try:
            undo = run.retry(partial(backend.roll, action, run.context(action), step), str(action.key), result,
                             run.stop)
        except Exception as exc:  # noqa: BLE001 - any failure fails the roll and the wave; named in the report
            text = str(exc) if isinstance(exc, HxpcError) else f"{type(exc).__name__}: {exc}"
            result.status, result.error = "failed", f"replica {names}: {text}"
            roll.failed.update((action.key, r) for r in step.replicas)
            roll.stopped_at = roll.stopped_at or names
            result.duration_s += time.monotonic() - began
            run.emit("failed", action, result.error)
            return f"replica {names} of {roll.workload} ({action.key}) failed: {text}"
        result.duration_s += time.monotonic() - began
        result.status, result.undo = "ok", undo
        run.emit("done", action, f"replica {names}")
        return _Done(action, step.replicas, number, undo)

    def _retire(self, roll: _Roll, done: _Done) -> str:
        backend = self.run.backends[done.action.key.target]
        assert isinstance(backend, Rolling) and done.undo is not None
        try:
            self.run.retry(partial(backend.retire, done.undo), f"retiring {done.action.key}", None, self._never)
        except Exception as exc:  # noqa: BLE001 - the old replica still runs beside the new: fail and roll back
            text = f"{done.action.key}: stopping the previous replica {', '.join(done.replicas)} failed: {exc}"
            roll.stopped_at = roll.stopped_at or ", ".join(done.replicas)
            self.run.report.result(done.action).error = text
            return text
        return ""

    # -- the gate of one step ----------------------------------------------------------------------------------
    def _probe(self, done: _Done, deadline: float, restored: bool) -> HealthResult:
        backend = self.run.backends[done.action.key.target]
        assert isinstance(backend, Rolling)
        try:
            if restored:
                assert done.undo is not None
                return backend.restored_health(done.undo, deadline)
            return backend.replica_health(done.action.key, done.replicas, deadline)
        except Exception as exc:  # noqa: BLE001 - a probe that errors is an unhealthy round, not a crash
            return HealthResult(False, f"{type(exc).__name__}: {exc}")

    def _gate(self, roll: _Roll, steps_done: Sequence[_Done], cut: Callable[[], bool], *,
              restored: bool = False) -> str | None:
        """Wait until every replica of the step is healthy: "" when it is, the failure when one never gets
        there, None when `cut` says to stop waiting. `restored`: the replicas a rollback brought back, judged
        by their previous version (and the action's result keeps the failure that caused the rollback)."""
        verdict = not restored
        run = self.run
        now = time.monotonic()
        pending: dict[int, tuple[_Done, float, float, float]] = {}
        for i, d in enumerate(steps_done):
            want = run.desired.get(d.action.key)
            if want is not None and want.gate is not None:
                pending[i] = (d, now + want.gate.budget_s, want.gate.interval_s, want.gate.budget_s)
                run.emit("gate", d.action, f"replica {', '.join(d.replicas)}: waiting to be healthy "
                                           f"(budget {want.gate.budget_s:g}s)")
        roll.gated = roll.gated or bool(pending)
        last: dict[int, str] = {}
        while pending:
            if cut():
                return None
            for i, (d, deadline, _, budget) in list(pending.items()):
                health = self._probe(d, deadline, restored)
                result = run.report.result(d.action)
                names = ", ".join(d.replicas)
                if verdict:
                    result.health = health.detail
                if health.healthy:
                    run.emit("healthy", d.action, f"replica {names}: {health.detail}")
                    del pending[i]
                elif health.final or time.monotonic() >= deadline:
                    said = f"replica {names} not healthy after {budget:g}s: {health.detail or 'no detail'}"
                    if verdict:
                        result.health, result.error = said, f"health gate failed for replica {names}"
                        roll.stopped_at = roll.stopped_at or names
                    run.emit("unhealthy", d.action, said)
                    return f"health gate failed for replica {names} of {roll.workload} ({d.action.key}): {said}"
                elif health.detail != last.get(i):
                    run.emit("unhealthy", d.action, f"replica {names}: {health.detail}")
                last[i] = health.detail
            if pending:
                interval = min(p[2] for p in pending.values())
                until = min(p[1] for p in pending.values()) - time.monotonic()
                self._sleep(max(0.0, min(interval, until)), cut)
        return ""

    @staticmethod
    def _sleep(seconds: float, cut: Callable[[], bool]) -> None:
        end = time.monotonic() + seconds
        while not cut() and (left := end - time.monotonic()) > 0:
            time.sleep(min(0.05, left))

    # -- rollback -----------------------------------------------------------------------------------------------
    def rollback(self) -> None:
        """Undo every roll's steps, the rolls side by side, each newest first, each restored replica gated."""
        threads = [threading.Thread(target=self._rollback, args=(roll,), name=f"hxpc-unroll-{roll.workload}")
                   for roll in self.rolls if roll.done]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for roll in self.rolls:
            self._settle(roll)

    def _rollback(self, roll: _Roll) -> None:
        try:
            self._unroll(roll)
        except Exception as exc:  # noqa: BLE001 - a bug here must not hide the rest of the report
            self.run.report.notes.append(f"rolling back {roll.workload} on {roll.target}: {type(exc).__name__}: {exc}")

    def _unroll(self, roll: _Roll) -> None:
        run = self.run
        for d in reversed(roll.done):
            result = run.report.result(d.action)
            names = ", ".join(d.replicas)
            if d.undo is None:
                result.error = (result.error + "; " if result.error else "") + f"replica {names}: nothing to roll back"
                continue
            run.emit("rollback", d.action, f"replica {names}: {d.undo.description}")
            try:
                # never cancelled: a rollback that has started must finish, even when interrupted
                run.retry(partial(run.backends[d.action.key.target].rollback, d.undo), f"rollback {d.action.key}",
                          None, self._never)
            except Exception as exc:  # noqa: BLE001 - keep rolling back the others; the report names this one
                result.status = "rollback_failed"
                result.error = (result.error + "; " if result.error else "") + f"rollback of replica {names} " \
                                                                              f"failed: {exc}"
                run.emit("failed", d.action, result.error)
                continue
            run.emit("rolled_back", d.action, f"replica {names}")
            # the restored replica serves again before the next one is touched
            problem = self._gate(roll, [d], lambda: False, restored=True)
            if problem:
                run.report.notes.append(f"after rolling back, {problem}")

    def _settle(self, roll: _Roll) -> None:
        """Each action's final word: rolled back, or never reached (still the previous version)."""
        run = self.run
        reached = {d.action.key for d in roll.done}
        stopped_at = roll.stopped_at
        for action in roll.actions:
            result = run.report.result(action)
            if action.key in reached:
                if result.status == "ok":
                    result.status = "rolled_back"
            elif result.status == "pending":
                result.status = "skipped"
                why = f"the roll stopped at replica {stopped_at}" if stopped_at else "the wave stopped"
                result.error = f"not started: {why}; its replicas still run the previous version"

    def summary(self) -> str:
        """The failure, with what was rolled back and what was never touched (after `rollback`)."""
        roll = next((r for r in self.rolls if r.failure), None)
        if roll is None:
            return ""
        rolled, left = [r for d in roll.done for r in d.replicas], roll.untouched()
        return (roll.failure + (f"; rolled back: {', '.join(rolled)}" if rolled else "")
                + (f"; never touched, still the previous version: {', '.join(left)}" if left else ""))
