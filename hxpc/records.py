"""`record`: a dataclass whose methods are shared by every class instead of generated for each.

@dataclass writes `__init__`, `__repr__`, `__eq__`, `__hash__` and (frozen)
`__setattr__`/`__delattr__` as Python source for every class and compiles it
when the module is imported. Counted with callgrind, that is ~3.7 M
instructions per frozen class; for the classes a compile defines it was a
fifth of compiling ten services, where start-up is most of the time.
`record` keeps @dataclass's handling of fields, so `dataclasses.fields`,
`dataclasses.replace`, pydantic and mypy (through `dataclass_transform`) see
an ordinary dataclass, and gives each class the same methods below, which
behave as the generated ones do: construction by position or keyword with
defaults and default factories, then `__post_init__`; equality and hashing
by the compared fields; no assignment to a frozen record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

_T = TypeVar("_T")
_MISSING = dataclasses.MISSING


def _init(self: Any, *args: Any, **given: Any) -> None:
    cls = type(self)
    if args:
        positional = cls.__record_positional__
        if len(args) > len(positional):
            raise TypeError(f"{cls.__name__}() takes {len(positional)} positional arguments "
                            f"but {len(args)} were given")
        for name, value in zip(positional, args, strict=False):
            if name in given:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
            given[name] = value
    values = {}
    take = given.pop
    for name, default, factory, init in cls.__record_plan__:
        value = take(name, _MISSING) if init else _MISSING
        if value is _MISSING:
            if factory is not _MISSING:
                value = factory()
            elif default is not _MISSING:
                value = default
            elif init:
                raise TypeError(f"{cls.__name__}() is missing the keyword argument {name!r}")
            else:
                continue
        values[name] = value
    if given:
        raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {next(iter(given))!r}")
    # the instance dict directly: the fields of a frozen record cannot be set through setattr
    self.__dict__.update(values)
    post_init = getattr(self, "__post_init__", None)
    if post_init is not None:
        post_init()


def _compared(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name in type(self).__record_compared__)


def _eq(self: Any, other: object) -> object:  # bool, or NotImplemented for another class
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _compared(self) == _compared(other)


def _hash(self: Any) -> int:
    return hash(_compared(self))


def _repr(self: Any) -> str:
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in type(self).__record_fields__ if f.repr)
    return f"{type(self).__qualname__}({shown})"


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


@overload
def record(cls: type[_T], /) -> type[_T]: ...


@overload
def record(*, frozen: bool = True, kw_only: bool = False) -> Callable[[type[_T]], type[_T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def record(cls: type[_T] | None = None, /, *, frozen: bool = True,
           kw_only: bool = False) -> type[_T] | Callable[[type[_T]], type[_T]]:
    """Make `cls` a dataclass (frozen unless `frozen=False`) with the shared methods of this module."""

    def make(cls: type[_T]) -> type[_T]:
        cls = dataclasses.dataclass(init=False, repr=False, eq=False, kw_only=kw_only)(cls)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        methods: dict[str, Any] = {
            "__record_fields__": fields,
            "__record_plan__": tuple((f.name, f.default, f.default_factory, f.init) for f in fields),
            "__record_positional__": tuple(f.name for f in fields if f.init and not f.kw_only),
            "__record_compared__": tuple(f.name for f in fields if f.compare),
            "__init__": _init, "__repr__": _repr, "__eq__": _eq,
            # as @dataclass: frozen records hash by value; mutable ones that compare by value do not hash
            "__hash__": _hash if frozen else None,
        }
        if frozen:
            methods |= {"__setattr__": _frozen_setattr, "__delattr__": _frozen_delattr}
        for name, value in methods.items():
            setattr(cls, name, value)
        return cls

    return make if cls is None else make(cls)
