"""A pure-Python validator for the spec's dataclasses that accepts only exactly-typed input.

Compiling a valid spec is the common case, and importing pydantic and
building its validator takes longer than compiling ten services. This
validator is built from the same annotations and field rules
(`fieldrules.Bounds`, `fieldrules.Check`) that pydantic reads, but it accepts
a value only when it already has the type the field wants (a YAML int for an
int, a str for a str, a mapping with known keys for a dataclass) and passes
every rule. Whatever it accepts, pydantic accepts too and turns into the same
objects. Anything else (a wrong type, an unknown or missing field, a failed
check, or a value pydantic would coerce, like the text "8" for an int) makes
it give up, and validate.py asks pydantic, which has the last word: the
coerced value or every error with its location.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Hashable
from typing import Any, cast

from hxpc.compiler.fieldrules import Bounds, Check, Describe, file_keys

Validate = Callable[[Any], Any]

# floats carry 53 bits; beyond that an int does not become the float pydantic would make of it
_EXACT_FLOAT_INT = 2**53


class _GiveUp(Exception):
    """The value is not exactly what the field wants; pydantic decides."""


def quick_validate(cls: type[Any], data: Any) -> Any | None:
    """`cls` built from `data` if the data is exactly typed and valid, else None (ask pydantic)."""
    try:
        return _validator(cast(Hashable, cls))(data)
    except Exception:  # noqa: BLE001 - any failure, including a rule's own error, means "ask pydantic"
        return None


def _give_up() -> typing.NoReturn:
    raise _GiveUp


@functools.cache
def _validator(annotation: Any) -> Validate:
    """The validator for one annotation; cached, so each dataclass is planned once per process."""
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return _dataclass(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _annotated(args[0], annotation.__metadata__)
    if origin in (typing.Union, types.UnionType):
        others = [a for a in args if a is not type(None)]
        if len(others) != 1 or len(args) != 2:
            raise TypeError(f"quickcheck handles X | None, not {annotation}")
        inner = _validator(others[0])
        return lambda value: None if value is None else inner(value)
    if origin is typing.Literal:
        if not all(type(a) is str for a in args):
            raise TypeError(f"quickcheck handles literals of text, not {annotation}")
        allowed = frozenset(args)
        return lambda value: value if type(value) is str and value in allowed else _give_up()
    if origin is list:
        return _list(_validator(args[0]))
    if origin is dict:
        return _dict(_validator(args[0]), _validator(args[1]))
    scalar = _SCALARS.get(annotation)
    if scalar is None:
        raise TypeError(f"quickcheck has no rule for {annotation!r}")
    return scalar


def _exact(kind: type) -> Validate:
    return lambda value: value if type(value) is kind else _give_up()


def _float(value: Any) -> float:
    # pydantic turns an int into a float; inf and nan are refused (allow_inf_nan=False)
    if type(value) is float and math.isfinite(value):
        return value
    if type(value) is int and abs(value) <= _EXACT_FLOAT_INT:
        return float(value)
    _give_up()


_SCALARS: dict[Any, Validate] = {
    str: _exact(str), int: _exact(int), bool: _exact(bool), float: _float, Any: lambda value: value,
}


def _list(item: Validate) -> Validate:
    def check(value: Any) -> list[Any]:
        if type(value) is not list:
            _give_up()
        return [item(v) for v in value]

    return check


def _dict(key: Validate, item: Validate) -> Validate:
    def check(value: Any) -> dict[Any, Any]:
        if type(value) is not dict:
            _give_up()
        return {key(k): item(v) for k, v in value.items()}

    return check


def _bounded(inner: Validate, bounds: Bounds) -> Validate:
    c: dict[str, Any] = bounds.constraints
    ge, gt, le, lt = c.get("ge"), c.get("gt"), c.get("le"), c.get("lt")
    min_length: int | None = c.get("min_length")
    pattern = re.compile(c["pattern"]) if "pattern" in c else None

    def check(value: Any) -> Any:
        value = inner(value)
        if ((ge is not None and not value >= ge) or (gt is not None and not value > gt)
                or (le is not None and not value <= le) or (lt is not None and not value < lt)
                or (min_length is not None and len(value) < min_length)):
            _give_up()
        # pydantic matches with Rust's regex, whose `$` does not match before a final newline
        if pattern is not None and ("\n" in value or not pattern.search(value)):
            _give_up()
        return value

    return check


def _annotated(base: Any, rules: tuple[Any, ...]) -> Validate:
    validate = _validator(base)
    for rule in rules:
        if isinstance(rule, Bounds):
            validate = _bounded(validate, rule)
        elif isinstance(rule, Check):
            validate = _checked(validate, rule)
        elif isinstance(rule, Describe):
            continue  # documentation only
        else:
            raise TypeError(f"quickcheck has no rule for {rule!r} in Annotated")
    return validate


def _checked(inner: Validate, rule: Check) -> Validate:
    function = rule.function
    if rule.before:
        return lambda value: inner(function(value))
    return lambda value: function(inner(value))


def _dataclass(cls: type[Any]) -> Validate:
    hints = typing.get_type_hints(cls, include_extras=True)
    by_name = getattr(cls, "__pydantic_config__", {}).get("validate_by_name", False)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    fields_by_key: dict[str, tuple[str, Validate]] = {}
    for key, name in file_keys(cls).items():
        validate = _validator(hints[name])
        fields_by_key[key] = (name, validate)
        if by_name:
            fields_by_key[name] = (name, validate)
    required = frozenset(f.name for f in fields
                         if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)

    def check(value: Any) -> Any:
        if type(value) is not dict:
            _give_up()
        given: dict[str, Any] = {}
        for key, item in value.items():
            known = fields_by_key.get(key)
            if known is None or known[0] in given:
                _give_up()
            given[known[0]] = known[1](item)
        if not required <= given.keys():
            _give_up()
        # the class's __init__ fills in the defaults and runs __post_init__, as pydantic does
        return cls(**given)

    return check
