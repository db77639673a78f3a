"""`hxpc explain`: the merged value at a path and every layer that set it.

A path is dotted (`services.api-gateway.replicas`; list items by index,
`services.api.depends_on.0`). A value no layer set, but that the spec model
fills with a default, is shown with its default and no layers.
"""

from __future__ import annotations

from typing import Any

from hxpc.compiler.load import KeyPath
from hxpc.compiler.merge import Merged
from hxpc.compiler.model import ResolvedStack
from hxpc.compiler.spec import pydantic_adapter
from hxpc.errors import UsageError

_MISSING = object()


def parse_path(text: str) -> KeyPath:
    parts: list[str | int] = []
    for part in text.replace("[", ".").replace("]", "").split("."):
        if part == "":
            continue
        parts.append(int(part) if part.isdigit() else part)
    return tuple(parts)


def _lookup(data: Any, path: KeyPath) -> Any:
    for part in path:
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if (isinstance(data, dict) and part in data) or in_list:
            data = data[part]
        else:
            return _MISSING
    return data


def explain(resolved: ResolvedStack, merged: Merged, text: str) -> dict[str, Any]:
    path = parse_path(text)
    value = _lookup(merged.data, path)
    layers = merged.provenance.get(path, [])
    if value is not _MISSING:
        return {
            "path": text, "env": resolved.env, "value": value, "default": False,
            "layers": [{"source": layer.source, "file": layer.value.file, "line": layer.value.line,
                        "col": layer.value.col} for layer in layers],
        }
    dumped = pydantic_adapter().dump_python(resolved.spec, mode="json", by_alias=True)
    value = _lookup(dumped, path)
    if value is _MISSING:
        raise UsageError(f"`{text}` is not set in environment `{resolved.env}` and has no default "
                         "(a path looks like `services.<name>.replicas`)")
    return {"path": text, "env": resolved.env, "value": value, "default": True, "layers": []}
