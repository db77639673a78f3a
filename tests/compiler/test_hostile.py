"""Hostile input: every limit of hxpc/limits.py is refused with its own HX code at file:line, never a crash.

The deep-nesting cases run `hxpc validate` in a subprocess: before the limit
existed, 50,000 levels killed the process with SIGSEGV (the C composer
recursing), which no in-process test could observe.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hxpc import limits
from hxpc.cli import main
from hxpc.compiler import load, merge
from hxpc.compiler.load import LoadFailed, load_document
from hxpc.compiler.pipeline import environments, resolve_env
from hxpc.errors import SpecError
from hxpc.sources import FileSources

HEAD = "apiVersion: hxpc/v1\nproject: demo\n"
WEB = "services:\n  web:\n    image: nginx:1.27\n"


def _hxpc(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hxpc", *args], capture_output=True, text=True, timeout=timeout)


def _codes(text: str) -> list[tuple[str, int, int]]:
    with pytest.raises(LoadFailed) as caught:
        load_document(text, "s.yaml")
    return [(d.code, d.span.line, d.span.col) for d in caught.value.diagnostics if d.span is not None]


@pytest.mark.parametrize(("name", "text", "line"), [
    ("flow sequences 50,000 deep", HEAD + WEB + "    args: " + "[" * 50_000 + "]" * 50_000 + "\n", 6),
    ("flow mappings 3,000 deep", HEAD + WEB + "    env: " + "{a: " * 3_000 + "1" + "}" * 3_000 + "\n", 6),
    ("block mappings 3,000 deep", HEAD + "x:\n" + "".join(" " * i + "a:\n" for i in range(1, 3_000)), 67),
    ("flow sequences 500 deep, unclosed", HEAD + "x: " + "[" * 500 + "\n", 3),
])
def test_deep_nesting_is_refused_in_a_subprocess_without_a_signal(tmp_path: Path, name: str, text: str,
                                                                 line: int) -> None:
    spec = tmp_path / "deep.yaml"
    spec.write_text(text)
    done = _hxpc("validate", str(spec))
    assert done.returncode == 3, (name, done.returncode, done.stderr[-2000:])
    assert f"{spec}:{line}:" in done.stderr and "error[HX112]" in done.stderr, done.stderr[:500]
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr


def test_the_depth_limit_is_exact_and_the_deepest_allowed_file_loads() -> None:
    def nested(depth: int) -> str:  # the root mapping is level 1
        inner = depth - 1
        return "x: " + "[" * inner + "]" * inner + "\n"

    assert load_document(nested(limits.MAX_DEPTH), "s.yaml").data["x"] is not None
    assert _codes(nested(limits.MAX_DEPTH + 1)) == [("HX112", 1, 3 + limits.MAX_DEPTH)]


def test_brackets_inside_quoted_text_do_not_count_as_nesting() -> None:
    text = "a: '" + "[" * 200 + "'\nb: \"" + "{" * 200 + "\"\nc: '" + "]" * 300 + "'\n"
    assert load_document(text, "s.yaml").data["a"] == "[" * 200


def test_aliases_cannot_nest_deeper_than_the_text() -> None:
    levels = 30
    lines = ["a0: &a0 [1]"] + [f"a{i}: &a{i} " + "[" * levels + f"*a{i - 1}" + "]" * levels for i in range(1, 4)]
    [(code, _, _)] = _codes("\n".join(lines) + "\n")
    assert code == "HX112"


def test_an_alias_bomb_stays_hx109() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(7)]
    [(code, _, _)] = _codes("\n".join(lines) + "\n")
    assert code == "HX109"


def test_too_many_values_without_aliases_is_hx113(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "MAX_VALUES", 1_000)
    [(code, line, _)] = _codes("x:\n" + "".join(f"  - {i}\n" for i in range(1_200)))
    assert code == "HX113" and line == 1_000


def test_the_real_value_limit_is_reached_in_seconds(tmp_path: Path) -> None:
    spec = tmp_path / "many.yaml"
    per_line = 100
    rows = limits.MAX_VALUES // per_line + 10
    spec.write_text(HEAD + "x:\n" + "".join("  - [" + "0," * (per_line - 1) + "0]\n" for _ in range(rows)))
    assert spec.stat().st_size < limits.MAX_FILE_BYTES
    started = time.monotonic()
    done = _hxpc("validate", str(spec))
    assert done.returncode == 3 and "error[HX113]" in done.stderr, done.stderr[-500:]
    assert time.monotonic() - started < 120


@pytest.mark.parametrize(("raw", "where", "code"), [
    (b"apiVersion: hxpc/v1\nproject: demo\x00\n", "2:14", "HX111"),
    (b"apiVersion: hxpc/v1\nproject: demo\nservices: {web: {image: \x07nginx}}\n", "3:25", "HX111"),
    (b"apiVersion: hxpc/v1\nproject: demo\nservices: {web: {image: \"a\\x1bb\"}}\n", "3:25", "HX111"),
    (b"apiVersion: hxpc/v1\nproject: d\xe9mo\n", "2:11", "HX106"),
    (b"apiVersion: hxpc/v1\nproject: demo\nservices: {web: {image: x, replicas: " + b"9" * 5_000 + b"}}\n",
     "3:38", "HX208"),
])
def test_bad_bytes_and_characters_are_located(tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: bytes,
                                              where: str, code: str) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_bytes(raw)
    assert main(["validate", str(spec)]) == 3
    err = capsys.readouterr().err
    assert f"{spec}:{where}: error[{code}]" in err, err
    assert "internal error" not in err


def test_a_file_above_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    with spec.open("wb") as handle:
        handle.write(HEAD.encode())
        handle.truncate(limits.MAX_FILE_BYTES + 1)  # sparse: the limit is checked before reading it whole
    with pytest.raises(SpecError) as caught:
        environments(FileSources(str(spec)))
    [d] = caught.value.diagnostics
    assert d.code == "HX110" and d.span is not None and (d.span.line, d.span.col) == (1, 1)
    assert f"{limits.MAX_FILE_BYTES + 1:,} bytes" in d.message


@pytest.mark.parametrize(("fragment", "message"), [
    ("replicas: 1000000000000000000000000000000", "digits"),
    ("replicas: 1000000000000000000000000000", "less than or equal to 1000"),
    ("replicas: 1001", "less than or equal to 1000"),
    ("resources: {gpus: 100000}", "less than or equal to 256"),
    ("health: {tcp: {port: http}, interval: 100000000h}", "largest duration"),
    ("health: {tcp: {port: http}, interval: " + "1" * 200 + "s}", "characters long"),
    ("resources: {memory: 99999999999Ei}", "largest size"),
    ("resources: {cpu: 100000000000}", "largest cpu"),
    ("health: {tcp: {port: http}, retries: 100000000}", "less than or equal to 1000"),
])
def test_no_number_makes_validate_work_for_long(tmp_path: Path, fragment: str, message: str) -> None:
    spec = tmp_path / "n.yaml"
    spec.write_text(HEAD + WEB + "    ports: {http: 8080}\n    " + fragment + "\ntargets: {compose: {}}\n")
    started = time.monotonic()
    done = _hxpc("validate", str(spec), timeout=60)
    assert done.returncode == 3 and message in done.stderr, done.stderr
    assert f"{spec}:7:" in done.stderr
    assert time.monotonic() - started < 30


def test_model_numbers_are_bounded(tmp_path: Path) -> None:
    spec = tmp_path / "m.yaml"
    spec.write_text(HEAD + "models:\n  m: {source: org/m, params_b: 1e12, tensor_parallel: 4096, "
                           "max_model_len: 99999999999}\nhosts:\n  h: {gpus: {count: 100000, model: x, memory: 1Gi}}\n")
    with pytest.raises(SpecError) as caught:
        resolve_env(FileSources(str(spec)), "default")
    assert sorted((d.code, d.span.line if d.span else 0) for d in caught.value.diagnostics) == [
        ("HX208", 4), ("HX208", 4), ("HX208", 4), ("HX208", 6)]


def test_replicas_across_services_are_bounded_before_placement(tmp_path: Path) -> None:
    spec = tmp_path / "r.yaml"
    many = limits.MAX_TOTAL_REPLICAS // limits.MAX_REPLICAS + 1
    spec.write_text(HEAD + "services:\n" + "".join(f"  s{i}: {{image: x, replicas: {limits.MAX_REPLICAS}}}\n"
                                                   for i in range(many)))
    with pytest.raises(SpecError) as caught:
        resolve_env(FileSources(str(spec)), "default")
    [d] = caught.value.diagnostics
    assert d.code == "HX315" and d.span is not None and d.span.line == 4


def test_defaults_under_every_service_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merge, "MAX_MERGED_VALUES", 10_000)
    spec = tmp_path / "d.yaml"
    spec.write_text(HEAD + "defaults:\n  env:\n" + "".join(f"    V{i}: x\n" for i in range(200))
                    + "services:\n" + "".join(f"  s{i}: {{image: x}}\n" for i in range(100)))
    with pytest.raises(SpecError) as caught:
        resolve_env(FileSources(str(spec)), "default")
    [d] = caught.value.diagnostics
    assert d.code == "HX113" and d.span is not None and d.span.line == 3


def test_environments_are_bounded(tmp_path: Path) -> None:
    spec = tmp_path / "e.yaml"
    spec.write_text(HEAD + WEB + "environments:\n" + "".join(f"  e{i}: {{}}\n" for i in range(10_000)))
    started = time.monotonic()
    done = _hxpc("validate", str(spec))
    assert done.returncode == 3 and f"{spec}:6:1: error[HX208]" in done.stderr, done.stderr
    assert time.monotonic() - started < 60


def test_the_deepest_allowed_values_go_through_every_command(tmp_path: Path) -> None:
    """Nothing after loading recurses without bound: merge, validate, compile, explain at the depth limit."""
    inner = limits.MAX_DEPTH - 4  # root > monitoring > rules > [item] > value
    deep = "[" * inner + "]" * inner
    spec = tmp_path / "d.yaml"
    spec.write_text(HEAD + WEB + f"monitoring:\n  rules:\n    - {{name: g, rules: {deep}}}\n"
                    f"environments:\n  prod:\n    monitoring: {{rules: [{{name: g, rules: {deep}}}]}}\n"
                    "targets: {compose: {}}\n")
    for args in (["validate", str(spec)], ["compile", str(spec), "-o", str(tmp_path / "out")],
                 ["explain", str(spec), "--env", "prod", "monitoring.rules"]):
        done = _hxpc(*args)
        assert done.returncode in (0, 3), (args, done.stderr[-1000:])
        assert "internal error" not in done.stderr and "Traceback" not in done.stderr
