"""Which backend applies which target, and building them for a resolved environment.

`compose` is applied to a Docker Engine, `systemd` to the hosts of
`targets.systemd` over their transports. Kubernetes artifacts compile, but no
apply backend exists for them yet: asking for it is a clear error, and an
environment that has it alongside others plans the others and says so.
Backends are imported only when used, so planning one target does not load
the other's client library.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass

from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import spec_hash, targets_of
from hxpc.compiler.pipeline import Resolved
from hxpc.engine.backend import Backend
from hxpc.errors import UsageError

BACKENDS: dict[str, tuple[str, str]] = {
    "compose": ("hxpc.engine.backends.docker", "DockerBackend"),
    "systemd": ("hxpc.engine.backends.systemd", "SystemdBackend"),
}
NOT_APPLIED = {"kubernetes": "its apply backend is not implemented yet",
               "prometheus": "it is applied as files with the systemd or compose stack, or as objects by kubernetes",
               "grafana": "it is applied as files with the systemd or compose stack, or as objects by kubernetes"}


@dataclass
class Wiring:
    backends: dict[str, Backend]
    meta: Meta
    skipped: list[str]


def build_backends(resolved: Resolved, spec_name: str, only: Iterable[str] = (),
                   ssh_config: str | None = None) -> Wiring:
    stack = resolved.stack
    compiled = targets_of(stack)
    wanted = list(only)
    for target in wanted:
        if target not in compiled:
            raise UsageError(f"environment `{stack.env}` has no `{target}` target "
                             f"(it compiles to: {', '.join(compiled) or 'nothing'})")
        if target not in BACKENDS:
            raise UsageError(f"cannot plan `{target}`: {NOT_APPLIED.get(target, 'no apply backend')}")
    chosen = [t for t in compiled if t in BACKENDS and (not wanted or t in wanted)]
    skipped = [t for t in compiled if t not in BACKENDS and t == "kubernetes" and not wanted]
    if not chosen:
        raise UsageError(f"environment `{stack.env}` has no target that hxpc can apply yet "
                         f"(it compiles to: {', '.join(compiled) or 'nothing'}; apply supports compose and systemd)")
    meta = Meta(stack.project, stack.env, spec_name, spec_hash(resolved))
    backends: dict[str, Backend] = {}
    for target in chosen:
        module_name, class_name = BACKENDS[target]
        cls = getattr(importlib.import_module(module_name), class_name)
        backends[target] = cls(stack, meta, ssh_config=ssh_config) if target == "systemd" else cls(stack, meta)
    return Wiring(backends, meta, skipped)
