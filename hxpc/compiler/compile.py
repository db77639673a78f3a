"""compile_spec: sources and an environment in, a Bundle of artifacts out.

Which targets run: the spec's `targets` (systemd, compose, kubernetes) and,
when `monitoring` is set, `prometheus` and `grafana`. Target modules are
imported only when used, so compiling one target does not pay for the others.
Every target's HX4xx problems are collected before failing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from hxpc.compiler.bundle import Bundle, Meta, TargetError, canonical_json, emit_target
from hxpc.compiler.gcpause import no_cyclic_gc
from hxpc.compiler.model import ResolvedStack
from hxpc.compiler.pipeline import Resolved, resolve_env
from hxpc.diagnostics import Diagnostic, unique_sorted
from hxpc.errors import SpecError, UsageError
from hxpc.sources import Sources

ALL_TARGETS = ("systemd", "compose", "kubernetes", "prometheus", "grafana")


def targets_of(stack: ResolvedStack) -> list[str]:
    spec = stack.spec
    chosen = [t for t in ("systemd", "compose", "kubernetes") if getattr(spec.targets, t) is not None]
    if spec.monitoring is not None and chosen:
        chosen += ["prometheus", "grafana"]
    return chosen


def spec_hash(resolved: Resolved) -> str:
    return hashlib.sha256(canonical_json(resolved.merged.data).encode()).hexdigest()[:16]


def compile_env(resolved: Resolved, spec_name: str, only: Iterable[str] = ()) -> Bundle:
    stack = resolved.stack
    wanted = list(only)
    unknown = [t for t in wanted if t not in ALL_TARGETS]
    if unknown:
        raise UsageError(f"unknown target {', '.join(unknown)}; targets are {', '.join(ALL_TARGETS)}")
    chosen = [t for t in targets_of(stack) if not wanted or t in wanted]
    meta = Meta(stack.project, stack.env, spec_name, spec_hash(resolved))
    bundle = Bundle()
    problems: list[Diagnostic] = []
    for target in chosen:
        try:
            bundle.add(stack.env, target, emit_target(target, stack, meta))
        except TargetError as exc:
            problems.extend(exc.diagnostics)
    if problems:
        raise SpecError(unique_sorted(problems), resolved.texts)
    return bundle


def compile_spec(sources: Sources, envs: Iterable[str], only: Iterable[str] = (),
                 spec_name: str | None = None) -> Bundle:
    """Compile every environment in `envs`; raise one SpecError with every problem found."""
    bundle = Bundle()
    problems: list[Diagnostic] = []
    texts: dict[str, str] = {}
    name = spec_name or sources.spec_file
    for env in envs:
        try:
            with no_cyclic_gc():
                part = compile_env(resolve_env(sources, env), name, only)
        except SpecError as exc:
            problems.extend(exc.diagnostics)
            texts.update(exc.texts)
            continue
        bundle.files.update(part.files)
    if problems:
        raise SpecError(unique_sorted(problems), texts)
    return bundle
