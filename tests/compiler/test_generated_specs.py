"""Hypothesis on whole specs: generated valid ones compile and their artifacts pass the validators the golden
ones pass; mutated ones (valid specs and the examples, changed byte by byte) are accepted or refused with a
located error, never a crash.

A fixed small budget keeps the suite fast on two cores; `pytest --hypothesis-profile=long` (registered in
conftest.py) runs many more examples.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from conftest import example_specs, require_tool, shared_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from strategies import specs
from unitroot import UNIT_LIBRARY, unit_root

from hxpc.compiler import yamlout
from hxpc.compiler.compile import compile_env
from hxpc.compiler.pipeline import resolve_env
from hxpc.main import run
from hxpc.sources import FileSources

LONG = settings.default.max_examples >= 1000  # the `long` profile
VALID_EXAMPLES = settings.default.max_examples // 10 if LONG else 6
MUTATIONS = settings.default.max_examples if LONG else 40
COMPOSE = jsonschema.Draft7Validator(json.loads((shared_dir() / "schemas" / "compose-spec.json").read_text()))
_HEADER = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):(?P<col>\d+): error\[HX\d{3}\]: ")


def _write(spec: dict[str, Any], directory: Path) -> Path:
    if spec["monitoring"] is None:
        spec = {k: v for k, v in spec.items() if k != "monitoring"}
    path = directory / "gen.yaml"
    path.write_text(yamlout.dump(spec))
    return path


def _systemd_verify(root: Path, library: Path, files: dict[str, str], programs: set[str]) -> None:
    tool = require_tool("systemd-analyze")
    unit_root(root, library, files, tuple(programs))
    units = sorted([f for f in files if f.endswith(".service") and "@." not in f and "/" not in f]
                   + [f.split("/")[0].removesuffix(".d") for f in files if f.endswith(".service.d/replica.conf")])
    if not units:
        return
    done = subprocess.run([tool, "verify", "--man=no", "--generators=no", f"--root={root}", *units],
                          capture_output=True, text=True, timeout=300)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and not output, f"systemd-analyze verify:\n{output}"


@pytest.fixture(scope="module")
def unit_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    require_tool("systemd-analyze")
    dest = tmp_path_factory.mktemp("units") / "system"
    shutil.copytree(UNIT_LIBRARY, dest, symlinks=True)
    return dest


@settings(max_examples=VALID_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=specs())
def test_generated_specs_compile_to_artifacts_the_real_validators_accept(spec: dict[str, Any], tmp_path: Path,
                                                                        unit_library: Path) -> None:
    path = _write(spec, tmp_path)
    files = compile_env(resolve_env(FileSources(str(path)), "default"), "gen.yaml").files
    loader = YAML(typ="safe")
    by_host: dict[str, dict[str, str]] = {}
    rules: list[str] = []
    for name, text in files.items():
        if "/systemd/" in name:
            _, _, host, rel = name.split("/", 3)
            by_host.setdefault(host, {})[rel] = text
        elif name.endswith("compose/compose.yaml"):
            errors = sorted(COMPOSE.iter_errors(loader.load(text)), key=str)
            assert not errors, f"{name}: {errors[0].message}"
        elif "/kubernetes/" in name:
            for document in (d for d in loader.load_all(text) if d is not None):
                kubernetes_validate.validate(document, "1.30.0", strict=True)
        elif name.endswith("prometheus/rules.yaml"):
            (tmp_path / "rules.yaml").write_text(text)
            rules.append(str(tmp_path / "rules.yaml"))
    programs = {s["exec"][0] for s in spec["services"].values()}
    for host, host_files in sorted(by_host.items()):
        _systemd_verify(tmp_path / "root" / host, unit_library, host_files, programs)
    for rule_file in rules:
        done = subprocess.run([require_tool("promtool"), "check", "rules", rule_file], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


_NOISE = st.sampled_from(["[", "]", "{", "}", ":", ": ", "- ", "\n", "\n  ", "  ", "'", '"', "&a", "*a", "!!int ",
                          "#", "\t", "\x00", "\x07", "é", "\ufeff", "9" * 40, "-1", "1e999", ".nan", "null", "~",
                          "<<: ", "---\n", "? ", "|\n", "\\x00", "[" * 80, "{a: " * 70])


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, int, int, str]]:
    """Edits of a text: (kind, position, length, inserted), positions as fractions of the text's length."""
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate-line", "drop-line"]))
        edits.append((kind, draw(st.integers(0, 10_000)), draw(st.integers(1, 40)), draw(_NOISE)))
    return edits


def _mutate(text: str, edits: list[tuple[str, int, int, str]]) -> str:
    for kind, where, length, noise in edits:
        at = where * len(text) // 10_000
        if kind == "insert":
            text = text[:at] + noise + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + length:]
        elif kind == "replace":
            text = text[:at] + noise + text[at + length:]
        else:
            lines = text.splitlines(keepends=True)
            if lines:
                i = min(len(lines) - 1, where * len(lines) // 10_000)
                lines[i:i + 1] = [lines[i], lines[i]] if kind == "duplicate-line" else []
            text = "".join(lines)
    return text


SEEDS = [p.read_text() for p in example_specs()]


@settings(max_examples=MUTATIONS, deadline=None, suppress_health_check=list(HealthCheck))
@given(base=st.one_of(st.sampled_from(SEEDS), specs().map(lambda s: yamlout.dump(
    {k: v for k, v in s.items() if v is not None}))), edits=mutations())
def test_mutated_specs_are_accepted_or_refused_with_a_located_error(base: str, edits: list[tuple[str, int, int, str]],
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "m.yaml"
    spec.write_text(_mutate(base, edits), encoding="utf-8")
    capsys.readouterr()
    code = run(["validate", str(spec)])
    _, err = capsys.readouterr()
    assert code in (0, 3), err
    assert "internal error" not in err and "Traceback" not in err, err
    if code == 3:
        headers = [line for line in err.splitlines() if "error[HX" in line and not line.startswith(" ")]
        assert headers, err
        for line in headers:
            assert _HEADER.match(line) and line.startswith(str(spec)), f"not located: {line}"
        return
    code = run(["compile", str(spec), "-o", str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert code in (0, 3) and "internal error" not in err, err
