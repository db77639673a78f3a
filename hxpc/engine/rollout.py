"""Which replicas a change replaces, in which steps and in which order: the pure half of rolling updates.

A backend marks each object that runs replicas of a workload with a `Rollout` (objects.py). For every
update or replace of such an object, `plan_updates` picks the replicas that roll: those the change reaches
(`Rollout.own`) and that serve now; a replica that is new or down has no availability to lose, so it is
simply started. A workload's rolling replicas, over all its objects on one target, are taken in natural
name order (`web-2` before `web-10`) and cut into steps of max(1, max_unavailable). A replica that holds
something exclusive (`Rollout.exclusive` says what) is stop-first, any other start-first. A step whose
stop-first replicas are every replica of the workload serving on that target is downtime, which the plan
says with its expected length: the startup budget, as long as the health gate waits for it. The result is
one `Update` per action, saved with the plan; hxpc.engine.rolling carries it out.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hxpc.engine.objects import DesiredObject, FieldPath, LiveObject, ObjectKey, Rollout

if TYPE_CHECKING:
    from hxpc.engine.plan import Action

Order = Literal["stop-first", "start-first"]
ROLLED = frozenset({"update", "replace"})
BESIDE = "holds nothing exclusive: each new replica starts beside its old one"


@dataclass(frozen=True)
class Update:
    """How one action replaces the replicas of its object: `replicas` roll in `steps` (1-based, one per
    replica) of `total_steps`, `at_once` at a time, stop-first or start-first (`order`) because of `why`;
    `serving` replicas of the workload served on this target before; `downtime_s`, when set, is how long the
    workload may serve nothing (its startup budget), because a step takes every serving replica down."""

    order: Order
    why: str
    replicas: tuple[str, ...]
    steps: tuple[int, ...]
    total_steps: int
    at_once: int
    serving: int
    downtime_s: float | None = None

    @property
    def start_first(self) -> bool:
        return self.order == "start-first"

    def describe(self) -> str:
        """One line for the plan: what rolls when, in which order and why; or the downtime and how long."""
        head = f"{self.order}: it {self.why}"
        if self.downtime_s is not None:
            whom = "the only serving replica" if self.serving == 1 else f"all {self.serving} serving replicas"
            return (f"DOWNTIME up to {self.downtime_s:g}s (its startup budget): {', '.join(self.replicas)} "
                    f"is {whom} and goes down before its replacement starts ({head})")
        steps = sorted(set(self.steps))
        where = f"step {steps[0]}" if len(steps) == 1 else f"steps {', '.join(str(s) for s in steps)}"
        keeps = self.serving - (self.at_once if self.order == "stop-first" else 0)
        return (f"rolls {', '.join(self.replicas)} in {where} of {self.total_steps}, {self.at_once} at a time, "
                f"each healthy before the next; at least {max(0, keeps)} of {self.serving} keep serving ({head})")

    def to_dict(self) -> dict[str, Any]:
        return {"order": self.order, "why": self.why, "replicas": list(self.replicas), "steps": list(self.steps),
                "total_steps": self.total_steps, "at_once": self.at_once, "serving": self.serving,
                "downtime_s": self.downtime_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Update:
        order = data["order"]
        if order not in ("stop-first", "start-first"):
            raise ValueError(f"unknown update order {order!r}")
        replicas, steps = tuple(str(r) for r in data["replicas"]), tuple(int(s) for s in data["steps"])
        if len(replicas) != len(steps):
            raise ValueError("an update needs one step per replica")
        downtime = data.get("downtime_s")
        return cls(order, str(data["why"]), replicas, steps, int(data["total_steps"]), int(data["at_once"]),
                   int(data["serving"]), None if downtime is None else float(downtime))


def natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """`web-2` before `web-10`: digit runs compare as numbers."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p)


def _under(path: FieldPath, prefix: FieldPath) -> bool:
    return len(path) >= len(prefix) and path[: len(prefix)] == prefix


def serving(rollout: Rollout, have: LiveObject | None) -> tuple[str, ...]:
    """The replicas of the object that serve now (an object that says nothing of them: all, unless stopped)."""
    if have is None:
        return ()
    if have.serving is not None:
        return tuple(r for r in rollout.replicas if r in have.serving)
    return () if have.running is False else rollout.replicas


def reached(action: Action, rollout: Rollout) -> frozenset[str]:
    """The replicas the action's changes reach: a change under a replica's own paths that replica, a change
    under an inert path none, any other change (or a change the plan does not itemize) every replica."""
    everyone = frozenset(rollout.replicas)
    if not action.changes:
        return everyone
    hit: set[str] = set()
    for change in action.changes:
        if any(_under(change.path, p) for p in rollout.inert):
            continue
        owners = {r for r, paths in rollout.own.items() if any(_under(change.path, p) for p in paths)}
        if not owners:
            return everyone
        hit |= owners
    return frozenset(hit)


def rolled_replicas(action: Action, want: DesiredObject, have: LiveObject | None) -> tuple[str, ...]:
    if action.kind not in ROLLED or want.rollout is None or want.workload is None:
        return ()
    up, hit = set(serving(want.rollout, have)), reached(action, want.rollout)
    return tuple(r for r in want.rollout.replicas if r in up and r in hit)


def plan_updates(actions: Iterable[Action], desired: Mapping[ObjectKey, DesiredObject],
                 live: Mapping[ObjectKey, LiveObject]) -> dict[ObjectKey, Update]:
    """An `Update` for every action that replaces serving replicas (see the module)."""
    up: Counter[tuple[str, str]] = Counter()
    counted: set[tuple[str, str, str]] = set()
    for key, want in desired.items():
        if want.rollout is not None and want.workload is not None:
            for r in serving(want.rollout, live.get(key)):
                # a replica read by several objects (a systemd unit and its secret file) counts once
                if (key.target, key.scope, r) not in counted:
                    counted.add((key.target, key.scope, r))
                    up[(key.target, want.workload)] += 1
    groups: dict[tuple[str, str], list[tuple[Action, DesiredObject, tuple[str, ...]]]] = {}
    for action in actions:
        wanted = desired.get(action.key)
        if wanted is None or wanted.workload is None:
            continue
        rolls = rolled_replicas(action, wanted, live.get(action.key))
        if rolls:
            groups.setdefault((action.key.target, wanted.workload), []).append((action, wanted, rolls))
    out: dict[ObjectKey, Update] = {}
    for group, members in sorted(groups.items()):
        at_once = max(1, min(m[1].rollout.max_unavailable for m in members if m[1].rollout is not None))
        ids = sorted({(a.key.scope, r) for a, _, rolls in members for r in rolls}, key=lambda i: (natural(i[1]), i[0]))
        step_of = {rid: i // at_once + 1 for i, rid in enumerate(ids)}
        down: dict[int, set[tuple[str, str]]] = {}
        for a, want, rolls in members:
            if want.rollout is not None and want.rollout.exclusive:
                for r in rolls:
                    down.setdefault(step_of[(a.key.scope, r)], set()).add((a.key.scope, r))
        serving_before = max(up[group], len(ids))
        outage = {step for step, rids in down.items() if len(rids) >= serving_before}
        for a, want, rolls in members:
            assert want.rollout is not None
            ordered = tuple(sorted(rolls, key=natural))
            steps = tuple(step_of[(a.key.scope, r)] for r in ordered)
            exclusive = want.rollout.exclusive
            budget = want.gate.budget_s if want.gate is not None else 0.0
            downtime = budget if exclusive and outage.intersection(steps) else None
            out[a.key] = Update("stop-first" if exclusive else "start-first", exclusive or BESIDE, ordered, steps,
                                len(ids) // at_once + (1 if len(ids) % at_once else 0), at_once, serving_before,
                                downtime)
    return out


def wave_budget(actions: Sequence[Action], desired: Mapping[ObjectKey, DesiredObject], gated: frozenset[str]) -> float:
    """How long a wave's health gates may take: its slowest plain gate, or a roll's gates one step after
    another, twice (a failed roll is rolled back a replica at a time, each gated too)."""
    def budget(key: ObjectKey) -> float:
        want = desired.get(key)
        return want.gate.budget_s if want is not None and want.gate is not None else 0.0

    plain = max((budget(a.key) for a in actions if a.kind in gated and a.update is None), default=0.0)
    rolls: dict[tuple[str, str | None], dict[int, float]] = {}
    for a in actions:
        if a.update is not None:
            per_step = rolls.setdefault((a.key.target, a.workload), {})
            for step in a.update.steps:
                per_step[step] = max(per_step.get(step, 0.0), budget(a.key))
    return max([plain, *(2 * sum(steps.values()) for steps in rolls.values())])
