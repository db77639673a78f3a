"""The executor: carry out a plan wave by wave, behind health gates, under the lock, or roll back.

`apply` refuses a plan made for another environment or spec, or holding an
action its backend refuses without a permission (`NeedsPermission`), takes every
touched target's lock, re-reads only the objects the plan touches and refuses
a stale plan (nothing has been touched yet at that point). Then each wave's
actions run in parallel (`parallelism` workers); transient failures are
retried with bounded exponential backoff, anything else fails the action with
the live system's message. When every action of a wave succeeded, the health
gate probes each changed object until it is healthy or its startup budget is
spent. A failed action or gate rolls back that wave only (earlier waves
passed their gates) and raises `ApplyFailed`; SIGINT/SIGTERM stops starting
actions, lets running ones finish, reverts the wave under way and raises
`ApplyInterrupted`. Locks are renewed while the apply runs (a lock found broken
stops it as an interrupt does) and released, signal handlers restored, the metrics
file written and the final `finish` event emitted however the run ends.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TypeVar

from hxpc.engine.backend import ActionContext, Backend, HealthResult, Preflight, TransientError, WaveHooks, read_live
from hxpc.engine.lock import LockHandle, LockInfo, Renewal, lock_ttl, new_lock_info, renew_interval, took_over
from hxpc.engine.objects import DesiredObject, LiveObject, ObjectKey
from hxpc.engine.plan import Action, NeedsPermission, Plan, check_fresh, check_matches
from hxpc.engine.progress import Event, Progress
from hxpc.engine.report import ActionResult, ApplyFailed, ApplyInterrupted, ApplyReport, WaveResult
from hxpc.engine.rolling import WaveRolls
from hxpc.engine.rollout import wave_budget
from hxpc.errors import HxpcError, LockHeld, StalePlan, UsageError

T = TypeVar("T")
_GATED = frozenset({"create", "update", "replace", "restart"})
HEARTBEAT_S = 60.0


@dataclass
class ApplyOptions:
    parallelism: int = 4
    retries: int = 4               # further attempts after a transient failure
    backoff_s: float = 0.5         # first retry delay, doubled each time up to backoff_max_s
    backoff_max_s: float = 8.0
    lock_ttl_s: int | None = None  # None: sized from the plan's health-gate budgets
    lock_info: LockInfo | None = None
    metrics_file: Path | str | None = None
    stop: threading.Event | None = None  # set it to interrupt, as SIGINT does
    handle_signals: bool = True


class _Stop(Exception):
    """Internal: the stop event was seen; unwinds to the interrupt handling."""


@dataclass
class _Run:
    plan: Plan
    backends: Mapping[str, Backend]
    opts: ApplyOptions
    emit_to: Progress | None
    stop: threading.Event
    report: ApplyReport
    started: float = field(default_factory=time.monotonic)
    desired: dict[ObjectKey, DesiredObject] = field(default_factory=dict)
    live: dict[ObjectKey, LiveObject] = field(default_factory=dict)
    signal_name: str = ""
    completed: list[ActionResult] = field(default_factory=list)
    _done_lock: threading.Lock = field(default_factory=threading.Lock)
    _never: threading.Event = field(default_factory=threading.Event)

    def emit(self, kind: str, action: Action | None = None, message: str = "", wave: int | None = None) -> None:
        if self.emit_to is not None:
            self.emit_to(Event(kind, time.monotonic() - self.started, action.wave if action else wave,
                               action.key if action else None, action.kind if action else None, message))

    def retry(self, call: Callable[[], T], what: str, result: ActionResult | None, cancel: threading.Event) -> T:
        """Run `call`, retrying TransientError with backoff; permanent errors propagate at once."""
        attempt = 0
        while True:
            attempt += 1
            if result is not None:
                result.attempts = attempt
            try:
                return call()
            except TransientError as exc:
                if attempt > self.opts.retries:
                    raise TransientError(f"{exc} (gave up after {attempt} attempts)") from exc
                delay = min(self.opts.backoff_max_s, self.opts.backoff_s * 2 ** (attempt - 1))
                note = f"{exc}; retrying in {delay:g}s (attempt {attempt + 1} of {self.opts.retries + 1})"
                if result is not None:
                    result.retries.append(str(exc))
                    self.emit("retry", result.action, note)
                else:
                    self.emit("note", message=f"{what}: {note}")
                if cancel.wait(delay):
                    raise TransientError(f"{exc} (interrupted before retrying)") from exc

    def read_touched(self, target: str) -> Mapping[ObjectKey, LiveObject]:
        """Re-read only the objects the plan touches on `target`."""
        keys = [a.key for a in self.plan.touched if a.key.target == target]
        backend = self.backends[target]
        return self.retry(lambda: read_live(backend, keys), f"reading {target}", None, self.stop)

    # -- one action -------------------------------------------------------------------------------------------
    def context(self, action: Action) -> ActionContext:
        return ActionContext(self.plan.project, self.plan.env, self.plan.spec_hash, self.desired.get(action.key),
                             self.live.get(action.key), self.stop, lambda m: self.emit("note", action, m))

    def run_action(self, action: Action) -> ActionResult:
        result = self.report.result(action)
        if self.stop.is_set():
            result.status = "skipped"
            self.emit("skipped", action, "interrupted before it started")
            return result
        backend = self.backends[action.key.target]
        ctx = self.context(action)
        began = time.monotonic()
        self.emit("action", action, action.reason)
        try:
            result.undo = self.retry(lambda: backend.apply_action(action, ctx), str(action.key), result, self.stop)
            result.status = "ok"
        except HxpcError as exc:
            result.status, result.error = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure must still roll the wave back; named in the report
            result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        result.duration_s = time.monotonic() - began
        with self._done_lock:
            self.completed.append(result)
        self.emit("done" if result.status == "ok" else "failed", action, result.error)
        return result

    # -- the health gate --------------------------------------------------------------------------------------
    def probe(self, key: ObjectKey, deadline: float) -> HealthResult:
        try:
            return self.backends[key.target].health(key, deadline)
        except Exception as exc:  # noqa: BLE001 - a probe that errors is an unhealthy round, not a crash
            return HealthResult(False, f"{type(exc).__name__}: {exc}")

    def gate(self, pool: ThreadPoolExecutor, done: list[ActionResult], record: WaveResult,
             cut: threading.Event | None = None) -> list[ActionResult]:
        """Wait until every changed object with a gate is healthy; the ones that never became so (none when
        `cut` is set: the wave is failing anyway)."""
        now = time.monotonic()
        pending: dict[ObjectKey, tuple[ActionResult, float, float]] = {}
        for r in done:
            want = self.desired.get(r.action.key)
            if r.action.kind in _GATED and want is not None and want.gate is not None:
                pending[r.action.key] = (r, now + want.gate.budget_s, want.gate.interval_s)
                self.emit("gate", r.action, f"waiting to be healthy (budget {want.gate.budget_s:g}s)")
        failed: list[ActionResult] = []
        last: dict[ObjectKey, str] = {}
        said = dict.fromkeys(pending, now)  # when each object's gate last printed a line
        record.gate = "waiting" if pending else ""
        while pending:
            if self.stop.is_set():
                raise _Stop
            if cut is not None and cut.is_set():
                return failed
            keys = sorted(pending)
            rounds = list(pool.map(lambda k: self.probe(k, pending[k][1]), keys))
            for key, health in zip(keys, rounds, strict=True):
                r, deadline, _ = pending[key]
                r.health = health.detail
                if health.healthy:
                    self.emit("healthy", r.action, health.detail)
                    del pending[key]
                elif health.final or time.monotonic() >= deadline:
                    budget = deadline - now
                    r.health = (f"gave up after {time.monotonic() - now:.0f}s (waiting longer cannot help): "
                                if health.final and time.monotonic() < deadline else
                                f"not healthy after {budget:g}s: ") + (health.detail or "no detail")
                    self.emit("unhealthy", r.action, r.health)
                    failed.append(r)
                    del pending[key]
                elif health.detail != last.get(key) or time.monotonic() - said[key] >= HEARTBEAT_S:
                    # one line per new state, not per probe round; and a model loading for minutes in one
                    # state still says every minute how long it has waited, against its budget
                    waited = time.monotonic() - now
                    self.emit("unhealthy", r.action, f"{health.detail} ({waited:.0f}s of {deadline - now:g}s)")
                    said[key] = time.monotonic()
                last[key] = health.detail
            if failed:
                record.gate = "failed"
                return failed  # no point waiting for the rest: this wave rolls back
            if pending:
                interval = min(p[2] for p in pending.values())
                until_deadline = min(p[1] for p in pending.values()) - time.monotonic()
                self.stop.wait(max(0.0, min(interval, until_deadline)))
        if record.gate:
            record.gate = "passed"
        return failed

    # -- rollback ---------------------------------------------------------------------------------------------
    def rollback(self, results: list[ActionResult]) -> None:
        for r in reversed(results):
            if r.status != "ok":
                continue
            if r.undo is None:
                r.error = (r.error + "; " if r.error else "") + "nothing to roll back"
                continue
            self.emit("rollback", r.action, r.undo.description)
            undo = r.undo
            try:
                # never cancelled: a rollback that has started must finish, even when interrupted
                self.retry(partial(self.backends[r.action.key.target].rollback, undo), f"rollback {r.action.key}",
                           None, self._never)
                r.status = "rolled_back"
                self.emit("rolled_back", r.action, undo.description)
            except Exception as exc:  # noqa: BLE001 - keep rolling back the others; the report names this one
                r.status, r.error = "rollback_failed", f"rollback failed: {exc}"
                self.emit("failed", r.action, r.error)

    # -- one wave ---------------------------------------------------------------------------------------------
    def run_wave(self, pool: ThreadPoolExecutor, wave: int, actions: list[Action]) -> None:
        record = WaveResult(wave)
        self.report.waves.append(record)
        began = time.monotonic()
        self.emit("wave", wave=wave, message=f"{len(actions)} action(s)")
        # actions that replace serving replicas roll beside the rest, a few replicas at a time (rolling.py)
        rolls = WaveRolls(self, pool, wave, actions, record)
        actions = rolls.actions
        # backends that batch per wave (one daemon-reload per host) learn the wave's actions first
        batched = [(b, [a for a in actions if a.key.target == t]) for t, b in sorted(self.backends.items())
                   if isinstance(b, WaveHooks) and any(a.key.target == t for a in actions)]
        for backend, mine in batched:
            backend.begin_wave(mine)
        rolls.start()
        try:
            for future in [pool.submit(self.run_action, a) for a in rolls.plain]:
                future.result()
            # completion order, so a rollback undoes the latest change first
            finished = [r for r in self.completed if r.action.wave == wave]
            done = [r for r in finished if r.status == "ok"]
            if self.stop.is_set():
                raise _Stop
            broken = [r for r in finished if r.status == "failed"]
            if broken:
                rolls.halt()
                self.rollback(done)
                rolls.rollback()
                first = broken[0]
                raise self.fail(f"{first.action.key}: {first.error}; wave {wave} was rolled back", wave)
            try:
                unhealthy = self.gate(pool, done, record, cut=rolls.abort)
            except _Stop:
                record.gate = "interrupted"
                raise
            rolls.wait()
            if self.stop.is_set():
                raise _Stop
            if unhealthy or rolls.failure:
                self.rollback(done)
                rolls.rollback()
                if rolls.failure:
                    raise self.fail(f"{rolls.summary()}; wave {wave} was rolled back", wave)
                names = ", ".join(str(r.action.key) for r in unhealthy)
                raise self.fail(f"health gate failed in wave {wave}: {names}; the wave was rolled back", wave)
        except _Stop:
            rolls.halt()
            if record.gate == "waiting":
                record.gate = "interrupted"
            self.rollback([r for r in self.completed if r.action.wave == wave])
            rolls.rollback()
            raise
        finally:
            rolls.halt()  # a no-op unless something unforeseen cut the wave short: no roll outlives its wave
            for backend, mine in batched:
                try:
                    backend.end_wave(mine)
                except Exception as exc:  # noqa: BLE001 - the wave's own outcome stands; the report names this
                    self.report.notes.append(f"finishing wave {wave} on {backend.target}: {exc}")
            record.duration_s = time.monotonic() - began

    def interrupted(self) -> ApplyInterrupted:
        self.report.outcome = "interrupted"
        applied = sum(1 for r in self.report.results.values() if r.status == "ok")
        self.report.message = (f"{self.signal_name or 'stop requested'}: no new actions were started; the wave "
                               f"under way was reverted; {applied} action(s) stay applied; the lock was released")
        return ApplyInterrupted(self.report)

    def fail(self, message: str, wave: int) -> ApplyFailed:
        self.report.outcome, self.report.message = "failed", message
        self.emit("gate_failed" if "health gate" in message else "failed", wave=wave, message=message)
        return ApplyFailed(self.report)


def _install_signals(run: _Run) -> Callable[[], None]:
    """SIGINT/SIGTERM set the stop event (only the main thread may install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        # only set flags here: taking the progress lock in a signal handler could deadlock
        run.signal_name = run.signal_name or signal.Signals(signum).name
        run.stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore


def apply(plan: Plan, backends: Mapping[str, Backend], *, env: str, spec_hash: str, project: str | None = None,
          options: ApplyOptions | None = None, progress: Progress | None = None) -> ApplyReport:
    """Execute `plan` on `backends` (target -> backend) for the spec with `spec_hash` and `env` (and
    `project`, when given); the report on success, else raises StalePlan or LockHeld (exit 4, nothing
    touched), ApplyFailed (1) or ApplyInterrupted (130), each after releasing the locks."""
    opts = options or ApplyOptions()
    run = _Run(plan, backends, opts, progress, opts.stop or threading.Event(), ApplyReport(plan))
    restore = _install_signals(run) if opts.handle_signals else (lambda: None)
    locks: list[LockHandle] = []
    renewal: Renewal | None = None
    try:
        run.emit("start", message=f"{plan.project}/{plan.env}: {plan.summary_line()}")
        check_matches(plan, env=env, spec_hash=spec_hash, project=project)
        if plan.refused:
            raise NeedsPermission(plan.refused)
        used = sorted({a.key.target for a in plan.touched})
        missing = [t for t in used if t not in backends]
        if missing:
            raise UsageError(f"no backend for target(s) {', '.join(missing)}")
        for target in used:
            run.desired.update(backends[target].desired())
        budgets = [wave_budget(actions, run.desired, _GATED) for _, actions in plan.waves()]
        info = opts.lock_info or new_lock_info(spec_hash, opts.lock_ttl_s or lock_ttl(budgets))
        for target in used:
            # a live system restarting may answer again within the retry budget; a lock already taken by a
            # first attempt whose answer was lost is recognised by its id (`acquire`)
            handle = run.retry(partial(backends[target].lock, info), f"locking {target}", None, run.stop)
            locks.append(handle)
            for old, why in took_over(handle):
                run.report.notes.append(f"took over the {target} lock {old.lock_id} of {old.holder} "
                                        f"(since {old.since_iso}; {why})")
                run.emit("note", message=run.report.notes[-1])

        def lost(message: str) -> None:  # someone broke or took the lock: stop as an interrupt does
            run.report.notes.append(message)
            run.signal_name = run.signal_name or "lock lost"
            run.stop.set()

        renewal = Renewal(locks, renew_interval(info.ttl_s), lost).start()
        for target in used:
            run.live.update(run.read_touched(target))
        check_fresh(plan, run.live, run.desired)
        for target in used:
            backend = backends[target]
            if isinstance(backend, Preflight):  # e.g. missing secrets or images: refused before anything is touched
                mine = [a for a in plan.touched if a.key.target == target]
                run.retry(partial(backend.prepare, mine), f"preparing {target}", None, run.stop)
        with ThreadPoolExecutor(max_workers=max(1, opts.parallelism), thread_name_prefix="hxpc-apply") as pool:
            for wave, actions in plan.waves():
                touched = [a for a in actions if a.touches]
                if not touched:
                    continue
                if run.stop.is_set():
                    raise _Stop
                run.run_wave(pool, wave, touched)
        run.report.outcome = "success"
        return run.report
    except _Stop:
        raise run.interrupted() from None
    except (StalePlan, LockHeld, UsageError, NeedsPermission) as exc:
        run.report.outcome, run.report.message = "refused", str(exc).splitlines()[0]
        raise
    except ApplyFailed:
        raise
    except HxpcError as exc:
        if run.stop.is_set():  # e.g. a read whose retry was cut short by the signal
            raise run.interrupted() from exc
        run.report.outcome, run.report.message = "failed", str(exc)
        raise
    finally:
        if renewal is not None:
            renewal.stop()
            run.report.notes.extend(renewal.failures[:3])
        for handle in reversed(locks):
            try:
                handle.release()
            except Exception as exc:  # noqa: BLE001 - the run's own outcome matters more; say so in the report
                run.report.notes.append(f"could not release a lock: {exc}")
        restore()
        run.report.duration_s = time.monotonic() - run.started
        if opts.metrics_file is not None:
            from hxpc.engine.metrics import write_metrics

            try:
                write_metrics(opts.metrics_file, run.report)
            except OSError as exc:  # the apply's own outcome (and exit code) must not be replaced by this
                run.report.notes.append(f"could not write the metrics file {opts.metrics_file}: {exc}")
        run.emit("finish", message=run.report.render().splitlines()[0])
