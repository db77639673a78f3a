"""Merging: environment overlays (RFC 7386) and `defaults`, with provenance per value.

The base document's tree is patched by the inline overlay
(`environments.<env>`) and then by the overlay file (`<name>.<env>.yaml`):
mappings merge key by key, anything else replaces whole, `null` deletes. Then
`defaults` is merged *under* every service and model. Each path of the result
records, in order, every layer that set it (`Layer`), so errors point into the
file that set a value and `hxpc explain` can show the whole history.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from hxpc.compiler.load import Document, KeyPath
from hxpc.diagnostics import Diagnostic, Span
from hxpc.limits import MAX_MERGED_VALUES
from hxpc.records import record

# Keys of `defaults` that also apply to models; the rest (ports, health, ...) are service-only.
MODEL_DEFAULT_KEYS = frozenset({"restart", "resources", "env", "hosts", "replicas", "update", "security"})
MODEL_RESOURCE_KEYS = frozenset({"cpu", "memory"})


class Layer(NamedTuple):
    """One layer that set a value: which layer, and where its key and value stand."""

    source: str  # "base", "environments.<env>", "overlay", "defaults" or "defaults (<layer>)"
    value: Span
    key: Span | None


@record(frozen=False)
class Merged:
    data: dict[str, Any]
    provenance: dict[KeyPath, list[Layer]]

    def span(self, path: KeyPath, *, key: bool = False) -> Span | None:
        """The span of the layer that set `path` last (or of its key), else of the nearest parent."""
        for end in range(len(path), -1, -1):
            layers = self.provenance.get(path[:end])
            if layers:
                last = layers[-1]
                # a value that is not set at all is best shown at the name of what lacks it
                if (key or end < len(path)) and last.key is not None:
                    return last.key
                return last.value
        return None


class MergeFailed(Exception):
    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        super().__init__(diagnostics[0].message)


def _subtree(value: Any, path: KeyPath) -> Iterator[KeyPath]:
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _subtree(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _subtree(v, (*path, i))


def _via_defaults(layer: Layer) -> Layer:
    """A `defaults` layer seen from a service: say so, and which layer set the default."""
    return layer._replace(source="defaults" if layer.source == "base" else f"defaults ({layer.source})")


def _without_nulls(value: Any) -> Any:
    # RFC 7386: a null inside a mapping that is added whole still means "absent";
    # a sequence is a value like any other, kept as it is (`[{a: null}]` stays so)
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    return value


def _copied(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    return value


class _Merger:
    def __init__(self, base: Document):
        self.base = base
        self.prov: dict[KeyPath, list[Layer]] = {}
        # The base document is shared by every environment's merge, so it is never
        # patched in place: each mapping on a patched path is copied first (copy on write).
        self.data: dict[str, Any] = {k: v for k, v in base.data.items() if k != "environments"}
        for path, span in base.values.items():
            if path[:1] != ("environments",):
                self.prov[path] = [Layer("base", span, base.keys.get(path))]

    def patch(self, patch: dict[str, Any], doc: Document, prefix: KeyPath, source: str) -> None:
        self._patch(self.data, patch, (), doc, prefix, source)

    def _record(self, value: Any, path: KeyPath, doc: Document, src: KeyPath, source: str, *, append: bool) -> None:
        for sub in _subtree(value, path):
            rel = sub[len(path):]
            layer = Layer(source, doc.values[(*src, *rel)], doc.keys.get((*src, *rel)))
            if append and sub == path:
                self.prov.setdefault(sub, []).append(layer)
            else:
                self.prov[sub] = [layer]

    def _drop(self, value: Any, path: KeyPath, *, keep_root: bool) -> None:
        for sub in _subtree(value, path):
            if keep_root and sub == path:
                continue
            self.prov.pop(sub, None)

    def _patch(self, target: dict[str, Any], patch: dict[str, Any], path: KeyPath,
               doc: Document, src: KeyPath, source: str) -> None:
        for key, value in patch.items():
            here, src_here = (*path, key), (*src, key)
            if value is None:
                if key in target:
                    self._drop(target.pop(key), here, keep_root=False)
                continue
            current = target.get(key)
            if isinstance(value, dict) and isinstance(current, dict):
                self.prov.setdefault(here, []).append(
                    Layer(source, doc.values[src_here], doc.keys.get(src_here)))
                target[key] = current = dict(current)
                self._patch(current, value, here, doc, src_here, source)
                continue
            had = key in target
            if had:
                self._drop(current, here, keep_root=True)
            target[key] = _without_nulls(value)  # copies every container on the way
            self._record(target[key], here, doc, src_here, source, append=had)

    def defaults_problem(self) -> Diagnostic | None:
        """`defaults` is copied under every service and model: refuse a product that would not fit in memory."""
        defaults = self.data.get("defaults")
        if not isinstance(defaults, dict):
            return None
        size = sum(1 for _ in _subtree(defaults, ()))
        items = sum(len(v) for k in ("services", "models") if isinstance(v := self.data.get(k), dict))
        if size * items + len(self.prov) <= MAX_MERGED_VALUES:
            return None
        return Diagnostic("HX113", f"`defaults` ({size:,} values) under {items:,} services and models would make "
                                   f"more than {MAX_MERGED_VALUES:,} values", self.span_of(("defaults",)),
                          hint="keep `defaults` to what every service shares")

    def span_of(self, path: KeyPath) -> Span | None:
        layers = self.prov.get(path)
        return (layers[-1].key or layers[-1].value) if layers else None

    def apply_defaults(self) -> None:
        defaults = self.data.get("defaults")
        if not isinstance(defaults, dict):
            return
        for section, keys in (("services", None), ("models", MODEL_DEFAULT_KEYS)):
            items = self.data.get(section)
            if not isinstance(items, dict):
                continue
            items = self.data[section] = dict(items)
            for name, item in items.items():
                if isinstance(item, dict):
                    items[name] = item = dict(item)
                    self._under(item, defaults, (section, name), ("defaults",), keys)

    def _under(self, target: dict[str, Any], defaults: dict[str, Any], path: KeyPath,
               dpath: KeyPath, only: frozenset[str] | None) -> None:
        for key, dvalue in defaults.items():
            if only is not None and key not in only:
                continue
            here, dhere = (*path, key), (*dpath, key)
            if dvalue is None:
                continue
            if key not in target:
                if only is not None and key == "resources" and isinstance(dvalue, dict):
                    dvalue = {k: v for k, v in dvalue.items() if k in MODEL_RESOURCE_KEYS}
                target[key] = _without_nulls(dvalue)
                for sub in _subtree(target[key], here):
                    self.prov[sub] = [_via_defaults(layer) for layer in self.prov[(*dhere, *sub[len(here):])]]
                continue
            inherited = [_via_defaults(layer) for layer in self.prov[dhere]]
            self.prov[here] = inherited + self.prov.get(here, [])
            if isinstance(target[key], dict) and isinstance(dvalue, dict):
                target[key] = dict(target[key])
                sub_only = MODEL_RESOURCE_KEYS if only is not None and key == "resources" else None
                self._under(target[key], dvalue, here, dhere, sub_only)


def environments_in(base: Document) -> list[str]:
    envs = base.data.get("environments")
    return sorted(envs) if isinstance(envs, dict) else []


# environment names become parts of generated names (`<project>-<env>`): DNS labels, as spec.Name
_ENV_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _environment_problems(base: Document) -> list[Diagnostic]:
    """`environments` never reaches the schema (it is merged away), so its shape and names are checked here."""
    envs = base.data.get("environments")
    if envs is None:
        return []
    if not isinstance(envs, dict):
        return [Diagnostic("HX108", "`environments` must be a mapping of environment names to overrides",
                           base.values[("environments",)], hint="e.g. `environments: {dev: {...}}`")]
    return [Diagnostic("HX206", f"`{name}` is not a valid environment name: use lowercase letters, digits and `-`, "
                                "starting and ending with a letter or digit, at most 63 characters",
                       base.keys[("environments", name)])
            for name in envs if not _ENV_NAME.match(name)]


def merge(base: Document, env: str | None, overlay: Document | None) -> Merged:
    """Apply the inline overlay, then the overlay file, then `defaults`; see the module doc."""
    merger = _Merger(base)
    problems = _environment_problems(base)
    envs = base.data.get("environments")
    if env is not None and isinstance(envs, dict) and env in envs:
        inline = envs[env]
        src: KeyPath = ("environments", env)
        if isinstance(inline, dict):
            merger.patch(inline, base, src, f"environments.{env}")
        elif inline is not None:
            problems.append(Diagnostic("HX108", f"environment `{env}` must be a mapping of overrides",
                                       base.values[src]))
    if overlay is not None:
        if "environments" in overlay.data:
            problems.append(Diagnostic(
                "HX108", "an overlay file cannot declare `environments`", overlay.keys[("environments",)],
                hint="overlay files are themselves one environment; move this to the base spec"))
        else:
            merger.patch(overlay.data, overlay, (), "overlay")
    too_big = merger.defaults_problem()
    if too_big is not None:
        problems.append(too_big)
    if problems:
        raise MergeFailed(problems)
    merger.apply_defaults()
    return Merged(merger.data, merger.prov)
