"""The front half of the compiler: sources -> documents -> merged tree -> resolved stack.

`resolve_env(sources, env)` reads the spec and the environment's overlay file,
checks `apiVersion`, merges, validates and resolves, raising one `SpecError`
with every problem it found. `environments(sources)` names the environments a
spec declares (inline or as overlay files).
"""

from __future__ import annotations

from dataclasses import field

from hxpc.compiler.architecture import ModelShapes
from hxpc.compiler.gcpause import no_cyclic_gc
from hxpc.compiler.load import Document, LoadFailed, load_document
from hxpc.compiler.merge import Merged, MergeFailed, environments_in, merge
from hxpc.compiler.model import ResolvedStack, resolve
from hxpc.compiler.spec import API_VERSION
from hxpc.compiler.validate import validate
from hxpc.diagnostics import Diagnostic, suggest, unique_sorted
from hxpc.errors import SpecError
from hxpc.limits import MAX_ENVIRONMENTS
from hxpc.records import record
from hxpc.sources import Sources

DEFAULT_ENV = "default"


@record(frozen=False)
class Loaded:
    base: Document
    overlays: dict[str, str]
    texts: dict[str, str]


def load_base(sources: Sources) -> Loaded:
    with no_cyclic_gc():
        return _load_base(sources)


def _load_base(sources: Sources) -> Loaded:
    name = sources.spec_file
    text = sources.read(name)
    texts = {name: text}
    try:
        base = load_document(text, name)
    except LoadFailed as exc:
        raise SpecError(exc.diagnostics, texts) from None
    version = base.data.get("apiVersion")
    if version != API_VERSION:
        span = base.values.get(("apiVersion",)) or base.keys.get(("project",)) or base.values[()]
        said = "is missing" if version is None else f"`{version}` is not supported"
        raise SpecError([Diagnostic("HX105", f"apiVersion {said}", span,
                                    hint=f"this hxpc reads `apiVersion: {API_VERSION}`")], texts)
    return Loaded(base, sources.overlays(), texts)


def environments(sources: Sources, loaded: Loaded | None = None) -> list[str]:
    """Every environment the spec declares, sorted; [`default`] when it declares none."""
    loaded = loaded or load_base(sources)
    names = sorted(set(environments_in(loaded.base)) | set(loaded.overlays))
    if len(names) > MAX_ENVIRONMENTS:  # each environment merges the whole spec: bound the product
        base = loaded.base
        span = base.keys.get(("environments",)) or base.values[()]
        raise SpecError([Diagnostic("HX208", f"{sources.spec_file} declares {len(names):,} environments "
                                             f"(inline and overlay files); hxpc takes at most {MAX_ENVIRONMENTS}",
                                    span, hint="split the stack into several specs")], loaded.texts)
    return names or [DEFAULT_ENV]


@record(frozen=False)
class Resolved:
    stack: ResolvedStack
    merged: Merged
    texts: dict[str, str]
    warnings: list[Diagnostic] = field(default_factory=list)
    """problems that do not stop anything (severity `warning`), for the command to print"""


def merged_env(sources: Sources, env: str, loaded: Loaded | None = None) -> tuple[Merged, dict[str, str]]:
    loaded = loaded or load_base(sources)
    texts = dict(loaded.texts)
    known = environments(sources, loaded)
    if env not in known:
        raise SpecError([Diagnostic("HX107", f"environment `{env}` is not declared by {sources.spec_file}",
                                    hint=suggest(env, known))], texts)
    overlay = None
    if env in loaded.overlays:
        file = loaded.overlays[env]
        texts[file] = sources.read(file)
        try:
            overlay = load_document(texts[file], file)
        except LoadFailed as exc:
            raise SpecError(exc.diagnostics, texts) from None
    try:
        merged = merge(loaded.base, env, overlay)
    except MergeFailed as exc:
        raise SpecError(exc.diagnostics, texts) from None
    return merged, texts


def resolve_env(sources: Sources, env: str, loaded: Loaded | None = None) -> Resolved:
    with no_cyclic_gc():
        return _resolve_env(sources, env, loaded)


def _resolve_env(sources: Sources, env: str, loaded: Loaded | None) -> Resolved:
    merged, texts = merged_env(sources, env, loaded)
    # models' config.json files are read through the sources, so `diff --base` reads them as they were
    shapes = ModelShapes(sources.read_beside)
    stack, problems = validate(merged, shapes)
    if stack is None or any(p.severity == "error" for p in problems):
        raise SpecError(unique_sorted(problems), texts)
    return Resolved(resolve(stack, env, shapes), merged, texts, unique_sorted(problems))
