"""Field-level differences between a live and a desired state, and the one-line reasons built from them.

`diff_states` runs DeepDiff over two normalized state dicts and turns its tree
into hxpc's own `Change`s: a change inside a list is reported as the whole
list changing (an inserted argument would otherwise show as a cascade of
shifted elements), changes are sorted by path, and every value under a secret
path is redacted before it leaves this module. `summarize` makes the human
reason ("image 2.3.1 -> 2.3.2, env.LOG_LEVEL INFO -> DEBUG").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hxpc.engine.objects import SENSITIVE, Change, ChangeOp, FieldPath, format_path, redact

_OPS: dict[str, ChangeOp] = {
    "values_changed": "change", "type_changes": "change",
    "dictionary_item_added": "add", "dictionary_item_removed": "remove",
    "iterable_item_added": "change", "iterable_item_removed": "change",
    "attribute_added": "add", "attribute_removed": "remove",
}
_MAX_VALUE = 48


def _get(data: Any, path: FieldPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _path_key(path: FieldPath) -> tuple[tuple[int, str], ...]:
    return tuple((0, f"{p:012d}") if isinstance(p, int) else (1, p) for p in path)


def diff_states(old: Mapping[str, Any], new: Mapping[str, Any],
                secret_paths: Iterable[FieldPath] = ()) -> tuple[Change, ...]:
    """Changes that turn `old` (live) into `new` (desired); empty when they are equal."""
    if old == new:
        return ()
    from deepdiff import DeepDiff  # ~0.5 s to import; only needed when something differs

    secrets = list(secret_paths)
    # threshold_to_diff_deeper=0: a mapping with many changed keys is still reported key by key (DeepDiff 8+
    # otherwise reports it changed as a whole above a third, which would hide what changed and who changed it)
    tree = DeepDiff(dict(old), dict(new), view="tree", verbose_level=2, threshold_to_diff_deeper=0)
    found: dict[FieldPath, Change] = {}
    for report, levels in tree.items():
        op = _OPS.get(report)
        if op is None:
            continue
        for level in levels:
            path: FieldPath = tuple(level.path(output_format="list"))
            cut = next((i for i, p in enumerate(path) if isinstance(p, int)), None)
            if cut is not None:  # inside a list: the list changed as a whole
                path, op = path[:cut], "change"
            if path in found:
                continue
            if op == "add":
                found[path] = Change("add", path, None, redact(_get(new, path), secrets, path))
            elif op == "remove":
                found[path] = Change("remove", path, redact(_get(old, path), secrets, path), None)
            else:
                found[path] = Change("change", path, redact(_get(old, path), secrets, path),
                                     redact(_get(new, path), secrets, path))
    # a secret whose value changed shows as changed, but both sides read (sensitive)
    return tuple(found[p] for p in sorted(found, key=_path_key))


def attribute(changes: Sequence[Change], writers: Mapping[FieldPath, str]) -> tuple[Change, ...]:
    """The changes with `by` set to whoever wrote the live value outside hxpc: the writers of the changed path,
    of a field inside it (a list changes as a whole) or, unless the value is new, of the field holding it."""
    if not writers:
        return tuple(changes)
    out = []
    for change in changes:
        path = change.path
        names = sorted({who for where, who in writers.items()
                        if where[: len(path)] == path or (change.op != "add" and path[: len(where)] == where)})
        out.append(Change(change.op, path, change.old, change.new, ", ".join(names)) if names else change)
    return tuple(out)


def creation_changes(new: Mapping[str, Any], secret_paths: Iterable[FieldPath] = ()) -> tuple[Change, ...]:
    """What a create sets: one `add` per top-level field."""
    secrets = list(secret_paths)
    return tuple(Change("add", (k,), None, redact(new[k], secrets, (k,))) for k in sorted(new))


def short(value: Any, limit: int = _MAX_VALUE) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    if isinstance(value, str) and (not value or any(c.isspace() for c in value)):
        text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _image_parts(ref: str) -> tuple[str, str] | None:
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon <= slash:
        return None
    return ref[:colon], ref[colon + 1:]


def describe(change: Change) -> str:
    where = change.where
    if change.op == "add":
        return f"{where} added"
    if change.op == "remove":
        return f"{where} removed" + (f" (added outside hxpc by {change.by})" if change.by else "")
    old, new = change.old, change.new
    if change.path and change.path[-1] == "image" and isinstance(old, str) and isinstance(new, str):
        a, b = _image_parts(old), _image_parts(new)
        if a and b and a[0] == b[0]:  # same repository: the tags say it all
            old, new = a[1], b[1]
    outside = f" (changed outside hxpc by {change.by})" if change.by else ""
    if old == SENSITIVE and new == SENSITIVE:
        return f"{where} changed (sensitive){outside}"
    return f"{where} {short(old)} -> {short(new)}{outside}"


def summarize(changes: Sequence[Change], most: int = 2) -> str:
    """The reason line: the first `most` changes, then how many more."""
    if not changes:
        return "unchanged"
    # what can be shown says more than "(sensitive)": put it first
    changes = sorted(changes, key=lambda c: c.old == SENSITIVE and c.new == SENSITIVE)
    text = ", ".join(describe(c) for c in changes[:most])
    rest = len(changes) - most
    return f"{text} and {rest} more" if rest > 0 else text


__all__ = ["attribute", "creation_changes", "describe", "diff_states", "format_path", "short", "summarize"]
