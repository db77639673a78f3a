"""Loading: YAML text to plain data plus a map of where every key and value stands.

ruamel.yaml composes the text into nodes (with its C parser when
ruamel.yaml.clib is present: the round-trip loader is ten times slower on large
specs), and a single walk turns the nodes into plain dicts, lists and scalars
while recording a `Span` for every value and every mapping key, keyed by the
value's path. The data never carries position keys. Duplicate keys, non-string
keys and YAML syntax errors become diagnostics with file:line:column.

Hostile input is bounded before the composer sees it (hxpc/limits.py): the
file's size, characters YAML forbids (a NUL byte), and its nesting depth. The
C composer recurses once per level and a file nested 50,000 deep overflows the
C stack (SIGSEGV), so depth is measured first: a cheap upper bound from the
text (indentation and flow brackets), and only when that bound is above the
limit, exactly, from the parser's event stream, which does not recurse. The
walk then bounds what aliases expand to, the depth they reach, integer
literals, and control characters that escapes put into quoted values.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.tag import Tag

from hxpc.diagnostics import Diagnostic, Span
from hxpc.limits import MAX_DEPTH, MAX_FILE_BYTES, MAX_INT_DIGITS, MAX_VALUES
from hxpc.records import record
from hxpc.sources import too_large

KeyPart = str | int
KeyPath = tuple[KeyPart, ...]

_TAG = "tag:yaml.org,2002:"
# What YAML 1.2 allows in a stream (tab, line breaks, printable Unicode); anything else is refused up front.
_NOT_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# What escapes in a double-quoted scalar may add that no value should hold (tab and line feed are fine).
_CONTROL_IN_VALUE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BRACKETS = re.compile(r"[\[\]{}]")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_CONTROL_NAMES = {0: "NUL", 7: "BEL", 8: "BS", 0x1B: "ESC", 0x7F: "DEL"}


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


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _character_name(char: str) -> str:
    code = ord(char)
    name = _CONTROL_NAMES.get(code)
    return f"U+{code:04X}" + (f" ({name})" if name else "")


def _depth_bound(text: str) -> int:
    """An upper bound of the nesting depth, in one cheap pass: flow brackets plus indentation.

    Brackets inside quoted text only raise the bound (a closing one cannot lower it below zero), and
    each block level needs one more column of indentation, or none for a sequence under its key.
    """
    steps = map(_BRACKET_STEP.__getitem__, _BRACKETS.findall(text))
    flow = 0
    if text.count("[") + text.count("{") > MAX_DEPTH // 2:
        depth = 0
        for step in steps:  # clamped at zero, so stray closers in scalars cannot hide a deep nest
            depth = max(0, depth + step)
            flow = max(flow, depth)
    else:
        flow = text.count("[") + text.count("{")
    indent = max((len(line) - len(line.lstrip(" -?:")) for line in text.splitlines()), default=0)
    return flow + 2 * (indent + 1)


def _too_deep(text: str, file: str) -> Diagnostic | None:
    """The first collection nested deeper than MAX_DEPTH, found in the parser's events (no recursion).

    The composer fails at the same event as the parser, so a syntax error found before the limit is
    left to it; the pure parser is asked when the C one refuses valid YAML 1.2 (see `_PURE_LOADER`).
    """
    for loader in (_LOADER, _PURE_LOADER):
        depth = 0
        try:
            for event in loader.parse(text):
                if isinstance(event, CollectionStartEvent):
                    depth += 1
                    if depth > MAX_DEPTH:
                        mark = event.start_mark
                        return _deep(file, Span(file, mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2))
                elif isinstance(event, CollectionEndEvent):
                    depth -= 1
        except YAMLError:
            continue
        return None
    return None


def _deep(file: str, span: Span) -> Diagnostic:
    return Diagnostic("HX112", f"{file} nests mappings and sequences more than {MAX_DEPTH} deep", span,
                      hint="a spec needs a handful of levels; flatten this value")


def _text_problems(text: str, file: str) -> Diagnostic | None:
    """What must be refused before the YAML parser sees the text: size, forbidden characters, depth."""
    if len(text) > MAX_FILE_BYTES:
        return too_large(file, len(text))
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        line, col = _position(text, bad.start())
        return Diagnostic("HX111", f"{file} holds the control character {_character_name(bad.group())}, "
                                   "which YAML does not allow", Span(file, line, col, line, col + 1),
                          hint="remove it (a binary file, or a copy that went wrong?); YAML text holds only "
                               "printable characters, tabs and line breaks")
    if _depth_bound(text) > MAX_DEPTH:
        return _too_deep(text, file)
    return None


def load_document(text: str, file: str) -> Document:
    """Parse one file; raise LoadFailed with every problem found in it."""
    refused = _text_problems(text, file)
    if refused is not None:
        raise LoadFailed([refused])
    try:
        root = _compose(text)
    except MarkedYAMLError as exc:
        raise LoadFailed([_syntax_diagnostic(exc, file, text)]) from None
    except YAMLError as exc:  # unmarked: none is known to reach here, but a YAML error is never a crash
        raise LoadFailed([Diagnostic("HX101", str(exc).splitlines()[0] if str(exc) else "invalid YAML",
                                     Span(file, 1, 1, 1, 1))]) from None
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
        self.budget = MAX_VALUES
        self.collections: set[int] = set()   # ids of collections walked: one seen twice is an alias expanded
        self.expanded = False

    def walk(self, node: Node, path: KeyPath, depth: int = 1) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise LoadFailed([self._too_many(node)])
        self.values[path] = _span(node, self.file)
        if not isinstance(node, ScalarNode):
            self.expanded = self.expanded or id(node) in self.collections
            self.collections.add(id(node))
        if isinstance(node, MappingNode):
            if depth > MAX_DEPTH:  # aliases nest what the text did not: the text's own depth was checked
                raise LoadFailed([_deep(self.file, _span(node, self.file))])
            return self._mapping(node, path, depth)
        if isinstance(node, SequenceNode):
            if depth > MAX_DEPTH:
                raise LoadFailed([_deep(self.file, _span(node, self.file))])
            return [self.walk(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        return self._scalar(node, path)

    def _too_many(self, node: Node) -> Diagnostic:
        if self.expanded:  # aliases expand in full: a "billion laughs" file must not hang us
            return Diagnostic("HX109", f"{self.file} expands to more than {MAX_VALUES:,} values through YAML "
                                       "aliases", _span(node, self.file),
                              hint="write the values out, or split the stack")
        return Diagnostic("HX113", f"{self.file} holds more than {MAX_VALUES:,} keys and items",
                          _span(node, self.file), hint="split the stack into several specs")

    def _control(self, node: ScalarNode) -> None:
        bad = _CONTROL_IN_VALUE.search(node.value)
        if bad is not None:
            self.diagnostics.append(Diagnostic(
                "HX111", f"this value holds the control character {_character_name(bad.group())}",
                _span(node, self.file), hint="remove the escape: no field of a spec takes control characters"))

    def _mapping(self, node: MappingNode, path: KeyPath, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_span = _span(key_node, self.file)
            if isinstance(key_node, ScalarNode) and key_node.style == '"':
                self._control(key_node)
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
            out[key] = self.walk(value_node, child, depth + 1)
        return out

    def _long_int(self, node: ScalarNode) -> bool:
        digits = sum(c.isalnum() for c in node.value)
        if digits <= MAX_INT_DIGITS:
            return False
        self.diagnostics.append(Diagnostic(
            "HX208", f"this integer has {digits} digits; no field takes a number that large",
            _span(node, self.file), hint="check the value: every count and size of a spec is far smaller"))
        return True

    def _scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        ctag, text = node.ctag, node.value
        if node.style == '"':
            self._control(node)
        if ctag is _STR_TAG or node.style in ("'", '"', "|", ">"):
            return text
        if ctag is _PLAIN_TAG:
            if text in _NULL:
                return None
            if text in _BOOL:
                return _BOOL[text]
            if _INT.match(text):
                return None if self._long_int(node) else _int(text)
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
            if not _INT.match(text.strip()):
                return text  # `!!int abc`: the schema reports the wrong type at its place
            return None if self._long_int(node) else _int(text.strip())
        if tag == _TAG + "float":
            if _INT.match(text.strip()) and self._long_int(node):
                return None
            return _float(text.strip()) if _FLOAT.match(text.strip()) or _INT.match(text.strip()) else text
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
