"""compile_spec: sources and an environment in, a Bundle of artifacts out.

Which targets run: the deploying targets the spec's `targets` names and, when
`monitoring` is set, the monitoring ones (the target registry in
`hxpc.compiler.targets` says which is which). Every target's module is
imported only when used.
Every target's HX4xx problems are collected before failing; its warnings go
into the bundle, with their spans, for the command to print.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from hxpc.compiler import targets
from hxpc.compiler.bundle import Bundle, Meta, TargetError, canonical_json, emit_target, target_warnings
from hxpc.compiler.gcpause import no_cyclic_gc
from hxpc.compiler.model import ResolvedStack
from hxpc.compiler.pipeline import Resolved, resolve_env
from hxpc.diagnostics import Diagnostic, unique_sorted
from hxpc.errors import SpecError, UsageError
from hxpc.sources import Sources


def targets_of(stack: ResolvedStack) -> list[str]:
    return targets.compiled(stack.spec)


def spec_hash(resolved: Resolved) -> str:
    return hashlib.sha256(canonical_json(resolved.merged.data).encode()).hexdigest()[:16]


def compile_env(resolved: Resolved, spec_name: str, only: Iterable[str] = ()) -> Bundle:
    stack = resolved.stack
    wanted = list(only)
    unknown = [t for t in wanted if t not in targets.names()]
    if unknown:
        raise UsageError(f"unknown target {', '.join(unknown)}; targets are {', '.join(targets.names())}")
    chosen = [t for t in targets_of(stack) if not wanted or t in wanted]
    meta = Meta(stack.project, stack.env, spec_name, spec_hash(resolved))
    bundle = Bundle()
    problems: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    for target in chosen:
        try:
            bundle.add(stack.env, target, emit_target(target, stack, meta))
        except TargetError as exc:
            problems.extend(exc.diagnostics)
        warnings += [Diagnostic(p.code, p.message, resolved.merged.span(p.path, key=p.key), hint=p.hint,
                                severity="warning") for p in target_warnings(target, stack)]
    if problems:
        raise SpecError(unique_sorted(problems), resolved.texts)
    # the spec's own warnings (e.g. a KV cache within a margin of vLLM's limit) are reported by compile too
    bundle.warn(sorted([*resolved.warnings, *warnings], key=Diagnostic.sort_key), resolved.texts)
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
        bundle.warn(part.warnings, part.texts)
    if problems:
        raise SpecError(unique_sorted(problems), texts)
    return bundle
