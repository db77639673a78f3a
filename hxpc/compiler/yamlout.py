"""A small deterministic YAML writer for the artifacts hxpc emits.

Artifacts are plain data (dicts, lists, strings, numbers, booleans, None).
They are written in block style with sorted keys, and every string that a
YAML 1.1 or 1.2 reader could take for something else (`yes`, `on`, `010`,
`1e3`, `null`, a leading `*`, ...) is double-quoted, so Compose, kubectl and
Prometheus read exactly what hxpc meant. ruamel.yaml's emitter was measured at
several seconds for a few thousand services and leaves `yes` unquoted, which
YAML 1.1 readers (kubectl's) turn into a boolean.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

_PLAIN = re.compile(r"^[A-Za-z_/.$][A-Za-z0-9_./:@+$-]*(?: [A-Za-z0-9_./:@+$()-]+)*$")
_NUMBER_LIKE = re.compile(r"^[-+]?(\.?[0-9]|0[xob])|^[-+]?\.(inf|nan)$", re.IGNORECASE)
_RESERVED = frozenset({
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
})


def _scalar(value: Any) -> str:
    kind = type(value)
    if kind is str:  # most scalars; checked first
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError("artifacts never hold NaN or infinity")
        text = repr(value)
        # YAML 1.1 readers (PyYAML) read `1e+16` as a string: their floats need a dot
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return _string(str(value))


# Artifacts repeat the same strings (label keys, names, field values) thousands of times;
# caching their quoting makes writing a 1,000-service stack several times faster.
@functools.lru_cache(maxsize=65536)
def _string(text: str) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _RESERVED and not _NUMBER_LIKE.match(text) \
            and not text.endswith(":") and ": " not in text:
        return text
    return _UNSAFE.sub(_escape, json.dumps(text, ensure_ascii=False))


# Characters a YAML reader refuses (C0 and C1 controls, DEL, surrogates, U+FFFE/F) or reads as a line
# break inside a double-quoted string (YAML 1.1's NEL and the Unicode separators), and the BOM: written as
# escapes. Spelled as the forbidden ranges, not as the complement of the printable ones, which Python's
# re takes ~5 ms to compile. (json.dumps has already escaped the C0 controls.)
_UNSAFE = re.compile("[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\u2028\u2029\uD800-\uDFFF\uFEFF\uFFFE\uFFFF]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _key(key: Any) -> str:
    return _string(key) if type(key) is str else _scalar(str(key))


# The emitters write a non-empty mapping or list whose lines are indented by `pad`, except the first,
# which starts with `first` instead: that is how a list item's `- ` shares its line with the item.


def _emit_mapping(value: Any, pad: str, first: str, out: list[str]) -> None:
    lead, nested = first, pad + "  "
    for key in sorted(value):
        item = value[key]
        kind = type(item)
        if kind is str:
            out.append(f"{lead}{_key(key)}: {_string(item)}")
        elif item and (kind is dict or isinstance(item, dict)):
            out.append(f"{lead}{_key(key)}:")
            _emit_mapping(item, nested, nested, out)
        elif item and (kind is list or isinstance(item, list)):
            out.append(f"{lead}{_key(key)}:")
            _emit_list(item, pad, pad, out)  # lists sit at their key's indentation, as kubectl writes them
        else:
            out.append(f"{lead}{_key(key)}: {_inline(item)}")
        lead = pad


def _emit_list(value: Any, pad: str, first: str, out: list[str]) -> None:
    lead, nested = first, pad + "  "
    for item in value:
        dash = lead + "- "
        if type(item) is str:
            out.append(dash + _string(item))
        elif item and isinstance(item, dict):
            _emit_mapping(item, nested, dash, out)
        elif item and isinstance(item, list):
            _emit_list(item, nested, dash, out)
        else:
            out.append(dash + _inline(item))
        lead = pad


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def dump(data: Any) -> str:
    """One YAML document; a mapping or list at the root."""
    if not isinstance(data, (dict, list)):
        return _scalar(data) + "\n"
    if not data:
        return _inline(data) + "\n"
    out: list[str] = []
    if isinstance(data, dict):
        _emit_mapping(data, "", "", out)
    else:
        _emit_list(data, "", "", out)
    return "\n".join(out) + "\n"


def dump_all(documents: list[Any]) -> str:
    """Several documents separated by `---`, for multi-object Kubernetes files."""
    return "---\n".join(dump(d) for d in documents)
