"""Loading: YAML text to plain data plus a map of where every key and value stands.

ruamel.yaml composes the text into nodes (with its C parser when
ruamel.yaml.clib is present: the round-trip loader is ten times slower on large
specs), and a single walk turns the nodes into plain dicts, lists and scalars
while recording a `Span` for every value and every mapping key, keyed by the
value's path. The data never carries position keys. Duplicate keys, non-string
keys and YAML syntax errors become diagnostics with file:line:column.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.tag import Tag

from hxpc.diagnostics import Diagnostic, Span
from hxpc.records import record

KeyPart = str | int
KeyPath = tuple[KeyPart, ...]

_TAG = "tag:yaml.org,2002:"
MAX_NODES = 1_000_000  # ~4x the largest spec benchmarked (5,000 services)


@record(frozen=False)
class Document:
    """One YAML file: its data and the spans of every value and key by path."""

    file: str
    text: str
    data: Any
    values: dict[KeyPath, Span]
    keys: dict[KeyPath, Span]


class LoadFailed(Exception):
    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        super().__init__(diagnostics[0].message if diagnostics else "load failed")


_PLAIN = "tag:hxpc:plain"
_STR, _SEQ, _MAP = _TAG + "str", _TAG + "seq", _TAG + "map"
# One shared Tag object per kind: ruamel decodes a tag's URI anew for every
# node that owns its own Tag, which dominated the time to load a large spec.
_PLAIN_TAG, _STR_TAG, _SEQ_TAG, _MAP_TAG = (Tag(suffix=t) for t in (_PLAIN, _STR, _SEQ, _MAP))


class _DeferredResolver(VersionedResolver):
    """Leaves plain scalars untyped: `_Walker._scalar` types them by the YAML 1.2 core schema.

    ruamel's resolver runs a version lookup and a regex scan in Python for every
    node, which was two thirds of the time to load a large spec.
    """

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Tag:
        if kind is ScalarNode:
            return _PLAIN_TAG if implicit[0] else _STR_TAG
        return _SEQ_TAG if kind is SequenceNode else _MAP_TAG


def _yaml(pure: bool) -> YAML:
    try:
        loader = YAML(typ="safe", pure=pure)
    except Exception:  # noqa: BLE001  # pragma: no cover - no C extension: same result, slower
        loader = YAML(typ="safe", pure=True)
    loader.Resolver = _DeferredResolver
    return loader


_LOADER = _yaml(pure=False)
# The C parser (an old libyaml) rejects some valid YAML 1.2 that the pure
# parser accepts, e.g. a colon inside a flow plain scalar: `{image: nginx:1.27}`.
# It is only asked again when the fast parser fails, so valid specs stay fast.
_PURE_LOADER = _yaml(pure=True)

# YAML 1.2 core schema, as ruamel resolves it
_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
# a digit comes first (after the sign or prefix): `_`, `0x` and `._` are text, as ruamel reads them
_INT = re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7][0-7_]*|0x[0-9a-fA-F][0-9a-fA-F_]*)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
                    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


def _compose(text: str) -> Node | None:
    try:
        return _LOADER.compose(text)  # type: ignore[no-any-return]
    except MarkedYAMLError:
        return _PURE_LOADER.compose(text)  # type: ignore[no-any-return]


def load_document(text: str, file: str) -> Document:
    """Parse one file; raise LoadFailed with every problem found in it."""
    try:
        root = _compose(text)
    except MarkedYAMLError as exc:
        raise LoadFailed([_syntax_diagnostic(exc, file, text)]) from None
    if root is None:
        span = Span(file, 1, 1, 1, 1)
        raise LoadFailed([Diagnostic("HX103", f"{file} holds no YAML document", span,
                                     hint="write a mapping with `apiVersion: hxpc/v1` at the top")])
    if not isinstance(root, MappingNode):
        raise LoadFailed([Diagnostic("HX104", "the document root must be a mapping of fields",
                                     _span(root, file),
                                     hint="start the file with `apiVersion: hxpc/v1`")])
    walker = _Walker(file)
    data = walker.walk(root, ())
    if walker.diagnostics:
        raise LoadFailed(walker.diagnostics)
    return Document(file, text, data, walker.values, walker.keys)


def _syntax_diagnostic(exc: MarkedYAMLError, file: str, text: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    col = mark.column + 1 if mark is not None else 1
    lines = text.splitlines()
    if lines and line > len(lines):
        # "unexpected end of stream" marks the line after the last: show the last line's end
        line, col = len(lines), len(lines[-1]) + 1
    problem = exc.problem or exc.context or "invalid YAML"
    context = f" ({exc.context})" if exc.context and exc.problem else ""
    hint = None
    source = lines[line - 1] if 1 <= line <= len(lines) else ""
    if "cannot start any token" in problem and source[col - 1 : col] == "\t":
        hint = "YAML indentation must use spaces, not tabs"
    return Diagnostic("HX101", f"{problem}{context}", Span(file, line, col, line, col + 1), hint=hint)


def _span(node: Node, file: str) -> Span:
    start, end = node.start_mark, node.end_mark
    if end.line > start.line and end.column == 0:
        # block collections end at the start of the next line; point at the first line
        return Span(file, start.line + 1, start.column + 1, start.line + 1, start.column + 2)
    return Span(file, start.line + 1, start.column + 1, end.line + 1, end.column + 1)


class _Walker:
    def __init__(self, file: str):
        self.file = file
        self.values: dict[KeyPath, Span] = {}
        self.keys: dict[KeyPath, Span] = {}
        self.diagnostics: list[Diagnostic] = []
        self.budget = MAX_NODES

    def walk(self, node: Node, path: KeyPath) -> Any:
        self.budget -= 1
        if self.budget < 0:  # aliases expand in full: a "billion laughs" file must not hang us
            raise LoadFailed([Diagnostic(
                "HX109", f"{self.file} expands to more than {MAX_NODES:,} values (through YAML aliases?)",
                _span(node, self.file), hint="write the values out, or split the stack")])
        self.values[path] = _span(node, self.file)
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        return self._scalar(node, path)

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_span = _span(key_node, self.file)
            if (key_node.value == "<<" and key_node.ctag is _PLAIN_TAG) or key_node.tag == _TAG + "merge":
                self.diagnostics.append(Diagnostic(
                    "HX109", "YAML merge keys (`<<`) are not supported", key_span,
                    hint="use `defaults:` or an environment overlay instead"))
                continue
            if not isinstance(key_node, ScalarNode) or (
                    key_node.ctag is not _PLAIN_TAG and key_node.ctag is not _STR_TAG
                    and key_node.tag not in (_STR, _TAG + "int")):
                self.diagnostics.append(Diagnostic(
                    "HX109", "mapping keys must be plain names", key_span,
                    hint="quote the key to make it a string"))
                continue
            key = str(key_node.value)
            child = (*path, key)
            if key in out:
                first = self.keys[child]
                self.diagnostics.append(Diagnostic(
                    "HX102", f"duplicate key `{key}` (first set at line {first.line})", key_span,
                    hint="remove one of the two; YAML would silently keep only the last",
                    notes=((first, "first set here"),)))
                continue
            self.keys[child] = key_span
            out[key] = self.walk(value_node, child)
        return out

    def _scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        ctag, text = node.ctag, node.value
        if ctag is _STR_TAG or node.style in ("'", '"', "|", ">"):
            return text
        if ctag is _PLAIN_TAG:
            if text in _NULL:
                return None
            if text in _BOOL:
                return _BOOL[text]
            if _INT.match(text):
                return _int(text)
            if _FLOAT.match(text):
                return _float(text)
            return text
        tag = node.tag  # an explicit tag such as `!!int`
        if tag == _STR:
            return text
        if tag == _TAG + "null":
            return None
        if tag == _TAG + "bool":
            return text.lower() == "true"
        if tag == _TAG + "int":
            return _int(text)
        if tag == _TAG + "float":
            return _float(text)
        # timestamps, binary and custom tags: keep the text; the schema decides
        return text


def _int(text: str) -> int:
    clean = text.replace("_", "")
    sign = -1 if clean.startswith("-") else 1
    body = clean.lstrip("+-")
    if body[:2] in ("0x", "0X"):
        return sign * int(body[2:], 16)
    if body[:2] in ("0o", "0O"):
        return sign * int(body[2:], 8)
    return sign * int(body, 10)


def _float(text: str) -> float:
    lowered = text.lower().replace("_", "")
    if lowered in (".inf", "+.inf"):
        return math.inf
    if lowered == "-.inf":
        return -math.inf
    if lowered == ".nan":
        return math.nan
    return float(lowered)
