"""Validation: the quick validator, else pydantic's errors mapped onto spans; then the semantic checks.

An exactly-typed valid tree is validated by quickcheck.py without importing
pydantic; anything it is unsure of goes to pydantic, whose result is final.
Pydantic reports a location as a path of field names; the merged tree's
provenance turns that path into the span of the layer that set the value, so
an error in a value from `hub.prod.yaml` points into that file. Unknown fields
get a "did you mean" from the fields of the model at that place.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import TYPE_CHECKING, Any

from hxpc.compiler.architecture import ModelShapes
from hxpc.compiler.checks import semantic_checks
from hxpc.compiler.fieldrules import file_keys
from hxpc.compiler.load import KeyPath
from hxpc.compiler.merge import Merged
from hxpc.compiler.quickcheck import quick_validate
from hxpc.compiler.spec import Stack, pydantic_adapter
from hxpc.diagnostics import Diagnostic

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

# dataclasses report an unknown field as an unexpected keyword argument
_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")
_CODE_BY_TYPE = {
    "extra_forbidden": "HX201",
    "unexpected_keyword_argument": "HX201",
    "missing": "HX207",
    "missing_argument": "HX207",
    "hx_duration": "HX203",
    "hx_size": "HX204",
    "hx_cpu": "HX205",
    "hx_name": "HX206",
    "hx_combination": "HX210",
    "hx_range": "HX208",
    "literal_error": "HX209",
    "enum": "HX209",
}
_RANGE_TYPES = {"greater_than", "greater_than_equal", "less_than", "less_than_equal",
                "too_short", "too_long", "finite_number"}


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional so that only the structural type is left."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _is_spec_class(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _model_at(path: KeyPath) -> type[Any] | None:
    """The spec class that validates the mapping at `path`, if any."""
    current: Any = Stack
    for part in path:
        current = _unwrap(current)
        if _is_spec_class(current):
            name = file_keys(current).get(str(part), part)
            current = typing.get_type_hints(current, include_extras=True).get(str(name))
            if current is None:
                return None
        elif typing.get_origin(current) in (dict, list):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if _is_spec_class(current) else None


def _where(path: KeyPath) -> str:
    return ".".join(str(p) for p in path) or "the top level"


def _diagnostic(err: ErrorDetails, merged: Merged) -> Diagnostic:
    loc = tuple(err["loc"])
    is_key = bool(loc) and loc[-1] == "[key]"
    path: KeyPath = tuple(p for p in loc if p != "[key]")
    kind = err["type"]
    code = _CODE_BY_TYPE.get(kind, "HX208" if kind in _RANGE_TYPES else "HX202")
    hint: str | None = None
    if kind in _UNKNOWN:
        name = str(path[-1])
        model = _model_at(path[:-1])
        fields = list(file_keys(model)) if model else []
        close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
        hint = f"did you mean `{close[0]}`?" if close else (
            f"allowed here: {', '.join(f'`{f}`' for f in fields)}" if fields else None)
        return Diagnostic(code, f"unknown field `{name}` in {_where(path[:-1])}",
                          merged.span(path, key=True), hint=hint)
    if kind in ("missing", "missing_argument"):
        return Diagnostic(code, f"{_where(path[:-1])} is missing the required field `{path[-1]}`",
                          merged.span(path[:-1], key=True), hint=f"add `{path[-1]}:`")
    if kind == "literal_error":
        expected = (err.get("ctx") or {}).get("expected", "")
        value = err.get("input")
        options = [o.strip().strip("'") for o in str(expected).replace(" or ", ", ").split(",")]
        close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
        hint = f"did you mean `{close[0]}`?" if close else f"use one of: {expected}"
        return Diagnostic(code, f"`{value}` is not allowed for {_where(path)}", merged.span(path), hint=hint)
    message = err["msg"]
    if code == "HX202":
        message = f"{_where(path)}: {message[0].lower()}{message[1:]}"
        if isinstance(err.get("input"), (int, float)) and "string" in message:
            hint = "quote the value to make it text, e.g. \"8080\""
    elif code in ("HX203", "HX204", "HX205", "HX208", "HX210"):
        message = f"{_where(path)}: {message}"
    return Diagnostic(code, message, merged.span(path, key=is_key), hint=hint)


def validate(merged: Merged, shapes: ModelShapes | None = None) -> tuple[Stack | None, list[Diagnostic]]:
    """Schema first; the semantic checks only run on a schema-valid stack. Warnings come back among the problems."""
    stack = quick_validate(Stack, merged.data)
    if stack is None:
        from pydantic import ValidationError

        try:
            stack = pydantic_adapter().validate_python(merged.data)
        except ValidationError as exc:
            return None, [_diagnostic(e, merged) for e in exc.errors(include_url=False)]
    return stack, list(semantic_checks(stack, merged, shapes or ModelShapes()))
