"""The corpus of invalid specs: each file carries one problem and the HX code and line it must produce.

A case is a spec `tests/corpus/invalid/<name>.yaml`, plus any overlay files
`<name>.<env>.yaml` beside it. Exactly one of those files holds the expectation:

- inline, on the offending line: `    replics: 2   # expect: HX201` (the line is the comment's line);
- or as a header where an inline comment is impossible: `# expect: HX101 line 5`.

Optional header comments: `# env: prod` (resolve only that environment; default: all of them),
`# hint: ...` (a substring of the diagnostic's hint), `# message: ...` (a substring of its message).
Every reported problem must be the expected one: the corpus holds one problem per file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hxpc.cli import main
from hxpc.compiler.pipeline import environments, resolve_env
from hxpc.diagnostics import CODES, Diagnostic
from hxpc.errors import SpecError
from hxpc.sources import FileSources

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "invalid"

_EXPECT = re.compile(r"#\s*expect:\s*(HX\d{3})(?:\s+line\s+(\d+))?\s*$")
_HEADER = re.compile(r"^#\s*(env|hint|message):\s*(.+?)\s*$")
# codes that no single spec file can produce, or only one too large to keep here: tested outside the corpus
# (HX110 and HX113 in tests/compiler/test_hostile.py)
_NOT_IN_FILE = {"HX106", "HX107", "HX110", "HX113"}


@dataclass(frozen=True)
class Case:
    spec: Path
    file: Path  # the file that carries the expectation (the spec or one of its overlays)
    code: str
    line: int
    env: str | None
    hints: tuple[str, ...] = field(default=())
    messages: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        return self.spec.stem


def _is_overlay(path: Path) -> bool:
    stem = path.name[: -len(".yaml")]
    return "." in stem and (path.parent / f"{stem.split('.', 1)[0]}.yaml").exists()


def _read_case(spec: Path) -> Case:
    files = [spec, *sorted(p for p in spec.parent.glob(f"{spec.stem}.*.yaml") if _is_overlay(p))]
    expectations: list[tuple[Path, str, int]] = []
    headers: dict[str, list[str]] = {"env": [], "hint": [], "message": []}
    for path in files:
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if (found := _EXPECT.search(text)) is not None:
                expectations.append((path, found.group(1), int(found.group(2) or number)))
            elif (header := _HEADER.match(text)) is not None:
                headers[header.group(1)].append(header.group(2))
    assert len(expectations) == 1, f"{spec.name}: expected one `# expect:` comment, found {expectations}"
    (file, code, line), = expectations
    envs = headers["env"]
    return Case(spec, file, code, line, envs[0] if envs else None, tuple(headers["hint"]), tuple(headers["message"]))


CASES = [_read_case(p) for p in sorted(CORPUS.glob("*.yaml")) if not _is_overlay(p)]


def _problems(case: Case) -> list[SpecError]:
    """Every SpecError raised while resolving the case's environments (all of them unless the header names one)."""
    sources = FileSources(str(case.spec))
    raised: list[SpecError] = []
    try:
        envs = [case.env] if case.env else environments(sources)
    except SpecError as exc:  # load errors stop before any environment is merged
        return [exc]
    for env in envs:
        try:
            resolve_env(sources, env)
        except SpecError as exc:
            raised.append(exc)
    return raised


@pytest.mark.parametrize("case", CASES, ids=str)
def test_invalid_spec(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    raised = _problems(case)
    assert raised, f"{case.spec.name} resolved without errors"
    assert all(exc.exit_code == 3 for exc in raised)
    found: list[Diagnostic] = [d for exc in raised for d in exc.diagnostics]
    places = {(d.code, d.span.file if d.span else None, d.span.line if d.span else None) for d in found}
    assert places == {(case.code, str(case.file), case.line)}, "\n".join(str(d) for d in found)
    diagnostic = found[0]
    assert diagnostic.span is not None
    for hint in case.hints:
        assert hint in (diagnostic.hint or ""), diagnostic.hint
    for message in case.messages:
        assert message in diagnostic.message

    # the command line reports the same problem: location, code, source line, caret; exit 3; no traceback
    code = main(["validate", str(case.spec)])
    out, err = capsys.readouterr()
    assert code == 3, err
    assert "Traceback" not in out + err
    assert out == ""
    span = diagnostic.span
    header = f"{case.file}:{span.line}:{span.col}: error[{case.code}]: {diagnostic.message}"
    lines = err.splitlines()
    assert header in lines, err
    at = lines.index(header)
    source = case.file.read_text(encoding="utf-8").splitlines()[span.line - 1]
    gutter = str(span.line)
    assert lines[at + 2] == f" {gutter} | {source}"
    caret = lines[at + 3]
    assert caret.startswith(f" {' ' * len(gutter)} | ")
    assert caret[len(gutter) + 4:].index("^") == span.col - 1, caret
    for hint in case.hints:
        assert any(line.startswith("  = help: ") and hint in line for line in lines[at:]), err
    assert err.endswith("nothing was changed\n")


def test_corpus_covers_every_in_file_code() -> None:
    # HX323 and HX324 are warnings: validation passes with them (tests/compiler/test_kvcheck.py)
    wanted = {c for c in CODES if "HX101" <= c <= "HX315" or "HX320" <= c <= "HX322"} - _NOT_IN_FILE
    assert wanted - {case.code for case in CASES} == set()


def test_overlay_cases_point_into_the_overlay() -> None:
    # the corpus must keep exercising provenance into overlay files
    assert any(case.file != case.spec for case in CASES)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = "apiVersion: hxpc/v1\nproject: demo\nservices:\n  web: {image: nginx:1.27}\ntargets: {compose: {}}\n"


def test_hx106_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        environments(FileSources(str(missing)))
    assert [d.code for d in info.value.diagnostics] == ["HX106"]
    assert str(missing) in info.value.diagnostics[0].message
    assert main(["validate", str(missing)]) == 3
    out, err = capsys.readouterr()
    assert "error[HX106]: cannot read" in err
    assert "Traceback" not in out + err


def test_hx106_not_utf8(tmp_path: Path) -> None:
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes(b"apiVersion: hxpc/v1\nproject: caf\xe9\n")
    with pytest.raises(SpecError) as info:
        resolve_env(FileSources(str(spec)), "default")
    assert [d.code for d in info.value.diagnostics] == ["HX106"]
    assert info.value.exit_code == 3


def test_hx107_unknown_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _write(tmp_path / "s.yaml", MINIMAL + "environments:\n  prod: {}\n  dev: {}\n")
    with pytest.raises(SpecError) as info:
        resolve_env(FileSources(str(spec)), "prd")
    (d,) = info.value.diagnostics
    assert d.code == "HX107"
    assert d.hint == "did you mean `prod`?"
    assert main(["validate", str(spec), "--env", "prd"]) == 3
    _, err = capsys.readouterr()
    assert "error[HX107]: environment `prd` is not declared" in err
    assert "= help: did you mean `prod`?" in err


def test_hx107_spec_without_environments_has_only_default(tmp_path: Path) -> None:
    spec = _write(tmp_path / "s.yaml", MINIMAL)
    assert environments(FileSources(str(spec))) == ["default"]
    resolve_env(FileSources(str(spec)), "default")
    with pytest.raises(SpecError) as info:
        resolve_env(FileSources(str(spec)), "prod")
    assert [d.code for d in info.value.diagnostics] == ["HX107"]


def test_all_problems_are_reported_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _write(tmp_path / "s.yaml", (
        "apiVersion: hxpc/v1\nproject: demo\nservices:\n"
        "  a: {image: a, depends_on: [b, nope]}\n"
        "  b: {image: b, depends_on: [a], secrets: {X: missing}}\n"
        "targets: {compose: {}}\n"))
    with pytest.raises(SpecError) as info:
        resolve_env(FileSources(str(spec)), "default")
    assert [(d.code, d.span.line if d.span else 0) for d in info.value.diagnostics] == [
        ("HX305", 4), ("HX301", 4), ("HX302", 5)]  # sorted by place: `b` stands before `nope`
    assert main(["validate", str(spec)]) == 3
    _, err = capsys.readouterr()
    assert err.count("error[HX") == 3
    assert err.endswith("hxpc: 3 problems found; nothing was changed\n")
