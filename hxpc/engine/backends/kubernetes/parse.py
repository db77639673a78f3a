"""The kubernetes backend's pure half: what one read of the cluster returned, as the plan's live objects.

A `Raw` read holds the objects listed per kind in the namespace, the
inventory, the server-side dry runs of the desired manifests (or their
refusals), and the live objects that stand where a desired object would go
without being hxpc's. `parse` turns it into `LiveObject`s:

- an object carrying hxpc's ownership labels is hxpc's; the spec no longer
  wanting it makes it a prune candidate only when the previous inventory
  names it (by uid when recorded) and it is not opted out; PersistentVolume-
  Claims and Namespaces are kept (never pruned) without `--allow-delete-data`;
- an object with a desired name that is not hxpc's is in the way (the plan
  refuses it) unless `--adopt` makes it hxpc's to change;
- the state compared is the live object's (`normalize.state_of`), the target
  state that of the dry run, so defaults and fields others own compare equal;
  a dry run the server refused because a field cannot change in place makes a
  replace; fields other managers set are named (`fields.writers`);
- the inventory's own state lists the hash each live object of it was
  applied with, leaving out what is kept or gone.

`unchanged_since_applied` says when a dry run is not needed at all: the live
object still carries the hash of the desired manifest, and hxpc still owns
exactly the fields it owned when the inventory recorded it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hxpc.engine.backends.kubernetes import fields, inventory, kstatus
from hxpc.engine.backends.kubernetes.desired import Manifest
from hxpc.engine.backends.kubernetes.normalize import (
    DEPENDS_ANNOTATION,
    HASH_ANNOTATION,
    NAME_LABEL,
    PRUNE_ANNOTATION,
    Obj,
    id_of,
    key_of,
    meta,
    owned_by,
    state_of,
    version_of,
)
from hxpc.engine.objects import DesiredObject, LiveObject, LiveState, ObjectKey

DATA_KINDS = frozenset({"PersistentVolumeClaim", "Namespace"})


@dataclass(frozen=True)
class DryRun:
    """The server's answer to a server-side apply dry run: what it would store, or why it refuses an
    in-place change (`refusal`; `result` is then what a new object would be)."""

    result: Obj | None = None
    refusal: str = ""


@dataclass
class Raw:
    objects: list[Obj] = field(default_factory=list)
    inventory: Obj | None = None
    dry_runs: dict[ObjectKey, DryRun] = field(default_factory=dict)
    in_the_way: dict[ObjectKey, Obj | None] = field(default_factory=dict)  # None: exists, not read
    nodes: list[Obj] = field(default_factory=list)
    pods: list[Obj] = field(default_factory=list)
    gpu_checked: bool = False
    warnings: list[str] = field(default_factory=list)
    full: bool = False   # a plan's read of everything hxpc owns (else apply's re-read of what it touches)


@dataclass(frozen=True)
class Policy:
    owner_labels: Mapping[str, str]
    allow_delete_data: bool = False
    adopt: bool = False


def _manifest(want: DesiredObject | None) -> Manifest | None:
    return want.extra if want is not None and isinstance(want.extra, Manifest) else None


def unchanged_since_applied(obj: Mapping[str, object], want: DesiredObject, entry: inventory.Entry | None) -> bool:
    manifest = _manifest(want)
    if manifest is None or entry is None or not entry.fields or manifest.inventory:
        return False
    m = meta(obj)
    annotations: Mapping[str, Any] = m.get("annotations") or {}
    hashed = annotations.get(HASH_ANNOTATION)
    return (entry.hash == manifest.hash == hashed and entry.uid == m.get("uid")
            and entry.fields == fields.own_digest(obj) and not m.get("deletionTimestamp"))


def _keep(obj: Mapping[str, object], policy: Policy) -> str:
    annotations: Mapping[str, Any] = meta(obj).get("annotations") or {}
    if annotations.get(PRUNE_ANNOTATION) == "false":
        return f'annotated {PRUNE_ANNOTATION}: "false"; delete it by hand if it is no longer needed'
    kind = obj.get("kind")
    if kind in DATA_KINDS and not policy.allow_delete_data:
        return f"a {kind} holds data: it is deleted only with --allow-delete-data"
    return ""


def _live(obj: Obj, want: DesiredObject | None, dry: DryRun | None, owned: bool) -> LiveObject:
    key = key_of(obj)
    m = meta(obj)
    state = state_of(obj)
    target = None
    refusal = ""
    if want is not None:
        if dry is not None and dry.result is not None:
            target = state_of(dry.result)
            refusal = dry.refusal
        else:
            target = state  # no dry run needed: applying it changes nothing
    depends = str((m.get("annotations") or {}).get(DEPENDS_ANNOTATION) or "")
    return LiveObject(key, state, owned=owned, workload=(m.get("labels") or {}).get(NAME_LABEL),
                      depends_on=tuple(d for d in depends.split(",") if d),
                      secret_paths=want.secret_paths if want is not None else frozenset({("data",)}),
                      version=version_of(obj), running=None, status=kstatus.compute(obj).describe(),
                      target_state=target, must_replace=refusal, writers=fields.writers(obj))


def parse(raw: Raw, wanted: Mapping[ObjectKey, DesiredObject], policy: Policy) -> LiveState:
    previous = inventory.decode(raw.inventory)
    live: dict[ObjectKey, LiveObject] = {}
    recorded: dict[str, str] = {}   # id -> the hash it was applied with, for live objects kept, not pruned
    inventory_key: ObjectKey | None = None
    desired_ids: set[str] = set()
    for key, wanted_object in wanted.items():
        manifest = _manifest(wanted_object)
        if manifest is not None and manifest.inventory:
            inventory_key = key
        elif manifest is not None:
            desired_ids.add(manifest.id)
    for obj in raw.objects:
        key = key_of(obj)
        if key == inventory_key:
            continue
        want = wanted.get(key)
        object_id = id_of(obj)
        if not owned_by(obj, policy.owner_labels):
            if want is not None:  # in the way: ours to change only when adopting
                live[key] = _live(obj, want, raw.dry_runs.get(key), policy.adopt)
            continue
        entry = previous.get(object_id)
        if want is None:
            uid = meta(obj).get("uid")
            if entry is None or (entry.uid and entry.uid != uid):
                continue  # carries our labels, but no inventory proves hxpc made it: never pruned
            keep = _keep(obj, policy)
            live[key] = dataclasses.replace(_live(obj, None, None, True), keep=keep)
            if keep:
                recorded[object_id] = entry.hash
        else:
            live[key] = _live(obj, want, raw.dry_runs.get(key), True)
    for key, standing in raw.in_the_way.items():
        if key in live:
            continue
        if standing is None:
            live[key] = LiveObject(key, {}, owned=False)
        else:
            live[key] = _live(standing, wanted.get(key), raw.dry_runs.get(key), policy.adopt)
    inv = raw.inventory
    if inventory_key is not None and inv is not None:
        # its state is what it records (so a saved plan's fingerprint holds whatever else apply re-reads); what
        # applying the desired inventory would leave is the desired objects plus the kept ones it carries over
        as_recorded = inventory.state(previous.values())
        target = as_recorded
        if raw.full:
            carried = {i: h for i, h in recorded.items() if i not in desired_ids}
            target = {"objects": dict(sorted({**carried, **wanted[inventory_key].state["objects"]}.items()))}
        live[inventory_key] = LiveObject(
            inventory_key, as_recorded, owned=owned_by(inv, policy.owner_labels), version=version_of(inv),
            status=f"{len(previous)} object(s) recorded", target_state=target)
    return live
