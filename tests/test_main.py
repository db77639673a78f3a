"""The plain `hxpc compile` path (main.py) reads every command line as typer does, or leaves it to typer.

Both paths end in `compile_command`; the tests capture what each passes to it.
Whenever main.py claims a command line, typer must accept it and pass the same
arguments. A plain compile must not import typer or pydantic: that is the
point of the path (bench/compile.py measures what it buys).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

import hxpc.compile_command
from hxpc import cli
from hxpc.main import CompileArgs, plain_compile, run

TOKENS = ["s.yaml", "t.yaml", "-e", "--env", "--env=prod", "prod", "dev", "-t", "--target", "--target=systemd",
          "systemd", "-o", "--output", "--output=o", "o", "--check", "--check=1", "--replace-unowned", "--", "-x",
          "--help", "-h",
          "-eprod", "-e=prod", "", "-", "--env=", "compile"]


def _typer_args(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> CompileArgs | None:
    """What typer passes to compile_command for `argv`, or None if it refuses the command line."""
    seen: list[CompileArgs] = []

    def capture(*args: Any) -> int:
        seen.append(CompileArgs(*args))
        return 0

    monkeypatch.setattr(hxpc.compile_command, "compile_command", capture)
    code = cli.main(argv)
    return seen[0] if seen and code == 0 else None


@pytest.mark.parametrize("argv", [
    ["compile", "s.yaml"],
    ["compile", "s.yaml", "-e", "prod", "--env", "dev", "--env=staging"],
    ["compile", "-o", "dir", "s.yaml", "--check", "-t", "systemd", "--target=compose"],
    ["compile", "--output=dir", "s.yaml", "--output", "last"],
])
def test_plain_command_lines_are_read_as_typer_reads_them(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fast = plain_compile(argv)
    assert fast is not None
    assert fast == _typer_args(argv, monkeypatch)


@pytest.mark.parametrize("argv", [
    [], ["validate", "s.yaml"], ["compile"], ["compile", "--help"], ["compile", "s.yaml", "--bogus"],
    ["compile", "s.yaml", "-e"], ["compile", "s.yaml", "t.yaml"], ["compile", "s.yaml", "-eprod"],
    ["compile", "s.yaml", "-e=prod"], ["compile", "s.yaml", "--env", "-x"], ["compile", "s.yaml", "--env="],
    ["compile", "s.yaml", "--", "-x"], ["compile", "s.yaml", "--check=yes"],
])
def test_everything_else_is_left_to_typer(argv: list[str]) -> None:
    assert plain_compile(argv) is None


@settings(max_examples=300, deadline=None)
@given(tail=st.lists(st.sampled_from(TOKENS), max_size=7))
def test_whatever_main_claims_typer_reads_the_same(tail: list[str]) -> None:
    argv = ["compile", *tail]
    fast = plain_compile(argv)
    if fast is None:
        return
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert fast == _typer_args(argv, monkeypatch), argv


def test_both_paths_compile_the_same_files_and_exit_codes(tmp_path: Path) -> None:
    spec = str(REPO / "specs" / "hxp.yaml")
    assert run(["compile", spec, "-e", "prod", "-o", str(tmp_path / "fast")]) == 0
    assert cli.main(["compile", spec, "-e", "prod", "-o", str(tmp_path / "typer")]) == 0
    fast = {p.relative_to(tmp_path / "fast"): p.read_bytes() for p in (tmp_path / "fast").rglob("*") if p.is_file()}
    slow = {p.relative_to(tmp_path / "typer"): p.read_bytes() for p in (tmp_path / "typer").rglob("*") if p.is_file()}
    assert fast and fast == slow
    assert run(["compile", spec, "-e", "prod", "-o", str(tmp_path / "fast"), "--check"]) == 0
    assert run(["compile", spec, "-e", "nope", "-o", str(tmp_path / "fast")]) == 3
    assert cli.main(["compile", spec, "-e", "nope", "-o", str(tmp_path / "typer")]) == 3


def test_a_plain_compile_imports_neither_typer_nor_pydantic(tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "from hxpc.main import run\n"
        f"code = run(['compile', {str(REPO / 'specs' / 'hxp.yaml')!r}, '-o', {str(tmp_path / 'out')!r}])\n"
        "heavy = {'typer', 'click', 'rich', 'pydantic', 'pydantic_core'}\n"
        "print(json.dumps([code, sorted(m for m in sys.modules if m.split('.')[0] in heavy)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    code, imported = json.loads(done.stdout.splitlines()[-1])
    assert code == 0
    assert imported == []


def test_the_hxpc_process_flushes_its_output_and_exit_code(tmp_path: Path) -> None:
    spec = str(REPO / "specs" / "hxp.yaml")
    done = subprocess.run([sys.executable, "-m", "hxpc", "compile", spec, "-e", "prod", "-o", str(tmp_path)],
                          capture_output=True, text=True)
    # the example's vLLM 0.6.3 models count no failed request: compile warns (HX406), and only that
    assert done.returncode == 0 and done.stderr.count("warning[HX406]") == 3 and "error" not in done.stderr
    assert done.stdout.startswith("wrote ") and done.stdout.endswith(" (prod)\n")
    assert any(tmp_path.rglob("*.service"))
    bad = subprocess.run([sys.executable, "-m", "hxpc", "compile", spec, "-e", "nope", "-o", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 3
    assert "HX107" in bad.stderr and bad.stderr.endswith("nothing was changed\n")
