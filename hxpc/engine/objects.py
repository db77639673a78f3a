"""The nouns every backend and the engine share: object keys, desired and live objects, changes.

An `ObjectKey` names one live object (target, scope such as a host, namespace
or Docker project, kind, name). A backend describes what should exist as
`DesiredObject`s and what does exist as `LiveObject`s whose `state` dicts have
the same normalized shape, so that equal dicts mean "nothing to do". State
never holds a secret's value (only references); `secret_paths` additionally
marks paths whose values are shown as `(sensitive)` in every change, plan and
rendering, so a backend that reads a value back cannot leak it. The live
`fingerprint` is a hash of the redacted state and the object's identity: it is
what a saved plan was made against.

A backend whose live system can say more than "equal or not" fills in the
optional fields: a desired object's `phase` (its place before or after the
workload waves), a live object's `target_state` (what applying the desired
object would make of it, as the live system computed it: a server-side dry
run), `must_replace` (the live system refuses an in-place change, and why),
`keep` (an owned object the spec no longer has that is kept rather than
pruned, and why) and `writers` (who set which field outside hxpc).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SENSITIVE = "(sensitive)"

PathPart = str | int
FieldPath = tuple[PathPart, ...]
ChangeOp = Literal["add", "remove", "change"]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True, order=True)
class ObjectKey:
    """One live object: `target:scope/kind/name`, e.g. `compose:hxp-prod/container/api-1`."""

    target: str
    scope: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.target}:{self.scope}/{self.kind}/{self.name}"

    def to_dict(self) -> dict[str, str]:
        return {"target": self.target, "scope": self.scope, "kind": self.kind, "name": self.name}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectKey:
        return cls(str(data["target"]), str(data["scope"]), str(data["kind"]), str(data["name"]))


@dataclass(frozen=True)
class Gate:
    """How long the health gate waits for an object after it changed, and how often it probes."""

    budget_s: float
    interval_s: float = 2.0


@dataclass(frozen=True)
class Rollout:
    """The replicas an object runs of its workload, so that a change replaces them a few at a time (see
    hxpc.engine.rollout): `replicas` are their names (a container: itself; a systemd template on a host: its
    instances), `max_unavailable` the workload's `update.max_unavailable`, and `exclusive` why a new replica
    cannot start beside its old self (a fixed host port, GPUs, a unit name), "" when it can. `own` maps a
    replica to the parts of the state that only it reads (a systemd instance's drop-in): a change there
    replaces that replica alone, a change anywhere else every replica, except under `inert` paths, which
    replace none (the list of enabled instances)."""

    replicas: tuple[str, ...]
    max_unavailable: int = 1
    exclusive: str = ""
    own: Mapping[str, tuple[FieldPath, ...]] = field(default_factory=dict)
    inert: tuple[FieldPath, ...] = ()


@dataclass(frozen=True)
class DesiredObject:
    """What should exist. `workload` is the spec service or model it belongs to (None: shared,
    e.g. a network), which places it in a wave. `replace_on` lists top-level state keys whose
    change needs the object recreated rather than updated in place (`"*"`: any change).
    `extra` carries what apply needs but the diff ignores (names, labels, probes, secret references): a
    frozen dataclass of the backend's own, which the backend narrows by type, never a dict read by key.

    `phase` places the object relative to the workload waves: negative phases run before every wave (lowest
    first, whatever the workload), 0 runs in its workload's wave (or before every wave when it has none),
    positive phases after every wave (lowest first). `after_deletes` runs it after every delete (a record of
    what the apply leaves, written only once the prune it describes succeeded). `replace_refusal`, when set,
    refuses a replace of this object and says how to allow it (e.g. "pass --allow-replace")."""

    key: ObjectKey
    state: Mapping[str, Any]
    workload: str | None = None
    secret_paths: frozenset[FieldPath] = frozenset()
    replace_on: tuple[str, ...] = ()
    gate: Gate | None = None
    should_run: bool = True
    extra: object = None
    phase: int = 0
    after_deletes: bool = False
    replace_refusal: str = ""
    rollout: Rollout | None = None


@dataclass(frozen=True)
class LiveObject:
    """What exists. Only `owned` objects (carrying this project's and environment's ownership
    labels) may be changed or deleted. `version` is the live instance's identity (a container
    id): part of the fingerprint, not of the diff. `running` is None where it does not apply. `serving`
    names the replicas of a multi-replica object that run now (None: as `running` says, for every replica).

    `target_state`, when set, is what the live system says applying the desired object would make of this
    one (same shape as `state`): the plan diffs `state` against it instead of the desired state, so defaults
    and fields that others own compare equal. `must_replace` says why the live system refuses to change it
    in place. `keep` says why an owned object the spec no longer has is kept instead of pruned (and how to
    allow the delete). `writers` maps field paths to whoever last set them outside hxpc, for the plan to
    name them."""

    key: ObjectKey
    state: Mapping[str, Any]
    owned: bool = True
    workload: str | None = None
    depends_on: tuple[str, ...] = ()
    secret_paths: frozenset[FieldPath] = frozenset()
    version: str | None = None
    running: bool | None = None
    status: str = ""
    target_state: Mapping[str, Any] | None = None
    must_replace: str = ""
    keep: str = ""
    writers: Mapping[FieldPath, str] = field(default_factory=dict)
    serving: frozenset[str] | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self)


LiveState = Mapping[ObjectKey, LiveObject]
RawState = Any  # whatever a backend's read_raw returns; only its own parse reads it


@dataclass(frozen=True)
class Change:
    """One field-level difference between live (`old`) and desired (`new`), already redacted; `by` names who
    set the live value outside hxpc, when the live system records it (a Kubernetes field manager)."""

    op: ChangeOp
    path: FieldPath
    old: Any = None
    new: Any = None
    by: str = ""

    @property
    def where(self) -> str:
        return format_path(self.path)

    def to_dict(self) -> dict[str, Any]:
        out = {"op": self.op, "path": list(self.path), "old": self.old, "new": self.new}
        if self.by:
            out["by"] = self.by
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Change:
        op = data["op"]
        if op not in ("add", "remove", "change"):
            raise ValueError(f"unknown change op {op!r}")
        return cls(op, tuple(data["path"]), data.get("old"), data.get("new"), str(data.get("by") or ""))


def format_path(path: FieldPath) -> str:
    """`env.LOG_LEVEL`, `args[2]`, `labels["com.docker.compose.project"]`."""
    out = ""
    for i, part in enumerate(path):
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.match(part):
            out += part if i == 0 else f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(root)"


def is_secret(path: FieldPath, secret_paths: Iterable[FieldPath]) -> bool:
    return any(path[: len(s)] == s for s in secret_paths)


def redact(value: Any, secret_paths: Iterable[FieldPath], at: FieldPath = ()) -> Any:
    """A copy of `value` (found at `at`) with every secret path inside it replaced by SENSITIVE."""
    secrets = [s for s in secret_paths]
    if not secrets:
        return value
    if is_secret(at, secrets):
        return SENSITIVE
    inner = [s[len(at):] for s in secrets if len(s) > len(at) and s[: len(at)] == at]
    if not inner:
        return value
    out = copy.deepcopy(value)
    for rel in inner:
        _replace(out, rel)
    return out


def _replace(node: Any, rel: FieldPath) -> None:
    for part in rel[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    last = rel[-1]
    in_dict = isinstance(node, dict) and last in node
    in_list = isinstance(node, list) and isinstance(last, int) and -len(node) <= last < len(node)
    if in_dict or in_list:
        node[last] = SENSITIVE


def state_hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(live: LiveObject) -> str:
    """Hash of the redacted state, ownership and identity: a secret's value never enters a plan,
    not even hashed, so a secret-only change is not detected here (it is resolved at apply)."""
    return state_hash({"state": redact(dict(live.state), live.secret_paths), "owned": live.owned,
                       "version": live.version})


def desired_hash(obj: DesiredObject) -> str:
    return state_hash(redact(dict(obj.state), obj.secret_paths))
