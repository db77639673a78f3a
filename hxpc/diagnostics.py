"""Diagnostics: source spans, the registry of stable HX codes, and rendering.

Every problem hxpc reports about a user's input is a `Diagnostic` with a code
from `CODES`, a `Span` into the file that set the offending value, a message
that names the thing, and an optional hint that says how to fix it. Rendering
is plain text in the style of rustc/mypy (``file:line:col: error[HXnnn]: ...``
followed by the source line and a caret) or JSON for machines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import field
from typing import Any, Literal, NamedTuple

from hxpc.records import record

Severity = Literal["error", "warning"]


class Span(NamedTuple):
    """A region of a source file; lines and columns are 1-based, end exclusive.

    A NamedTuple, not a dataclass: a large spec makes hundreds of thousands.
    """

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


# The registry: codes are stable; never reuse a retired number.
CODES: dict[str, str] = {
    # HX1xx: loading and merging
    "HX101": "YAML syntax error",
    "HX102": "duplicate key",
    "HX103": "empty file",
    "HX104": "document root is not a mapping",
    "HX105": "unknown or missing apiVersion",
    "HX106": "file cannot be read",
    "HX107": "unknown environment",
    "HX108": "invalid overlay",
    "HX109": "unsupported YAML construct",
    "HX110": "file too large",
    "HX111": "control character",
    "HX112": "nesting too deep",
    "HX113": "too many values",
    # HX2xx: schema
    "HX201": "unknown field",
    "HX202": "wrong type",
    "HX203": "invalid duration",
    "HX204": "invalid size",
    "HX205": "invalid cpu quantity",
    "HX206": "invalid name",
    "HX207": "missing required field",
    "HX208": "value out of range",
    "HX209": "value not allowed",
    "HX210": "invalid combination of fields",
    # HX3xx: semantics
    "HX301": "unknown dependency",
    "HX302": "unknown secret",
    "HX303": "unknown host",
    "HX304": "unknown port",
    "HX305": "dependency cycle",
    "HX306": "GPUs oversubscribed",
    "HX307": "model weights do not fit",
    "HX308": "host port conflict",
    "HX309": "target needs an image",
    "HX310": "native runtime needs exec",
    "HX311": "host not in the systemd target",
    "HX312": "name used twice",
    "HX313": "no placement",
    "HX314": "replicas cannot start beside their old selves",
    "HX315": "too many replicas",
    # HX32x: will a model server start (the KV-cache check, hxpc/compiler/kvcheck.py)
    "HX320": "model architecture unknown",
    "HX321": "KV cache cannot hold one max_model_len sequence",
    "HX322": "no memory left for a KV cache",
    "HX323": "KV cache near vLLM's limit",
    "HX324": "no room for CUDA graphs",
    # HX4xx: target limits (compile)
    "HX401": "field not expressible by target",
    "HX402": "invalid monitoring rule",
    "HX403": "target needs a field the spec leaves optional",
    "HX404": "name not valid on the target",
    "HX405": "generated names collide",
    "HX406": "not monitored: the server's version exports no signal for it (a warning)",
}


@record
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    severity: Severity = "error"
    notes: tuple[tuple[Span, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.code not in CODES:  # a typo here is a bug, not a user error
            raise ValueError(f"unregistered diagnostic code {self.code}")

    def sort_key(self) -> tuple[str, int, int, str, str]:
        if self.span is None:
            return ("", 0, 0, self.code, self.message)
        return (self.span.file, self.span.line, self.span.col, self.code, self.message)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
            "span": None if self.span is None else _span_json(self.span),
            "notes": [{"span": _span_json(s), "message": m} for s, m in self.notes],
        }


def _span_json(span: Span) -> dict[str, Any]:
    return {
        "file": span.file,
        "line": span.line,
        "col": span.col,
        "end_line": span.end_line,
        "end_col": span.end_col,
    }


def unique_sorted(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Drop exact repeats (a bad default repeats under every service) and sort by place."""
    seen: dict[tuple[str, Span | None, str], Diagnostic] = {}
    for d in diagnostics:
        # one report per code and place; without a place, per message
        seen.setdefault((d.code, d.span, "" if d.span else d.message), d)
    return sorted(seen.values(), key=Diagnostic.sort_key)


def render_text(diagnostics: Iterable[Diagnostic], texts: Mapping[str, str]) -> str:
    """Render like a compiler: location, code, message, source line and caret, hint."""
    out: list[str] = []
    for d in diagnostics:
        where = f"{d.span}: " if d.span else ""
        out.append(f"{where}{d.severity}[{d.code}]: {d.message}")
        if d.span:
            out.extend(_excerpt(d.span, texts))
        for span, message in d.notes:
            out.append(f"  note: {span}: {message}")
            out.extend(_excerpt(span, texts))
        if d.hint:
            out.append(f"  = help: {d.hint}")
    return "\n".join(out) + ("\n" if out else "")


def _excerpt(span: Span, texts: Mapping[str, str]) -> list[str]:
    text = texts.get(span.file)
    if text is None:
        return []
    lines = text.splitlines()
    if not 1 <= span.line <= len(lines):
        return []
    source = lines[span.line - 1]
    gutter = str(span.line)
    end = span.end_col if span.end_line == span.line else len(source) + 1
    width = max(1, end - span.col)
    pad = " " * len(gutter)
    return [
        f" {pad} |",
        f" {gutter} | {source}",
        f" {pad} | {' ' * (span.col - 1)}^{'~' * (width - 1)}",
    ]


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json.dumps({"diagnostics": [d.to_json() for d in diagnostics]}, indent=2) + "\n"


def suggest(name: str, choices: Iterable[str]) -> str | None:
    """A hint for a name that is not among `choices`: the closest one ("did you mean"), else the known ones."""
    import difflib  # only when something was misnamed

    pool = sorted(choices)
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    if pool:
        shown = ", ".join(f"`{c}`" for c in pool[:12])
        return f"known: {shown}{', ...' if len(pool) > 12 else ''}"
    return None
