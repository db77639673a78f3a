"""Merging: RFC 7386 overlays (inline, then the overlay file), `defaults` under services and models, provenance."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hxpc.compiler.load import Document, load_document
from hxpc.compiler.merge import Merged, MergeFailed, environments_in, merge
from hxpc.compiler.yamlout import dump
from hxpc.diagnostics import Span

# RFC 7386, Appendix A: (original, patch, result). A document root is always a mapping
# here, so every case is wrapped in {"x": ...}; a null patch deletes `x` (the RFC's `null`).
RFC7386_APPENDIX_A: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


def doc(data: Any, file: str = "s.yaml") -> Document:
    return load_document(dump(data), file)


def text_doc(text: str, file: str = "s.yaml") -> Document:
    return load_document(text, file)


@pytest.mark.parametrize(("original", "patch", "result"), RFC7386_APPENDIX_A)
@pytest.mark.parametrize("how", ["inline", "overlay", "both"])
def test_rfc7386_appendix_a(original: Any, patch: Any, result: Any, how: str) -> None:
    expected = {} if result is None else {"x": result}
    if how == "inline":  # `environments.e` in the spec
        merged = merge(doc({"x": original, "environments": {"e": {"x": patch}}}), "e", None)
    elif how == "overlay":
        merged = merge(doc({"x": original}), "e", doc({"x": patch}, "s.e.yaml"))
    else:  # the inline overlay holds the patch, the overlay file (applied after it) holds nothing
        merged = merge(doc({"x": original, "environments": {"e": {"x": patch}}}), "e", doc({}, "s.e.yaml"))
    assert merged.data == expected
    _assert_provenance_complete(merged)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


def _assert_provenance_complete(merged: Merged) -> None:
    for path in _paths(merged.data)[1:]:
        assert merged.provenance.get(path), f"no layer set {path}"


BASE = """\
apiVersion: hxpc/v1
project: demo
defaults:
  restart: always
  resources: {cpu: 1, memory: 512Mi, gpus: 0}
  ports: {metrics: 9100}
  env: {TZ: UTC}
  hosts: [app-01]
  replicas: 2
  health: {tcp: {port: metrics}}
services:
  web:
    image: nginx:1.27
    replicas: 3
    resources: {cpu: 2}
    env: {LOG: info}
    depends_on: [llm]
models:
  llm:
    source: org/llm
    params_b: 1
    resources: {memory: 8Gi}
environments:
  prod:
    services:
      web: {replicas: 5, env: {LOG: warn}}
  dev:
    defaults: {restart: never}
    models: null
"""

OVERLAY = """\
services:
  web:
    replicas: 7
    env: {EXTRA: "1", TZ: null}
"""


def test_provenance_lists_every_layer_in_order() -> None:
    base, overlay = text_doc(BASE), text_doc(OVERLAY, "s.prod.yaml")
    merged = merge(base, "prod", overlay)
    assert merged.data["services"]["web"]["replicas"] == 7
    layers = merged.provenance[("services", "web", "replicas")]
    # `defaults.replicas` first (merged under the service), then the service, the inline and the file overlay
    assert [(layer.source, layer.value.file, layer.value.line) for layer in layers] == [
        ("defaults", "s.yaml", 9), ("base", "s.yaml", 14), ("environments.prod", "s.yaml", 26),
        ("overlay", "s.prod.yaml", 3)]
    assert layers[1].key == Span("s.yaml", 14, 5, 14, 13)
    assert layers[2].value == Span("s.yaml", 26, 23, 26, 24)
    assert merged.span(("services", "web", "replicas")) == Span("s.prod.yaml", 3, 15, 3, 16)
    assert merged.span(("services", "web", "replicas"), key=True) == Span("s.prod.yaml", 3, 5, 3, 13)
    # mappings record every layer that patched into them
    assert [layer.source for layer in merged.provenance[("services", "web")]] == [
        "base", "environments.prod", "overlay"]


def test_overlay_values_and_deletion() -> None:
    merged = merge(text_doc(BASE), "prod", text_doc(OVERLAY, "s.prod.yaml"))
    web = merged.data["services"]["web"]
    # TZ: null in the overlay deletes nothing in the service (it never had TZ), then defaults add it back
    assert web["env"] == {"TZ": "UTC", "LOG": "warn", "EXTRA": "1"}
    assert [layer.source for layer in merged.provenance[("services", "web", "env", "LOG")]] == [
        "base", "environments.prod"]
    assert merged.provenance[("services", "web", "env", "EXTRA")][0].value.file == "s.prod.yaml"


def test_null_deletes_a_whole_subtree_and_its_provenance() -> None:
    merged = merge(text_doc(BASE), "dev", None)
    assert "models" not in merged.data
    assert not any(path[:1] == ("models",) for path in merged.provenance)
    assert merged.data["services"]["web"]["restart"] == "never"  # defaults changed by the environment
    layers = merged.provenance[("services", "web", "restart")]
    assert [(layer.source, layer.value.line) for layer in layers] == [
        ("defaults", 4), ("defaults (environments.dev)", 28)]


def test_environments_never_reach_the_merged_tree() -> None:
    for env in (None, "prod", "dev"):
        merged = merge(text_doc(BASE), env, None)
        assert "environments" not in merged.data
        assert not any(path[:1] == ("environments",) for path in merged.provenance)


def test_no_environment_is_the_base_plus_defaults() -> None:
    merged = merge(text_doc(BASE), None, None)
    assert merged.data["services"]["web"]["replicas"] == 3
    assert [layer.value.line for layer in merged.provenance[("services", "web", "replicas")]] == [9, 14]
    assert [layer.value.line for layer in merged.provenance[("services", "web", "image")]] == [13]


def test_defaults_merge_under_services() -> None:
    merged = merge(text_doc(BASE), None, None)
    web = merged.data["services"]["web"]
    assert web["restart"] == "always"
    assert web["replicas"] == 3  # the service's own value wins
    assert web["resources"] == {"cpu": 2, "memory": "512Mi", "gpus": 0}  # deep merge
    assert web["env"] == {"LOG": "info", "TZ": "UTC"}
    assert web["ports"] == {"metrics": 9100}
    assert web["health"] == {"tcp": {"port": "metrics"}}
    assert web["depends_on"] == ["llm"]  # a list of the service is never concatenated with defaults
    # a default-provided value points at `defaults`; an overridden one lists the default first
    assert merged.span(("services", "web", "restart")) == Span("s.yaml", 4, 12, 4, 18)
    assert [layer.value.line for layer in merged.provenance[("services", "web", "replicas")]] == [9, 14]
    assert [layer.value.line for layer in merged.provenance[("services", "web", "resources", "memory")]] == [5]
    assert [layer.value.line for layer in merged.provenance[("services", "web", "resources", "cpu")]] == [5, 15]


def test_only_model_relevant_defaults_merge_under_models() -> None:
    merged = merge(text_doc(BASE), None, None)
    llm = merged.data["models"]["llm"]
    assert llm == {
        "source": "org/llm", "params_b": 1, "restart": "always", "replicas": 2, "hosts": ["app-01"],
        "env": {"TZ": "UTC"},
        "resources": {"memory": "8Gi", "cpu": 1},  # no `gpus`: a model's GPUs are its tensor_parallel
    }
    assert ("models", "llm", "ports") not in merged.provenance
    assert ("models", "llm", "resources", "gpus") not in merged.provenance


def test_model_without_resources_gets_only_cpu_and_memory() -> None:
    base = text_doc("defaults:\n  resources: {cpu: 1, memory: 1Gi, gpus: 2}\nmodels:\n  m: {source: x}\n")
    assert merge(base, None, None).data["models"]["m"]["resources"] == {"cpu": 1, "memory": "1Gi"}


def test_defaults_are_copied_per_service() -> None:
    base = text_doc("defaults:\n  env: {A: '1'}\nservices:\n  a: {}\n  b: {}\n")
    merged = merge(base, None, None)
    a, b = merged.data["services"]["a"], merged.data["services"]["b"]
    assert a["env"] == b["env"] == {"A": "1"}
    assert a["env"] is not b["env"]
    assert merged.provenance[("services", "b", "env", "A")] == [
        layer._replace(source="defaults") for layer in merged.provenance[("defaults", "env", "A")]]


def test_defaults_set_by_an_overlay_file() -> None:
    merged = merge(text_doc(BASE), "prod", text_doc("defaults: {restart: on-failure}\n", "s.prod.yaml"))
    assert merged.data["services"]["web"]["restart"] == "on-failure"
    assert merged.span(("services", "web", "restart")) == Span("s.prod.yaml", 1, 21, 1, 31)


def test_merge_never_changes_the_base_document() -> None:
    base, overlay = text_doc(BASE), text_doc(OVERLAY, "s.prod.yaml")
    before = copy.deepcopy(base.data)
    prod = merge(base, "prod", overlay)
    dev = merge(base, "dev", None)
    assert base.data == before
    # one environment's merge never leaks into another's
    assert merge(base, "prod", overlay).data == prod.data
    assert dev.data["services"]["web"]["replicas"] == 3
    assert dev.data["services"]["web"]["env"] == {"LOG": "info", "TZ": "UTC"}
    prod.data["services"]["web"]["env"]["X"] = "y"
    assert "X" not in merge(base, "prod", overlay).data["services"]["web"]["env"]


def test_added_mapping_with_nulls_drops_them() -> None:
    merged = merge(text_doc("a: 1\n"), "e", text_doc("b: {c: null, d: 1}\n", "s.e.yaml"))
    assert merged.data == {"a": 1, "b": {"d": 1}}
    assert ("b", "c") not in merged.provenance


def test_nulls_inside_sequences_are_values() -> None:
    # RFC 7386 replaces a sequence whole, as it is: only mappings lose their null members
    merged = merge(text_doc("a: 1\n"), "e", text_doc("l: [{b: null, c: 1}, null]\nm: {n: [null]}\n", "s.e.yaml"))
    assert merged.data == {"a": 1, "l": [{"b": None, "c": 1}, None], "m": {"n": [None]}}
    _assert_provenance_complete(merged)


def test_scalar_replaced_by_mapping_and_back() -> None:
    merged = merge(text_doc("a: {b: 1, c: 2}\n"), "e", text_doc("a: 3\n", "s.e.yaml"))
    assert merged.data == {"a": 3}
    assert set(merged.provenance) == {(), ("a",)}
    assert [layer.source for layer in merged.provenance[("a",)]] == ["base", "overlay"]
    merged = merge(text_doc("a: 3\n"), "e", text_doc("a: {b: 1}\n", "s.e.yaml"))
    assert merged.data == {"a": {"b": 1}}
    assert merged.provenance[("a", "b")][0].value.file == "s.e.yaml"


def test_span_falls_back_to_the_nearest_key() -> None:
    merged = merge(text_doc("services:\n  web:\n    image: x\n"), None, None)
    # a missing value is shown at the name of what lacks it
    assert merged.span(("services", "web", "ports", "http")) == Span("s.yaml", 2, 3, 2, 6)
    assert merged.span(("nothing",)) == Span("s.yaml", 1, 1, 1, 2)


def test_environment_that_is_not_a_mapping() -> None:
    with pytest.raises(MergeFailed) as info:
        merge(text_doc("a: 1\nenvironments:\n  e: [x]\n"), "e", None)
    (d,) = info.value.diagnostics
    assert d.code == "HX108"
    assert d.span == Span("s.yaml", 3, 6, 3, 9)


def test_environment_names_must_be_dns_labels() -> None:
    # `environments` is merged away before the schema sees the tree: its names are checked by the merge
    with pytest.raises(MergeFailed) as info:
        merge(text_doc("a: 1\nenvironments:\n  Prod: {}\n  ok-1: {}\n  -x: {}\n"), "ok-1", None)
    assert [(d.code, d.span) for d in info.value.diagnostics] == [
        ("HX206", Span("s.yaml", 3, 3, 3, 7)), ("HX206", Span("s.yaml", 5, 3, 5, 5))]


def test_environments_must_be_a_mapping() -> None:
    with pytest.raises(MergeFailed) as info:
        merge(text_doc("a: 1\nenvironments: [dev]\n"), None, None)
    (d,) = info.value.diagnostics
    assert (d.code, d.span) == ("HX108", Span("s.yaml", 2, 15, 2, 20))


def test_empty_inline_environment_is_allowed() -> None:
    assert merge(text_doc("a: 1\nenvironments:\n  e:\n"), "e", None).data == {"a": 1}


def test_overlay_file_cannot_declare_environments() -> None:
    with pytest.raises(MergeFailed) as info:
        merge(text_doc("a: 1\n"), "e", text_doc("a: 2\nenvironments: {}\n", "s.e.yaml"))
    (d,) = info.value.diagnostics
    assert d.code == "HX108"
    assert d.span == Span("s.e.yaml", 2, 1, 2, 13)


def test_environments_in() -> None:
    assert environments_in(text_doc(BASE)) == ["dev", "prod"]
    assert environments_in(text_doc("a: 1\n")) == []
    assert environments_in(text_doc("environments: [x]\n")) == []
