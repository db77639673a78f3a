"""Loading: plain data, the span of every key and value, and load errors as diagnostics."""

from __future__ import annotations

import math

import pytest

from hxpc.compiler.load import Document, LoadFailed, load_document
from hxpc.diagnostics import Diagnostic, Span


def load(text: str) -> Document:
    return load_document(text, "s.yaml")


def failure(text: str) -> list[Diagnostic]:
    with pytest.raises(LoadFailed) as info:
        load(text)
    return info.value.diagnostics


def at(line: int, col: int, end_line: int, end_col: int) -> Span:
    return Span("s.yaml", line, col, end_line, end_col)


def _plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def test_block_positions_of_keys_and_values() -> None:
    doc = load("apiVersion: hxpc/v1\nservices:\n  web:\n    replicas: 2\n    image: nginx\n")
    assert doc.data == {"apiVersion": "hxpc/v1", "services": {"web": {"replicas": 2, "image": "nginx"}}}
    assert doc.keys[("apiVersion",)] == at(1, 1, 1, 11)
    assert doc.values[("apiVersion",)] == at(1, 13, 1, 20)
    assert doc.keys[("services", "web", "replicas")] == at(4, 5, 4, 13)
    assert doc.values[("services", "web", "replicas")] == at(4, 15, 4, 16)
    assert doc.keys[("services", "web", "image")] == at(5, 5, 5, 10)
    # a block mapping's span is its first line (not "up to the start of the next line")
    assert doc.values[("services", "web")] == at(4, 5, 4, 6)
    assert doc.values[()] == at(1, 1, 1, 2)
    assert () not in doc.keys


def test_flow_positions() -> None:
    doc = load("ports: {http: 8080, grpc: 9090}\nargs: [--port, '8080']\n")
    assert doc.values[("ports",)] == at(1, 8, 1, 32)
    assert doc.keys[("ports", "grpc")] == at(1, 21, 1, 25)
    assert doc.values[("ports", "grpc")] == at(1, 27, 1, 31)
    assert doc.values[("args", 0)] == at(2, 8, 2, 14)
    assert doc.values[("args", 1)] == at(2, 16, 2, 22)
    assert doc.data["args"] == ["--port", "8080"]


def test_block_sequence_positions() -> None:
    doc = load("deps:\n  - a\n  - {b: 1}\n  -\n    - x\n")
    assert doc.data == {"deps": ["a", {"b": 1}, ["x"]]}
    assert doc.values[("deps", 0)] == at(2, 5, 2, 6)
    assert doc.keys[("deps", 1, "b")] == at(3, 6, 3, 7)
    assert doc.values[("deps", 2, 0)] == at(5, 7, 5, 8)
    assert ("deps", 0) not in doc.keys  # list items have no key


def test_every_value_has_a_span_and_data_is_plain() -> None:
    doc = load("a:\n  b: [1, {c: null}]\n  d: |\n    text\n")
    assert _plain(doc.data)
    assert set(doc.values) == {(), ("a",), ("a", "b"), ("a", "b", 0), ("a", "b", 1), ("a", "b", 1, "c"),
                               ("a", "d")}
    assert set(doc.keys) == {("a",), ("a", "b"), ("a", "b", 1, "c"), ("a", "d")}


def test_aliases_expand_to_independent_copies_with_the_anchor_positions() -> None:
    doc = load("x: &common {b: 1}\ny: *common\n")
    assert doc.data == {"x": {"b": 1}, "y": {"b": 1}}
    assert doc.data["x"] is not doc.data["y"]  # a later patch of one must not change the other
    assert doc.keys[("y",)] == at(2, 1, 2, 2)
    assert doc.values[("y", "b")] == doc.values[("x", "b")] == at(1, 16, 1, 17)


@pytest.mark.parametrize(("text", "value"), [
    ("1", 1), ("-3", -3), ("+5", 5), ("1_000", 1000), ("0x1F", 31), ("0o17", 15), ("017", 17),
    ("1.5", 1.5), ("1e3", 1000.0), ("-.5", -0.5), (".inf", math.inf), ("-.inf", -math.inf),
    ("true", True), ("false", False), ("True", True),
    ("null", None), ("~", None), ("", None),
    ("yes", "yes"), ("no", "no"), ("on", "on"),  # YAML 1.2: these are text, not booleans
    ("'123'", "123"), ('"true"', "true"), ("'null'", "null"), ("2001-12-14", "2001-12-14"),
    ("nginx:1.27", "nginx:1.27"), ("500m", "500m"), ("1.5G", "1.5G"),
])
def test_scalars_follow_the_yaml_1_2_core_schema(text: str, value: object) -> None:
    loaded = load(f"v: {text}\n").data["v"]
    assert loaded == value
    assert type(loaded) is type(value)


def test_nan() -> None:
    assert math.isnan(load("v: .nan\n").data["v"])


def test_block_scalars_are_text() -> None:
    doc = load("a: |\n  line 1\n  line 2\nb: >\n  folded\n  text\nc: |-\n  42\n")
    assert doc.data == {"a": "line 1\nline 2\n", "b": "folded text\n", "c": "42"}


def test_int_keys_become_names() -> None:
    assert load("8080: x\n").data == {"8080": "x"}


def test_colon_inside_flow_scalars_is_valid_yaml() -> None:
    # YAML 1.2 allows `:` inside a plain scalar in flow context when no space follows
    doc = load("web: {image: nginx:1.27, url: http://x.example/y}\nl: [a:b]\n")
    assert doc.data == {"web": {"image": "nginx:1.27", "url": "http://x.example/y"}, "l": ["a:b"]}
    assert doc.values[("web", "image")] == at(1, 14, 1, 24)


def test_crlf_line_endings() -> None:
    doc = load("a: 1\r\nb: [x, y]\r\n")
    assert doc.data == {"a": 1, "b": ["x", "y"]}
    assert doc.values[("b", 1)] == at(2, 8, 2, 9)


def test_columns_count_characters_not_bytes() -> None:
    doc = load("é: \"ü\"\nb: ünïcode\n")
    assert doc.data == {"é": "ü", "b": "ünïcode"}
    assert doc.values[("é",)] == at(1, 4, 1, 7)
    assert doc.values[("b",)] == at(2, 4, 2, 11)


def test_duplicate_keys_are_all_reported() -> None:
    problems = failure("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n")
    assert [(d.code, d.span.line if d.span else 0) for d in problems] == [("HX102", 4), ("HX102", 5)]
    assert problems[0].message == "duplicate key `c` (first set at line 3)"
    assert problems[0].notes[0][0] == at(3, 3, 3, 4)


def test_duplicate_key_with_different_spelling_of_the_same_int() -> None:
    # `8080` and `8080` again are the same key; the second is reported
    problems = failure("8080: a\n8080: b\n")
    assert [d.code for d in problems] == ["HX102"]


def test_empty_documents() -> None:
    for text in ("", "\n\n", "# only a comment\n"):
        (d,) = failure(text)
        assert d.code == "HX103"
        assert d.span == at(1, 1, 1, 1)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_root_must_be_a_mapping(text: str) -> None:
    (d,) = failure(text)
    assert d.code == "HX104"
    assert d.span is not None and d.span.line == 1


def test_merge_key_is_refused() -> None:
    problems = failure("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n")
    assert [(d.code, d.span) for d in problems] == [("HX109", at(3, 3, 3, 5))]
    assert problems[0].hint is not None and "defaults" in problems[0].hint


def test_quoted_merge_key_is_an_ordinary_key() -> None:
    assert load("'<<': 1\n").data == {"<<": 1}


@pytest.mark.parametrize("key", ["[a, b]", "{a: 1}", "!!float 1.5", "!!bool true"])
def test_keys_that_are_not_names_are_refused(key: str) -> None:
    (d,) = failure(f"{key}: x\n")
    assert d.code == "HX109"
    assert d.span is not None and (d.span.line, d.span.col) == (1, 1)


def test_syntax_error_position() -> None:
    (d,) = failure("a: 1\nb: [1, 2\nc: 3\n")
    assert d.code == "HX101"
    assert d.span is not None and d.span.line == 3


def test_syntax_error_at_end_of_file_points_at_the_last_line() -> None:
    (d,) = failure('a: 1\nb: "open\n')
    assert d.code == "HX101"
    assert d.span == at(2, 9, 2, 10)  # just after `"open`


def test_tab_indentation_gets_a_hint() -> None:
    (d,) = failure("a:\n\tb: 1\n")
    assert d.code == "HX101"
    assert d.span is not None and (d.span.line, d.span.col) == (2, 1)
    assert d.hint == "YAML indentation must use spaces, not tabs"


def test_other_syntax_errors_get_no_tab_hint() -> None:
    (d,) = failure("a: @b\n")
    assert d.code == "HX101"
    assert d.hint is None


def test_several_documents_are_refused() -> None:
    (d,) = failure("a: 1\n---\nb: 2\n")
    assert d.code == "HX101"
    assert "single document" in d.message


def test_the_file_name_is_kept() -> None:
    doc = load_document("a: 1\n", "specs/x.prod.yaml")
    assert doc.file == "specs/x.prod.yaml"
    assert doc.text == "a: 1\n"
    assert doc.values[("a",)].file == "specs/x.prod.yaml"
