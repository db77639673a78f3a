"""Server-side apply's field ownership (`metadata.managedFields`), read purely: who set which field.

Every manager's entry holds a FieldsV1 tree: `f:<name>` a field, `k:<json>` the
element of an associative list with those key fields, `v:<json>` a set
element, `i:<n>` a list index, `.` the node itself, and `{}` a leaf. From it
this module answers three questions: which paths a manager set, in the shape
of the plan's field paths (a list counts as a whole, as the diff reports it),
so a drifted field can be attributed to the manager that changed it; a digest
of what hxpc owns, which matches the one recorded at apply time while nobody
took or removed any of hxpc's fields (then a re-plan needs no dry run); and
the part of a live object hxpc applied (`applied_part`), which rollback
re-applies, so that fields others own are never claimed by it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from hxpc.engine.objects import FieldPath

FIELD_MANAGER = "hxpc"
# managers that only write an object's status: their fields are never part of what the spec says
_STATUS = "status"


def entries(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((obj.get("metadata") or {}).get("managedFields") or [])


def own_entry(obj: Mapping[str, Any], manager: str = FIELD_MANAGER) -> Mapping[str, Any] | None:
    """hxpc's server-side apply entry (operation Apply, no subresource), or None."""
    for entry in entries(obj):
        if entry.get("manager") == manager and entry.get("operation") == "Apply" and not entry.get("subresource"):
            return entry
    return None


def digest(fields: Mapping[str, Any] | None) -> str:
    """A short digest of a FieldsV1 tree ('' for none)."""
    if not fields:
        return ""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def own_digest(obj: Mapping[str, Any]) -> str:
    entry = own_entry(obj)
    return digest(entry.get("fieldsV1") if entry else None)


def paths(fields: Mapping[str, Any], at: FieldPath = ()) -> Iterator[FieldPath]:
    """Every path the tree sets, a list ending the path (its elements change with it, as in a plan)."""
    if not fields:
        yield at
        return
    for name, sub in fields.items():
        if name == ".":
            if len(fields) == 1:
                yield at  # the node alone; beside its fields, "." only says the node exists
        elif name.startswith("f:"):
            yield from paths(sub or {}, (*at, name[2:]))
        else:  # k:, v:, i: an element of the list at `at`
            yield at


def writers(obj: Mapping[str, Any], manager: str = FIELD_MANAGER) -> dict[FieldPath, str]:
    """Paths set by other managers (status writers excluded) -> their names, joined when several share one."""
    found: dict[FieldPath, set[str]] = {}
    for entry in entries(obj):
        who = str(entry.get("manager") or "")
        if who == manager or entry.get("subresource") == _STATUS or not who:
            continue
        for path in paths(entry.get("fieldsV1") or {}):
            if path and path[0] != "status":
                found.setdefault(path, set()).add(who)
    return {p: ", ".join(sorted(names)) for p, names in found.items()}


def _element(items: list[Any], key: str) -> tuple[int, Any] | None:
    kind, _, text = key.partition(":")
    if kind == "i":
        index = int(text)
        return (index, items[index]) if 0 <= index < len(items) else None
    wanted = json.loads(text)
    for i, item in enumerate(items):
        if kind == "v" and item == wanted:
            return i, item
        if kind == "k" and isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items()):
            return i, item
    return None


def _extract(value: Any, fields: Mapping[str, Any]) -> Any:
    if not fields or set(fields) == {"."}:
        return value  # a leaf: the whole value (an atomic list or map included)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for name, sub in fields.items():
            if name.startswith("f:") and name[2:] in value:
                out[name[2:]] = _extract(value[name[2:]], sub or {})
        return out
    if isinstance(value, list):
        picked: list[tuple[int, Any]] = []
        for name, sub in fields.items():
            if name == ".":
                continue
            found = _element(value, name)
            if found is None:
                continue
            index, item = found
            part = _extract(item, sub or {})
            if name.startswith("k:") and isinstance(part, dict):
                part = {**json.loads(name[2:]), **part}  # an element is addressed by its key fields
            picked.append((index, part))
        return [part for _, part in sorted(picked, key=lambda p: p[0])]
    return value


def applied_part(obj: Mapping[str, Any], manager: str = FIELD_MANAGER) -> dict[str, Any] | None:
    """The fields of `obj` that `manager` applied, as an apply configuration (None when it applied none)."""
    entry = own_entry(obj, manager)
    if entry is None:
        return None
    part = _extract(dict(obj), entry.get("fieldsV1") or {})
    meta = obj.get("metadata") or {}
    head = {"name": meta.get("name")} | ({"namespace": meta["namespace"]} if meta.get("namespace") else {})
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), **part,
            "metadata": {**head, **(part.get("metadata") or {})}}
