"""Plans: the ordered actions that turn the live state into the desired one, and saved-plan checks.

`make_plan` is pure: for every desired object it chooses create, update,
replace, restart or noop (with a reason), every owned live object the spec no
longer has becomes a delete (or is kept, when its backend says why, e.g. it
holds data), and a live object with a desired name that is not this project's
and environment's is a `NameClash` raised before anything is touched. A
replace the backend refuses without an explicit permission is planned with
the refusal, and `apply` refuses the whole plan (`NeedsPermission`, exit 4).
Waves follow the dependency graph: objects placed before the waves (negative
phases, then shared objects such as networks), the workload waves, objects
placed after them (positive phases), deletes in reverse dependency order, and
last what runs after the deletes. A plan serializes to versioned JSON (see
`Plan.to_dict`); `check_matches` and `check_fresh` refuse a saved plan whose
environment, spec or touched live objects changed since it was made.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hxpc.engine.diff import attribute, creation_changes, diff_states, short, summarize
from hxpc.engine.objects import (
    Change,
    DesiredObject,
    LiveObject,
    LiveState,
    ObjectKey,
    desired_hash,
    fingerprint,
    format_path,
)
from hxpc.engine.rollout import Update, plan_updates
from hxpc.errors import BackendError, HxpcError, StalePlan, UsageError

FORMAT_VERSION = 1
PLAN_KIND = "hxpc-plan"
ActionKind = Literal["create", "update", "replace", "delete", "restart", "keep", "noop"]
KINDS: tuple[ActionKind, ...] = ("create", "update", "replace", "delete", "restart", "keep", "noop")
SYMBOLS: dict[str, str] = {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "restart": "~", "keep": "=",
                           "noop": " "}
UNTOUCHED: frozenset[str] = frozenset({"noop", "keep"})


class NeedsPermission(HxpcError):
    """The plan holds actions its backend refuses without an explicit permission (e.g. `--allow-replace`);
    nothing was touched (exit 4)."""

    exit_code = 4

    def __init__(self, actions: Sequence[Action]):
        self.actions = list(actions)
        lines = [f"  {a.key}: {a.kind} refused: {a.refused}" for a in self.actions]
        super().__init__("refusing to apply; the plan holds actions that need an explicit permission:\n"
                         + "\n".join(lines))


class NameClash(BackendError):
    """Objects hxpc would create or change exist but are not this project's and environment's."""

    def __init__(self, keys: Sequence[ObjectKey], project: str, env: str):
        self.keys = list(keys)
        lines = [f"  {k}: exists without hxpc's ownership labels for {project}/{env}" for k in self.keys]
        super().__init__("refusing to plan: objects in the way, which hxpc never touches; rename or remove them:\n"
                         + "\n".join(lines))


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    key: ObjectKey
    wave: int
    reason: str
    changes: tuple[Change, ...] = ()
    fingerprint: str | None = None     # of the live object planned against; None when absent
    desired_hash: str | None = None    # of the desired state; None for deletes
    workload: str | None = None
    refused: str = ""                  # why apply refuses this action unless permitted, and how to permit it
    version: str | None = None         # the live object's identity planned against (a uid, resourceVersion)
    update: Update | None = None       # when it replaces serving replicas: how they roll (hxpc.engine.rollout)

    @property
    def touches(self) -> bool:
        return self.kind not in UNTOUCHED

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "key": self.key.to_dict(), "address": str(self.key), "wave": self.wave,
               "workload": self.workload, "reason": self.reason, "changes": [c.to_dict() for c in self.changes],
               "fingerprint": self.fingerprint, "desired_hash": self.desired_hash}
        if self.refused:
            out["refused"] = self.refused
        if self.version is not None:
            out["version"] = self.version
        if self.update is not None:
            out["update"] = self.update.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Action:
        kind = data["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown action kind {kind!r}")
        return cls(kind, ObjectKey.from_dict(data["key"]), int(data["wave"]), str(data["reason"]),
                   tuple(Change.from_dict(c) for c in data.get("changes", [])), data.get("fingerprint"),
                   data.get("desired_hash"), data.get("workload"), str(data.get("refused") or ""),
                   data.get("version"),
                   Update.from_dict(data["update"]) if data.get("update") is not None else None)


@dataclass(frozen=True)
class Plan:
    project: str
    env: str
    spec_hash: str
    targets: tuple[str, ...]
    actions: tuple[Action, ...]
    spec_file: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def touched(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.touches)

    @property
    def refused(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.refused)

    @property
    def has_changes(self) -> bool:
        return any(a.touches for a in self.actions)

    def counts(self) -> dict[str, int]:
        counted = Counter(a.kind for a in self.actions)
        return {k: counted.get(k, 0) for k in KINDS}

    def waves(self) -> list[tuple[int, list[Action]]]:
        """(wave, actions) in execution order, noops included."""
        grouped: dict[int, list[Action]] = {}
        for a in self.actions:
            grouped.setdefault(a.wave, []).append(a)
        return sorted(grouped.items())

    def summary_line(self) -> str:
        n = self.counts()
        if not self.has_changes:
            kept = f" {n['keep']} object(s) the spec no longer has are kept (see each)." if n["keep"] else ""
            return "No changes. The live state matches the spec." + kept
        line = (f"Plan: {n['create']} to add, {n['update']} to change, {n['replace']} to replace, "
                f"{n['delete']} to destroy")
        line += f", {n['restart']} to restart" if n["restart"] else ""
        line += f", {n['keep']} kept" if n["keep"] else ""
        line += "." if not self.refused else f"; {len(self.refused)} refused without a permission (see each)."
        return line

    def to_dict(self) -> dict[str, Any]:
        """The saved-plan format, version 1 (`hxpc plan -o PLAN`, `--format json`).

        Top level: `format_version` (1), `project`, `env`, `spec_file` (as given to
        `hxpc plan`), `spec_hash` (of the merged spec; `apply PLAN` refuses another),
        `targets`, `summary` (count per action kind), `warnings` (what the backends
        want a human to read: infeasible placements, skipped objects) and `actions`,
        ordered by wave and then by address. Each action: `kind`
        (create|update|replace|delete|restart|keep|noop; keep: an owned object the spec
        no longer has, kept rather than pruned, with the reason),
        `key` {target, scope, kind, name}, `address` (`target:scope/kind/name`), `wave`
        (0-based execution order; deletes come after every create and update),
        `workload` (the spec service or model, or null for shared objects), `reason`,
        `changes` [{op: add|remove|change, path: [keys and list indexes], old, new}]
        with secret values shown as "(sensitive)" (and `by`, who set the live value
        outside hxpc, when known), `fingerprint` (hash of the live object planned
        against, null when absent), `desired_hash`, and `refused` when apply refuses
        it without a permission (the text says which), and `version`, the live
        object's identity planned against where the live system has one (a
        container id; a Kubernetes object's `uid/resourceVersion`); and, only on an
        action that replaces serving replicas, `update` {order: stop-first|start-first,
        why, replicas, steps (one per replica, 1-based), total_steps, at_once, serving,
        downtime_s (null unless every serving replica goes down at once)}. A plan saved
        before `update` existed still loads: apply then works it out itself. `kind` is
        always `hxpc-plan` (what tells a saved plan from a spec) and `hxpc_version` the
        version that made it; `warnings` are the backends' plan warnings. No timestamps:
        the same spec, live state and hxpc give byte-identical JSON.
        """
        from hxpc import version

        return {"kind": PLAN_KIND, "format_version": FORMAT_VERSION, "hxpc_version": version(),
                "project": self.project, "env": self.env,
                "spec_file": self.spec_file, "spec_hash": self.spec_hash, "targets": list(self.targets),
                "summary": self.counts(), "warnings": list(self.warnings),
                "actions": [a.to_dict() for a in self.actions]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise UsageError(f"saved plan has format_version {version!r}; this hxpc reads {FORMAT_VERSION}")
        try:
            return cls(str(data["project"]), str(data["env"]), str(data["spec_hash"]),
                       tuple(data["targets"]), tuple(Action.from_dict(a) for a in data["actions"]),
                       str(data.get("spec_file", "")), tuple(str(w) for w in data.get("warnings", ())))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"saved plan is malformed: {exc}") from None


def load_plan(text: str) -> Plan:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"saved plan is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError("saved plan is not a JSON object")
    return Plan.from_dict(data)


def _ranks(waves: Sequence[Sequence[str]]) -> dict[str, int]:
    return {name: i for i, wave in enumerate(waves) for name in wave}


def _delete_rank(obj: LiveObject, ranks: dict[str, int], live_deps: dict[str, tuple[str, ...]],
                 seen: dict[str, int]) -> int:
    """Dependency depth of a deleted object's workload: the spec's wave when it is still declared,
    else derived from the depends_on recorded on the live objects (a cycle counts as depth 0)."""
    name = obj.workload
    if name is None:
        return -1

    def depth(w: str, path: frozenset[str]) -> int:
        if w in ranks:
            return ranks[w]
        if w in seen:
            return seen[w]
        if w in path:
            return 0
        deps = [depth(d, path | {w}) for d in live_deps.get(w, ())]
        seen[w] = 1 + max(deps) if deps else 0
        return seen[w]

    return depth(name, frozenset())


def _decide(want: DesiredObject, have: LiveObject | None) -> tuple[ActionKind, str, tuple[Change, ...], str]:
    """The action kind, its reason, the changes, and why it is refused ("" when it is not)."""
    secrets = want.secret_paths | (have.secret_paths if have else frozenset())
    if have is None:
        return "create", "new in spec", creation_changes(want.state, secrets), ""
    target = want.state if have.target_state is None else have.target_state
    changes = attribute(diff_states(have.state, target, secrets), have.writers)
    if have.must_replace:
        return "replace", f"{have.must_replace}: {summarize(changes)}", changes, want.replace_refusal
    if changes:
        replace = "*" in want.replace_on or any(c.path[0] in want.replace_on for c in changes if c.path)
        if replace:
            return "replace", summarize(changes), changes, want.replace_refusal
        return "update", summarize(changes), changes, ""
    if want.should_run and have.running is False:
        return "restart", f"not running ({have.status or 'stopped'})", (), ""
    return "noop", "unchanged", (), ""


Rank = tuple[int, int]
_BEFORE, _WAVES, _AFTER, _DELETES, _FINAL = range(5)


def _apply_rank(want: DesiredObject, ranks: dict[str, int], last: int) -> Rank:
    if want.after_deletes:
        return (_FINAL, 0)
    if want.phase < 0:
        return (_BEFORE, want.phase)
    if want.phase > 0:
        return (_AFTER, want.phase)
    if want.workload is None:
        return (_BEFORE, 0)
    return (_WAVES, ranks.get(want.workload, last))


def make_plan(desired: Mapping[ObjectKey, DesiredObject], live: LiveState, waves: Sequence[Sequence[str]], *,
              project: str, env: str, spec_hash: str, targets: Iterable[str] = (), spec_file: str = "",
              warnings: Iterable[str] = ()) -> Plan:
    """The plan from desired objects, live objects (owned or clashing) and the workload waves."""
    clashes = sorted(k for k in desired if k in live and not live[k].owned)
    if clashes:
        raise NameClash(clashes, project, env)
    ranks = _ranks(waves)
    last = len(waves)
    live_deps = {o.workload: o.depends_on for o in live.values() if o.workload and o.depends_on}
    pending: list[tuple[Rank, ObjectKey, ActionKind, str, tuple[Change, ...], str | None, str | None,
                        str | None, str, str | None]] = []
    for key, want in desired.items():
        have = live.get(key)
        kind, reason, changes, refused = _decide(want, have)
        pending.append((_apply_rank(want, ranks, last), key, kind, reason, changes,
                        fingerprint(have) if have else None, desired_hash(want), want.workload, refused,
                        have.version if have else None))
    seen: dict[str, int] = {}
    for key, have in live.items():
        if key in desired or not have.owned:
            continue  # objects that are not ours and not in the way are none of our business
        # deepest dependency first; shared objects (rank -1) after every workload
        rank = (_DELETES, -_delete_rank(have, ranks, live_deps, seen))
        if have.keep:
            pending.append((rank, key, "keep", have.keep, (), fingerprint(have), None, have.workload, "",
                            have.version))
        else:
            pending.append((rank, key, "delete", "not in spec: prune", (), fingerprint(have), None, have.workload,
                            "", have.version))
    number = {r: i for i, r in enumerate(sorted({p[0] for p in pending}))}
    actions = sorted((Action(kind, key, number[rank], reason, changes, fp, dh, workload, refused, version)
                      for rank, key, kind, reason, changes, fp, dh, workload, refused, version in pending),
                     key=lambda a: (a.wave, a.key))
    updates = plan_updates(actions, desired, live)
    actions = [dataclasses.replace(a, update=updates[a.key]) if a.key in updates else a for a in actions]
    all_targets = set(targets) | {k.target for k in desired} | {k.target for k in live}
    return Plan(project, env, spec_hash, tuple(sorted(all_targets)), tuple(actions), spec_file, tuple(warnings))


def check_matches(plan: Plan, *, env: str, spec_hash: str, project: str | None = None) -> None:
    """Refuse a plan made for another environment, project or spec."""
    problems = []
    if project is not None and plan.project != project:
        problems.append(f"it was made for project `{plan.project}`, not `{project}`")
    if plan.env != env:
        problems.append(f"it was made for environment `{plan.env}`, not `{env}`")
    if plan.spec_hash != spec_hash:
        problems.append(f"it was made from spec {plan.spec_hash}, but the spec is now {spec_hash}")
    if problems:
        raise StalePlan("refusing the saved plan: " + "; ".join(problems) + ". Run `hxpc plan` again.")


def _what_changed(action: Action, now: LiveObject, want: DesiredObject | None) -> str:
    if not now.owned:
        return "it no longer carries hxpc's ownership labels for this project and environment"
    if want is None:
        return f"changed since the plan was made (fingerprint {action.fingerprint} -> {fingerprint(now)})"
    planned = {c.path: c for c in action.changes}
    target = want.state if now.target_state is None else now.target_state
    current = {c.path: c for c in diff_states(now.state, target, want.secret_paths | now.secret_paths)}
    notes = []
    for path in sorted(set(planned) | set(current), key=lambda p: [str(x) for x in p]):
        before, after = planned.get(path), current.get(path)
        where = format_path(path)
        if after is None:
            notes.append(f"{where} now matches the spec")
        elif before is None:
            notes.append(f"{where} is now {short(after.old)}" if after.op != "add" else f"{where} was removed")
        elif before.old != after.old:
            notes.append(f"{where} was {short(before.old)}, now {short(after.old)}")
    if not notes:
        if now.target_state is not None and action.version != now.version:
            # a live system that renders objects itself also bumps their version for its own writes (status)
            return f"changed since the plan was made (version {action.version} -> {now.version})"
        return "recreated outside hxpc (same settings, new identity)"
    return "changed since the plan was made: " + ", ".join(notes)


def check_fresh(plan: Plan, live: LiveState, desired: Mapping[ObjectKey, DesiredObject]) -> None:
    """Refuse the plan when an object it touches changed since it was planned (names each one)."""
    problems: list[str] = []
    for action in plan.touched:
        now = live.get(action.key)
        want = desired.get(action.key)
        if action.kind != "delete":
            if want is None:
                problems.append(f"{action.key}: no longer in the spec's output")
                continue
            if desired_hash(want) != action.desired_hash:
                problems.append(f"{action.key}: the spec's desired state differs from the plan's")
                continue
        if action.fingerprint is None:
            if now is not None:
                problems.append(f"{action.key}: now exists; it was created outside this plan")
        elif now is None:
            problems.append(f"{action.key}: no longer exists; it was removed outside this plan")
        elif fingerprint(now) != action.fingerprint:
            problems.append(f"{action.key}: {_what_changed(action, now, want)}")
    if problems:
        raise StalePlan("refusing the saved plan; the live system changed since it was made:\n"
                        + "\n".join(f"  {p}" for p in problems) + "\nRun `hxpc plan` again.")
