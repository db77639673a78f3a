"""Validation: pydantic errors mapped to HX codes and to the span of the layer that set the value."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import ValidationError

from hxpc.compiler.load import load_document
from hxpc.compiler.merge import merge
from hxpc.compiler.pipeline import environments, resolve_env
from hxpc.compiler.spec import pydantic_adapter
from hxpc.compiler.validate import _model_at, validate
from hxpc.diagnostics import Diagnostic, Span
from hxpc.sources import FileSources

REPO = Path(__file__).resolve().parents[2]

HEAD = "apiVersion: hxpc/v1\nproject: demo\n"  # two lines: bodies start at line 3


def check(body: str, overlay: str | None = None) -> list[Diagnostic]:
    base = load_document(HEAD + body, "s.yaml")
    over = load_document(overlay, "s.e.yaml") if overlay is not None else None
    stack, found = validate(merge(base, "e" if over else None, over))
    assert (stack is None) == any(d.code < "HX300" for d in found)
    return found


def one(body: str, overlay: str | None = None) -> Diagnostic:
    found = check(body, overlay)
    assert len(found) == 1, found
    return found[0]


def where(d: Diagnostic) -> tuple[str, int, int]:
    assert d.span is not None
    return d.span.file, d.span.line, d.span.col


def test_the_example_spec_is_valid_in_every_environment() -> None:
    sources = FileSources(str(REPO / "specs" / "hxp.yaml"))
    assert environments(sources) == ["dev", "prod", "staging"]
    for env in environments(sources):
        assert resolve_env(sources, env).stack.env == env


@pytest.mark.parametrize(("body", "field", "hint"), [
    ("servics: {}\n", "servics", "did you mean `services`?"),
    ("services:\n  web: {image: x, imag: y}\n", "imag", "did you mean `image`?"),
    ("services:\n  web:\n    image: x\n    health: {http: {port: p, pth: /}}\n", "pth", "did you mean `path`?"),
    ("targets:\n  systemd: {runtme: docker}\n", "runtme", "did you mean `runtime`?"),
    ("hosts:\n  h: {gpus: {count: 1, model: x, memory: 1Gi, mem: 1}}\n", "mem", "did you mean `memory`?"),
    ("defaults: {replica: 2}\n", "replica", "did you mean `replicas`?"),
    ("monitoring: {alert: true}\n", "alert", "did you mean `alerts`?"),
    ("secrets:\n  s: {env: X, path: /x}\n", "path", "allowed here: `env`, `file`"),
])
def test_unknown_fields_suggest_the_field_meant(body: str, field: str, hint: str) -> None:
    found = check(body)
    (d,) = [d for d in found if d.code == "HX201"]
    assert d.message.startswith(f"unknown field `{field}` in ")
    assert d.hint == hint
    # the span is the key that is unknown
    line = (HEAD + body).splitlines()[where(d)[1] - 1]
    assert line[where(d)[2] - 1:].startswith(field)


def test_unknown_field_of_a_model_lists_the_model_fields() -> None:
    d = one("models:\n  m: {source: x, params_b: 1, zzzzzz: 1}\n")
    assert d.code == "HX201"
    assert d.hint is not None and "`tensor_parallel`" in d.hint and "`ports`" not in d.hint


# (body, code, text the span starts at on line 4 of the file)
@pytest.mark.parametrize(("body", "code", "at"), [
    ("services:\n  web: {replicas: -1}\n", "HX208", "-1}"),
    ("services:\n  web: {replicas: 1.5}\n", "HX202", "1.5"),
    ("services:\n  web: {depends_on: db}\n", "HX202", "db}"),
    ("services:\n  web: {image: 123}\n", "HX202", "123"),
    ("services:\n  web: {health: {exec: []}}\n", "HX208", "[]"),
    ("services:\n  web: {resources: {gpus: -1}}\n", "HX208", "-1"),
    ("services:\n  web: {health: {exec: [x], interval: 5}}\n", "HX203", "5}"),
    ("services:\n  web: {volumes: {data: {path: /d, size: lots}}}\n", "HX204", "lots"),
    ("hosts:\n  h: {cpu: 0}\n", "HX205", "0}"),
    ("hosts:\n  h_1: {}\n", "HX206", "h_1"),
    ("services:\n  web: {depends_on: [Db]}\n", "HX206", "Db"),
    ("services:\n  web: {secrets: {X: Bad_Name}}\n", "HX206", "Bad_Name"),
    ("models:\n  m: {params_b: 1}\n", "HX207", "m:"),
    ("models:\n  m: {source: x, params_b: 0}\n", "HX208", "0}"),
    ("models:\n  m: {source: x, params_b: 1, quantization: q4}\n", "HX209", "q4"),
    ("hosts:\n  h: {gpus: {count: 1, model: x}}\n", "HX207", "gpus"),
    ("secrets:\n  s: {}\n", "HX210", "{}"),
    ("secrets:\n  s: {file: relative/path}\n", "HX210", "{file"),
    ("services:\n  web: {slo: {availability: 100}}\n", "HX208", "100"),
])
def test_schema_errors_point_at_the_value(body: str, code: str, at: str) -> None:
    d = one(body)
    line = (HEAD + body).splitlines()[3]
    assert (d.code, where(d)) == (code, ("s.yaml", 4, line.index(at) + 1)), d


def test_a_number_where_text_is_wanted_hints_at_quoting() -> None:
    d = one("services:\n  web: {image: 123}\n")
    assert d.hint == 'quote the value to make it text, e.g. "8080"'
    assert d.message.startswith("services.web.image: input should be a valid string")


def test_environment_values_accept_numbers_and_booleans() -> None:
    found = check("services:\n  web: {image: x, env: {PORT: 8080, DEBUG: false, RATIO: 0.5}}\n"
                  "targets: {kubernetes: {}}\n")
    assert found == []


def test_literal_errors_suggest_or_list() -> None:
    assert one("models:\n  m: {source: x, params_b: 1, dtype: float61}\n").hint == "did you mean `float16`?"
    hint = one("targets:\n  systemd: {runtime: rkt}\n").hint
    assert hint is not None and "docker" in hint and "podman" in hint and "native" in hint


def test_missing_field_points_at_the_name_that_lacks_it() -> None:
    d = one("models:\n  llm:\n    params_b: 1\n")
    assert d.message == "models.llm is missing the required field `source`"
    assert where(d) == ("s.yaml", 4, 3)
    assert d.hint == "add `source:`"


def test_errors_in_an_overlay_point_into_the_overlay() -> None:
    d = one("services:\n  web: {image: x, replicas: 1}\n", overlay="services:\n  web:\n    replicas: many\n")
    assert d.code == "HX202"
    assert where(d) == ("s.e.yaml", 3, 15)


def test_unknown_field_from_an_overlay_points_at_its_key() -> None:
    d = one("services:\n  web: {image: x}\n", overlay="services: {web: {replics: 2}}\n")
    assert (d.code, where(d)) == ("HX201", ("s.e.yaml", 1, 18))
    assert d.hint == "did you mean `replicas`?"


def test_error_in_defaults_is_reported_once_at_the_default() -> None:
    base = load_document(HEAD + "defaults: {restart: sometimes}\nservices:\n  a: {}\n  b: {}\n", "s.yaml")
    _, found = validate(merge(base, None, None))
    # pydantic reports it for `defaults`, `a` and `b`; every report points at the same place
    assert {(d.code, where(d)) for d in found} == {("HX209", ("s.yaml", 3, 21))}


def test_semantic_checks_run_only_on_a_schema_valid_stack() -> None:
    found = check("services:\n  web: {image: x, replics: 2, depends_on: [nope]}\n")
    assert [d.code for d in found] == ["HX201"]


def test_model_at() -> None:
    from hxpc.compiler.spec import Health, HttpCheck, LlmModel, Service, Stack
    from hxpc.compiler.targets.systemd import SystemdTarget

    assert _model_at(()) is Stack
    assert _model_at(("services", "web")) is Service
    assert _model_at(("models", "m")) is LlmModel
    assert _model_at(("services", "web", "health")) is Health
    assert _model_at(("services", "web", "health", "http")) is HttpCheck
    assert _model_at(("targets", "systemd")) is SystemdTarget
    assert _model_at(("services", "web", "ports")) is None
    assert _model_at(("nothing",)) is None


def test_models_are_frozen_and_refuse_unknown_fields() -> None:
    stack = pydantic_adapter().validate_python({"apiVersion": "hxpc/v1", "project": "demo"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        stack.project = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        pydantic_adapter().validate_python({"apiVersion": "hxpc/v1", "project": "demo", "x": 1})


def test_units_are_parsed_into_numbers() -> None:
    stack = pydantic_adapter().validate_python({
        "apiVersion": "hxpc/v1", "project": "demo",
        "hosts": {"h": {"cpu": "500m", "memory": "1.5G", "gpus": {"count": 1, "model": "L4", "memory": "24Gi"}}},
        "services": {"web": {"image": "x", "health": {"exec": ["true"], "interval": "1m30s"}}},
    })
    host = stack.hosts["h"]
    assert (host.cpu, host.memory) == (500, 1_500_000_000)
    assert host.gpus is not None and host.gpus.memory == 24 * 2**30
    health = stack.services["web"].health
    assert health is not None and (health.interval, health.timeout) == (90_000, 3_000)


def test_diagnostic_spans_are_real_places() -> None:
    text = HEAD + "services:\n  Web: {replicas: x, restart: maybe, zz: 1}\n"
    for d in check("services:\n  Web: {replicas: x, restart: maybe, zz: 1}\n"):
        assert d.span is not None and d.span.file == "s.yaml"
        assert 1 <= d.span.line <= len(text.splitlines())
        assert isinstance(d.span, Span)
