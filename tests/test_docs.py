"""docs/ tells the truth: the reference pages are what the code generates, every YAML example is a valid
spec, and every command of the getting-started page runs and prints what the page shows."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, require

from hxpc import reference

DOCS = REPO / "docs"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def _blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(page.read_text())]


def _hxpc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hxpc", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, check=False)


def test_reference_pages_are_generated_from_the_code() -> None:
    assert reference.main(["--check"]) == 0, "run `python -m hxpc.reference` and commit docs/"


def test_a_field_without_an_example_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "EXAMPLE_DIRS", ())
    with pytest.raises(LookupError, match="add one to docs/examples/"):
        reference.spec_reference()


def test_every_yaml_example_in_docs_is_a_valid_spec(tmp_path: Path) -> None:
    specs: list[tuple[Path, Path]] = []
    for page in sorted(DOCS.rglob("*.md")):
        for i, (lang, text) in enumerate(_blocks(page)):
            if lang == "yaml":
                specs.append((page, tmp_path / f"{page.stem}-{i}.yaml"))
                specs[-1][1].write_text(text)
    # the example files are validated where they are: they may point at files beside them
    specs += [(path, path) for path in sorted((DOCS / "examples").glob("*.yaml"))]
    assert len(specs) >= 3
    for where, spec in specs:
        done = _hxpc("validate", str(spec), cwd=tmp_path)
        assert done.returncode == 0, f"{where}: {done.stderr}"


def test_getting_started_commands_print_what_the_page_shows(tmp_path: Path) -> None:
    shutil.copytree(REPO / "specs", tmp_path / "specs")
    blocks = _blocks(DOCS / "getting-started.md")
    ran = 0
    for (lang, text), following in zip(blocks, [*blocks[1:], ("", "")], strict=True):
        if lang != "sh" or not text.startswith("hxpc "):
            continue
        argv = text.split()[1:]
        if argv[0] == "plan":
            require("plan needs a Docker Engine", shutil.which("docker") is not None)
        done = _hxpc(*argv, cwd=tmp_path)
        assert done.returncode == 0, f"{text}: {done.stderr}"
        if following[0] == "text":
            shown = [line for line in following[1].splitlines() if line.strip() and line != "…"]
            printed = done.stdout.splitlines()
            missing = [line for line in shown if line not in printed]
            assert not missing, f"`{text.strip()}` no longer prints: {missing}"
        ran += 1
    assert ran >= 6


def test_readme_points_users_to_docs_not_to_the_contract_folder() -> None:
    readme = (REPO / "README.md").read_text()
    assert "../shared" not in readme
    for page in ("docs/getting-started.md", "docs/spec.md", "docs/cli.md", "docs/ci.md"):
        assert page in readme and (REPO / page).exists(), page


def test_the_spec_reference_has_every_class_of_the_schema() -> None:
    from hxpc.compiler.spec import json_schema

    page = (DOCS / "spec.md").read_text()
    missing = [name for name in json_schema()["$defs"] if f"\n## {name}\n" not in page]
    assert not missing, missing
