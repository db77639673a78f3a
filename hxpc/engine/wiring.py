"""Building the backends that apply an environment's targets, as the two registries say.

The target registry (`hxpc.compiler.targets`) names the backend that applies
each target; the backend registry (`hxpc.engine.backends`) builds it with its
own options from the command line. A deploying target without a backend is
planned around: asking for it is a clear error, and an environment that has it
alongside others plans the others and says so. Monitoring targets are files
applied with the targets they watch, never on their own. Backend packages are
imported only when used, so planning one target does not load another's
client library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hxpc.compiler import targets
from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import spec_hash, targets_of
from hxpc.compiler.pipeline import Resolved
from hxpc.engine import backends
from hxpc.engine.backend import Backend
from hxpc.errors import UsageError


@dataclass
class Wiring:
    """The resolved environment, its identity, and a built backend per applied target."""

    resolved: Resolved
    meta: Meta
    backends: dict[str, Backend] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)   # deploying targets with no apply backend


def _not_applied(name: str) -> str:
    if targets.entry(name).deploys:
        return "its apply backend is not implemented yet"
    return "it is monitoring, applied as files with the targets it watches"


def build_backends(resolved: Resolved, spec_name: str, only: Iterable[str] = (),
                   options: Mapping[str, Any] | None = None) -> Wiring:
    """Backends for the targets of `resolved` (or only those named), built with the command line's options."""
    stack = resolved.stack
    compiled = targets_of(stack)
    applied = [t for t in compiled if targets.entry(t).backend is not None]
    wanted = list(only)
    for target in wanted:
        if target not in compiled:
            raise UsageError(f"environment `{stack.env}` has no `{target}` target "
                             f"(it compiles to: {', '.join(compiled) or 'nothing'})")
        if target not in applied:
            raise UsageError(f"cannot plan `{target}`: {_not_applied(target)}")
    chosen = [t for t in applied if not wanted or t in wanted]
    if not chosen:
        able = ", ".join(e.name for e in targets.REGISTRY if e.backend is not None)
        raise UsageError(f"environment `{stack.env}` has no target that hxpc can apply yet "
                         f"(it compiles to: {', '.join(compiled) or 'nothing'}; apply supports {able})")
    wiring = Wiring(resolved, Meta(stack.project, stack.env, spec_name, spec_hash(resolved)))
    if not wanted:
        wiring.skipped = [t for t in compiled if t not in applied and targets.entry(t).deploys]
    for target in chosen:
        name = targets.entry(target).backend
        assert name is not None
        package = backends.package(name)
        wiring.backends[target] = package.build(stack, wiring.meta, backends.options_for(package, options or {}))
    return wiring
