"""The command line: output and exit codes of every command, as CI pipelines script against them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

from hxpc.cli import main

SPEC = "specs/hxp.yaml"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", SPEC)
    assert code == 0, err
    assert out == f"{SPEC}: valid (dev, prod, staging)\n"


def test_validate_json_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", SPEC, "--env", "prod", "--format", "json")
    assert code == 0
    assert json.loads(out) == {"diagnostics": []}


def test_validate_reports_every_problem_with_caret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("apiVersion: hxpc/v1\nproject: demo\nservices:\n  api:\n    image: a\n    replics: 2\n"
                    "    restart: sometimes\n")
    code, out, err = run(capsys, "validate", str(spec))
    assert code == 3
    assert out == ""
    assert f"{spec}:6:5: error[HX201]: unknown field `replics` in services.api" in err
    assert "  = help: did you mean `replicas`?" in err
    assert f"{spec}:7:14: error[HX209]" in err
    assert " 6 |     replics: 2\n   |     ^~~~~~~\n" in err
    assert "hxpc: 2 problems found; nothing was changed" in err
    assert "Traceback" not in err


def test_validate_json_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("apiVersion: hxpc/v1\nproject: Demo\n")
    code, _, err = run(capsys, "validate", str(spec), "--format", "json")
    assert code == 3
    assert "error[HX206]" in err


def test_unknown_environment_is_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "validate", SPEC, "--env", "prd")
    assert code == 3
    assert "error[HX107]: environment `prd` is not declared" in err
    assert "did you mean `prod`?" in err


def test_bad_command_line_is_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "validate", SPEC, "--no-such-flag")
    assert code == 3
    assert "No such option" in err


def test_missing_file_is_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "validate", "specs/nope.yaml")
    assert code == 3
    assert "error[HX106]: cannot read specs/nope.yaml" in err


def test_explain_lists_every_layer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", SPEC, "services.api-gateway.replicas", "--env", "prod")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "services.api-gateway.replicas = 3   (env prod)"
    assert lines[1].startswith("  specs/hxp.yaml:") and lines[1].endswith("base")
    assert lines[2].startswith("  specs/hxp.prod.yaml:5:") and lines[2].endswith("overlay")


def test_explain_inline_env_and_defaults_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", SPEC, "services.redis.restart", "--env", "dev", "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["value"] == "on-failure"
    assert [layer["source"] for layer in report["layers"]] == ["defaults"]
    line = Path(SPEC).read_text().splitlines()[report["layers"][0]["line"] - 1]
    assert "restart: on-failure" in line  # it comes from `defaults`
    code, out, _ = run(capsys, "explain", SPEC, "models.llama-70b.tensor_parallel", "--env", "dev",
                       "--format", "json")
    assert [layer["source"] for layer in json.loads(out)["layers"]] == ["base", "environments.dev"]


def test_explain_default_and_unknown_path(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", SPEC, "services.redis.health.retries", "--env", "dev")
    assert code == 0 and "hxpc's default" in out
    code, _, err = run(capsys, "explain", SPEC, "services.nope.replicas", "--env", "dev")
    assert code == 3 and "not set" in err


def test_resources_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "resources", SPEC, "--env", "prod", "--format", "json")
    assert code == 0
    report = json.loads(out)
    hosts = {h["host"]: h for h in report["hosts"]}
    gpu2 = hosts["gpu-02"]["gpus"]["devices"]
    assert [d["used_by"] for d in gpu2] == ["mixtral-8x7b[0]", "mixtral-8x7b[0]", "llama-8b[0]", "llama-8b[1]"]
    # mixtral: 46.7e9 params x 2 bytes / 2 GPUs
    assert gpu2[0]["weights_bytes"] == 46_700_000_000
    assert gpu2[0]["headroom_bytes"] == round(80 * 2**30 * 0.9) - 46_700_000_000
    assert hosts["app-01"]["cpu_millis"] == {"capacity": 32000, "requested": 19000, "headroom": 13000}


def test_resources_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "resources", SPEC, "--env", "dev")
    assert code == 0
    assert "gpu-01: 4/4 GPUs A100-80GB" in out
    assert "llama-70b[0]" in out and "headroom" in out


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "json"])
def test_graph(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "graph", SPEC, "--env", "prod", "--format", fmt)
    assert code == 0
    if fmt == "json":
        data = json.loads(out)
        assert data["waves"][-1] == ["api-gateway"]
        assert {"from": "api-gateway", "to": "postgres"} in data["edges"]
    elif fmt == "mermaid":
        assert out.startswith("flowchart TD\n") and 'subgraph wave1["wave 1"]' in out
        assert "api_gateway --> postgres" in out
    else:
        assert '"api-gateway" -> "postgres";' in out and 'label="wave 0";' in out


def test_schema_stdout_matches_committed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    assert out == (REPO / "schemas" / "hxpc.schema.json").read_text()


def test_compile_check_and_atomic_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "compile", SPEC, "-o", str(out_dir))
    assert code == 0, err
    before = {p: p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}
    assert any(p.parts[-3:-1] == ("dev", "compose") for p in before)
    code, out, _ = run(capsys, "compile", SPEC, "-o", str(out_dir), "--check")
    assert code == 0 and "up to date" in out
    victim = next(p for p in before if p.name == "compose.yaml")
    victim.write_text("edited by hand\n")
    (out_dir / "dev" / "stray.txt").write_text("x")
    code, out, _ = run(capsys, "compile", SPEC, "-o", str(out_dir), "--check")
    assert code == 2
    assert "changed dev/compose/compose.yaml" in out
    assert "stray.txt" not in out  # not hxpc's: a compile leaves it alone (tests/test_artifacts.py)
    assert victim.read_text() == "edited by hand\n", "--check must write nothing"
    # a compile that fails leaves the previous output untouched
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: hxpc/v1\nproject: hxp\nservices: {a: {image: x, depends_on: [b]}}\n")
    code, _, _ = run(capsys, "compile", str(bad), "-o", str(out_dir))
    assert code == 3
    assert victim.read_text() == "edited by hand\n"
    code, _, err = run(capsys, "compile", SPEC, "-o", str(out_dir))
    assert code == 4 and "dev/compose/compose.yaml (changed since hxpc wrote it)" in err
    code, _, _ = run(capsys, "compile", SPEC, "-o", str(out_dir), "--replace-unowned")
    assert code == 0
    after = {p: p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}
    assert after == {**before, out_dir / "dev" / "stray.txt": b"x"}


def test_compile_is_byte_identical(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        assert run(capsys, "compile", SPEC, "-o", str(tmp_path / name))[0] == 0
    a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert a == b and a


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_diff_against_git_revision(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / "specs").mkdir(parents=True)
    for name in ("hxp.yaml", "hxp.prod.yaml"):
        (repo / "specs" / name).write_text((REPO / "specs" / name).read_text())
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "base")
    overlay = repo / "specs" / "hxp.prod.yaml"
    overlay.write_text(overlay.read_text().replace("replicas: 3", "replicas: 4"))
    monkeypatch.chdir(repo)
    code, out, err = run(capsys, "diff", "specs/hxp.yaml", "--env", "prod", "--base", "HEAD", "--detailed-exitcode")
    assert code == 2, err
    assert "=== prod/kubernetes ===" in out
    assert "-  replicas: 3\n+  replicas: 4\n" in out or "-    replicas: 3" in out or "replicas: 4" in out
    assert "+++ b/prod/" in out
    # the base revision's artifacts (overlay included) are found: the only new file is the fourth replica's
    lines = out.splitlines()
    new_files = [lines[i + 1] for i, line in enumerate(lines) if line == "--- /dev/null"]
    assert new_files == ["+++ b/prod/systemd/app-01/hxp-api-gateway@3.service.d/replica.conf"]
    code, out, _ = run(capsys, "diff", "specs/hxp.yaml", "--env", "dev", "--base", "HEAD", "--detailed-exitcode")
    assert code == 0 and out.startswith("no changes")
    code, _, err = run(capsys, "diff", "specs/hxp.yaml", "--env", "prod", "--base", "no-such-rev")
    assert code == 3 and "no-such-rev" in err


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```sh\n")[1:3]]
    assert len(blocks) == 2, "the README opens with two commands"
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert blocks[1] in ci_lines, ".ci/run must run the README's test command as written"
