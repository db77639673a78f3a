"""yamlout: deterministic block YAML that YAML 1.2 (ruamel) and YAML 1.1 (PyYAML) readers both read back exactly."""

from __future__ import annotations

import io
import math
import re
from typing import Any

import pytest
import yaml as pyyaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from hxpc.compiler import yamlout
from hxpc.compiler.yamlout import dump, dump_all

# the C-based loaders where the property tests load many documents; the pure ones read strings
_RUAMEL = YAML(typ="safe", pure=True)
_RUAMEL_C = YAML(typ="safe")
_PYYAML_C = getattr(pyyaml, "CSafeLoader", pyyaml.SafeLoader)


def ruamel_load(text: str) -> Any:
    return _RUAMEL.load(text)


def ruamel_c_load(text: str) -> Any:
    return _RUAMEL_C.load(text)


def pyyaml_c_load(text: str) -> Any:
    return pyyaml.load(text, Loader=_PYYAML_C)  # a safe loader (libyaml's when present)


def ruamel_load_all(text: str) -> list[Any]:
    return list(YAML(typ="safe").load_all(io.StringIO(text)))


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(),
    st.floats(allow_nan=False, allow_infinity=False),
)
keys = st.text()
trees = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)),
    max_leaves=12,
)
documents = st.one_of(st.dictionaries(keys, trees, max_size=5), st.lists(trees, max_size=5))


def _same(a: Any, b: Any) -> bool:
    """Equality that tells bools from ints and 1.0 from 1 (YAML keeps the difference)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(documents)
def test_round_trip_through_ruamel_and_pyyaml(data: Any) -> None:
    text = dump(data)
    assert _same(ruamel_c_load(text), data), text
    assert _same(pyyaml_c_load(text), data), text


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_any_string_round_trips_as_value_and_key(text: str) -> None:
    data = {"v": text, text: [text]}
    out = dump(data)
    assert _same(ruamel_load(out), data), out
    assert _same(pyyaml.safe_load(out), data), out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(keys, trees, max_size=3), min_size=1, max_size=3))
def test_dump_all_round_trips(docs: list[dict[str, Any]]) -> None:
    text = dump_all(docs)
    assert all(_same(a, b) for a, b in zip(ruamel_load_all(text), docs, strict=True)), text
    assert all(_same(a, b) for a, b in zip(pyyaml.load_all(text, Loader=_PYYAML_C), docs, strict=True)), text


@settings(max_examples=30)
@given(documents)
def test_dump_is_deterministic_and_sorted(data: Any) -> None:
    assert dump(data) == dump(data)
    if isinstance(data, dict):
        reordered = dict(reversed(list(data.items())))
        assert dump(reordered) == dump(data)


@pytest.mark.parametrize("word", [
    "yes", "no", "Yes", "NO", "on", "Off", "y", "n", "Y", "true", "False", "null", "Null", "~", "",
    "010", "0x1F", "0o17", "0b101", "1e3", "1_000", ".5", "-.5", "+1", ".inf", "-.Inf", ".NaN", "1:20", "12:30:45",
    "2001-12-14", "2001-12-14t21:59:43.10-05:00", "*alias", "&anchor", "!tag", "%directive", "@at", "`tick",
    "- item", "? key", "a: b", "key:", "# comment", "a #b", " leading", "trailing ", "multi\nline", "tab\there",
    "quote\"d", "v\n", "trailing newline\n", "\nleading", "back\\slash", "{flow}", "[flow]", "a,b", "<<", "=", "|",
    ">", "'", '"',
])
def test_tricky_strings_are_quoted_so_they_stay_strings(word: str) -> None:
    out = dump({"k": word})
    assert ruamel_load(out) == {"k": word}, out
    assert pyyaml.safe_load(out) == {"k": word}, out


@pytest.mark.parametrize("word", ["nginx", "nginx:1.27", "/var/lib/data", "ghcr.io/hxp/gateway:1.4.2",
                                  "--enable-prefix-caching", "a b", "user@host", "$HOME", "_private"])
def test_ordinary_strings_stay_plain(word: str) -> None:
    out = dump({"k": word})
    plain = not word.startswith("-")  # a leading dash would read as a list item
    assert (out == f"k: {word}\n") is plain, out
    assert pyyaml.safe_load(out) == {"k": word}


def test_layout() -> None:
    data = {"b": [1, {"q": 2, "p": [3, [4, 5]]}, []], "a": {"nested": {"deep": None}, "empty": {}}, "c": True}
    assert dump(data) == (
        "a:\n"
        "  empty: {}\n"
        "  nested:\n"
        "    deep: null\n"
        "b:\n"
        "- 1\n"
        "- p:\n"
        "  - 3\n"
        "  - - 4\n"
        "    - 5\n"
        "  q: 2\n"
        "- []\n"
        "c: true\n"
    )


def test_reserved_keys_are_quoted() -> None:
    assert dump({"y": 1, "on": 2, "n": 3}) == '"n": 3\n"on": 2\n"y": 1\n'


def test_unprintable_characters_are_escaped() -> None:
    # DEL, NEL, the Unicode line separators and the BOM: refused or changed by YAML readers when raw
    out = dump({"k": "a\x7f\x85\u2028\u2029\ufeffb"})
    assert out == 'k: "a\\u007f\\u0085\\u2028\\u2029\\ufeffb"\n'
    assert pyyaml.safe_load(out) == ruamel_load(out) == {"k": "a\x7f\x85\u2028\u2029\ufeffb"}


def test_roots_and_documents() -> None:
    assert dump({}) == "{}\n"
    assert dump([]) == "[]\n"
    assert dump("yes") == '"yes"\n'
    assert dump(3) == "3\n"
    assert dump_all([{"a": 1}, {"b": 2}]) == "a: 1\n---\nb: 2\n"


def test_floats() -> None:
    assert dump({"f": 0.9}) == "f: 0.9\n"
    assert dump({"f": 1e16}) == "f: 1.0e+16\n"  # PyYAML reads `1e+16` as a string
    for value in (1e16, 1e-7, -0.0, 2.5e300, 1.0):
        assert pyyaml.safe_load(dump({"f": value}))["f"] == value
        assert ruamel_load(dump({"f": value}))["f"] == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(value: float) -> None:
    with pytest.raises(ValueError):
        dump({"f": value})


def test_the_unsafe_pattern_is_exactly_what_yaml_cannot_print() -> None:
    # YAML 1.2's c-printable, minus the characters YAML 1.1 reads as line breaks in a quoted scalar,
    # minus the BOM; checked over every code point
    printable = re.compile("[\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")
    line_breaks_and_bom = {"\x85", "\u2028", "\u2029", "\ufeff"}
    for cp in range(0x110000):
        char = chr(cp)
        unsafe = not printable.match(char) or char in line_breaks_and_bom
        assert bool(yamlout._UNSAFE.match(char)) == unsafe, hex(cp)
