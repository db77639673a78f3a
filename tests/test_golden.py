"""Golden files: every example spec and environment compiles byte for byte to golden/<spec>/<env>/<target>/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import GOLDEN, REPO, example_specs

from hxpc.compiler.compile import compile_spec
from hxpc.compiler.pipeline import environments
from hxpc.sources import FileSources


def _compiled(spec: Path) -> dict[str, str]:
    rel = spec.relative_to(REPO).as_posix()
    sources = FileSources(rel)
    return compile_spec(sources, environments(sources)).files


@pytest.mark.parametrize("spec", example_specs(), ids=lambda p: p.stem)
def test_golden(spec: Path, update_golden: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # headers name the spec as a repo-relative path
    files = _compiled(spec)
    root = GOLDEN / spec.stem
    if update_golden:
        shutil.rmtree(root, ignore_errors=True)
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
    have = {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}
    assert sorted(have) == sorted(files), "golden files differ in name; run `pytest --update-golden` and review"
    changed = [rel for rel in files if have[rel] != files[rel]]
    assert not changed, f"compiled output differs from golden/: {changed}; run `pytest --update-golden` and review"


def test_every_example_env_has_golden_output() -> None:
    for spec in example_specs():
        envs = environments(FileSources(str(spec)))
        for env in envs:
            assert (GOLDEN / spec.stem / env).is_dir(), f"no golden output for {spec.name} env {env}"
