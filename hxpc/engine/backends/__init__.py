"""The backend registry: each live system hxpc applies to is one package here, registered in `BACKENDS`.

A backend package (`hxpc.engine.backends.<name>`) keeps its `__init__` light
and provides what `BackendPackage` says: `Options`, a frozen dataclass of the
command-line options it takes (each field declared with `option(...)`: its
flag, environment variable and help), and `build(stack, meta, options)`,
which imports the backend's client library only then and returns a `Backend`.
The target registry (`hxpc.compiler.targets`) says which backend applies
which target; the command line offers every backend's options on the commands
that reach live systems, and `hxpc.engine.wiring` builds the backends a stack
needs. Backends never import each other, and the engine's core never names
one (import-linter contracts in pyproject.toml); mypy checks every package
against `BackendPackage` (the `TYPE_CHECKING` block at the end).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from hxpc.compiler.bundle import Meta
    from hxpc.compiler.model import ResolvedStack
    from hxpc.engine.backend import Backend

OptionsT = TypeVar("OptionsT")
_OPTION = "hxpc_option"

BACKENDS: dict[str, str] = {
    "docker": "hxpc.engine.backends.docker",
    "kubernetes": "hxpc.engine.backends.kubernetes",
    "systemd": "hxpc.engine.backends.systemd",
}


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """How a backend option appears on the command line: a value (`--flag VALUE`), or with `switch` a boolean
    that is off unless given (`--flag`)."""

    flag: str
    help: str
    envvar: str | None = None
    switch: bool = False


def option(flag: str, help: str, envvar: str | None = None, switch: bool = False) -> Any:
    """A field of a backend's `Options`: None unless given on the command line (or by `envvar`); with `switch`,
    a boolean flag, False unless given."""
    return dataclasses.field(default=False if switch else None,
                             metadata={_OPTION: OptionSpec(flag, help, envvar, switch)})


class BackendPackage(Protocol[OptionsT]):
    """What a backend package provides (see the module docstring)."""

    Options: type[OptionsT]

    def build(self, stack: ResolvedStack, meta: Meta, options: OptionsT) -> Backend: ...


def package(name: str) -> BackendPackage[Any]:
    return cast("BackendPackage[Any]", importlib.import_module(BACKENDS[name]))


def declared_options() -> dict[str, OptionSpec]:
    """Every backend's options by field name; backends that take the same option share it."""
    found: dict[str, OptionSpec] = {}
    for name in sorted(BACKENDS):
        for f in dataclasses.fields(package(name).Options):
            spec = f.metadata.get(_OPTION)
            if spec is None:
                raise TypeError(f"{BACKENDS[name]}.Options.{f.name} is not declared with option()")
            if found.setdefault(f.name, spec) != spec:
                raise TypeError(f"backends declare option `{f.name}` differently")
    return found


def options_for(backend: BackendPackage[OptionsT], given: Mapping[str, Any]) -> OptionsT:
    """The backend's `Options` from the command line's values (by field name)."""
    declared = dataclasses.fields(cast("Any", backend.Options))  # a dataclass, as declared_options checks
    return backend.Options(**{f.name: given[f.name] for f in declared if given.get(f.name) is not None})


if TYPE_CHECKING:
    from hxpc.engine.backends import docker, kubernetes, systemd

    _docker: BackendPackage[docker.DockerOptions] = docker
    _kubernetes: BackendPackage[kubernetes.KubernetesOptions] = kubernetes
    _systemd: BackendPackage[systemd.SystemdOptions] = systemd
