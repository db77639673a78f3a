"""The rules a spec field carries in `Annotated`, readable without importing pydantic.

`Bounds` (numeric bounds, lengths, a pattern) and `Check` (a function that
parses or checks a value, before or after its type is checked) are plain
objects (`Describe` only adds a description to the JSON Schema). pydantic
reads them through `__get_pydantic_core_schema__`, which builds the same
core-schema nodes that `Field(ge=...)` or `AfterValidator` would; the quick
validator (`quickcheck.py`) reads their attributes. One definition, two
readers: that is what keeps the two validators in step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NoReturn


def file_keys(cls: type[Any]) -> dict[str, str]:
    """Each field's key in the file -> its attribute name, by the class's `alias_generator` as pydantic reads it."""
    key_of = getattr(cls, "__pydantic_config__", {}).get("alias_generator") or (lambda name: name)
    return {key_of(f.name): f.name for f in dataclasses.fields(cls) if f.init}


def reject(kind: str, template: str, context: Mapping[str, Any] | None = None) -> NoReturn:
    """Fail a field check with an error type of our own (`hx_<kind>`), which validate.py maps to a code."""
    # imported here, not at the top: a valid spec never gets here, and pydantic-core costs ~60 ms to import
    from pydantic_core import PydanticCustomError

    raise PydanticCustomError(f"hx_{kind}", template, dict(context) if context else None)


class Bounds:
    """Bounds on a number (`ge`, `gt`, `le`, `lt`), a length (`min_length`) or a text `pattern`."""

    __slots__ = ("constraints",)

    def __init__(self, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
                 lt: float | None = None, min_length: int | None = None, pattern: str | None = None):
        given = {"ge": ge, "gt": gt, "le": le, "lt": lt, "min_length": min_length, "pattern": pattern}
        self.constraints = {key: value for key, value in given.items() if value is not None}

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        # the keys are the core schema's own constraint keys, so pydantic checks them natively and
        # its JSON Schema shows them as minimum/maximum/minItems/pattern
        schema = dict(handler(source))
        if schema["type"] not in ("int", "float", "str", "list"):
            raise TypeError(f"Bounds apply to int, float, str and list, not {schema['type']}")
        return {**schema, **self.constraints}


class Check:
    """A function that parses a value `before` its type is checked (`10s` -> 10000) or checks it after."""

    __slots__ = ("before", "function", "json_schema")

    def __init__(self, function: Callable[[Any], Any], *, before: bool = False,
                 json_schema: dict[str, Any] | None = None):
        self.function = function
        self.before = before
        self.json_schema = json_schema

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        return {"type": "function-before" if self.before else "function-after",
                "function": {"type": "no-info", "function": self.function}, "schema": handler(source)}

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Callable[[Any], Any]) -> Any:
        # what the file may say (`10s`), which is not the type the value becomes (an int of milliseconds)
        return dict(self.json_schema) if self.json_schema is not None else handler(core_schema)


class Describe:
    """A field's description where no attribute docstring can hold it: fields of a class built at run time
    (the spec's `targets:`, one field per registered target). Only the JSON Schema reads it."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Callable[[Any], Any]) -> Any:
        return {**handler(core_schema), "description": self.text}
