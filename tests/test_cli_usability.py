"""The command line a person expects: --version, telling a spec from a plan by content, --env left out
where the spec has one environment, status's exit code, shell completion, and progress lines.

The commands that reach a live system run against the real Docker Engine with a one-container
stack of the local busybox image, each test under its own project name and host port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, require
from promserver import free_port

from hxpc import version
from hxpc.cli import main

IMAGE = "hxpc-test/busybox:1"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def one_env_spec(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A spec with no environments (so one, `default`) and one compose service, written as JSON; the
    containers it makes are removed afterwards."""
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the Engine means it is not there
        require(f"no Docker Engine answers: {exc}", False)
    project = f"hxu{uuid.uuid4().hex[:8]}"
    port = free_port()
    spec = {"apiVersion": "hxpc/v1", "project": project,
            "services": {"web": {"image": IMAGE, "command": ["/bin/httpd"],
                                 "args": ["-f", "-p", str(port), "-h", "/www"], "ports": {"http": port},
                                 "health": {"http": {"path": "/health", "port": "http"}, "interval": "1s"}}},
            "targets": {"compose": {}}}
    path = tmp_path / "stack.yaml"  # JSON is YAML: the file's syntax must not decide what it is
    path.write_text(json.dumps(spec, indent=2))
    yield path, project
    for c in client.containers.list(all=True, filters={"label": f"hxpc.dev/project={project}"}):
        c.remove(force=True)
    for n in client.networks.list(filters={"label": f"hxpc.dev/project={project}"}):
        n.remove()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert (code, out) == (0, f"hxpc {version()}\n")
    assert version()[0].isdigit()


def test_a_json_spec_applies_as_a_spec_and_env_may_be_left_out(one_env_spec: tuple[Path, str],
                                                              capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    spec, _ = one_env_spec
    code, out, err = run(capsys, "plan", str(spec), "--format", "json", "-o", str(tmp_path / "plan.json"))
    assert code == 0, err
    plan = json.loads(out)
    assert plan["kind"] == "hxpc-plan" and plan["hxpc_version"] == version() and plan["env"] == "default"
    code, out, err = run(capsys, "apply", str(spec), "--yes")
    assert code == 0, err
    assert "Applied: 2 added" in out
    code, out, err = run(capsys, "status", str(spec), "--format", "json")
    assert code == 0, err
    assert {o["state"] for o in json.loads(out)["objects"]} == {"live"}
    code, out, err = run(capsys, "plan", str(spec), "--detailed-exitcode")
    assert code == 0, err + out
    # the plan saved before the apply is a plan, by its content; it is stale now
    code, _, err = run(capsys, "apply", str(tmp_path / "plan.json"))
    assert code == 4, err


def test_status_exits_2_when_something_is_missing(one_env_spec: tuple[Path, str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec, _ = one_env_spec
    code, out, err = run(capsys, "status", str(spec))
    assert code == 2, err
    assert "missing" in out


def test_a_file_that_is_neither_spec_nor_plan_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"name": "not hxpc"}')
    code, _, err = run(capsys, "apply", str(other), "--yes")
    assert code == 3
    assert "neither an hxpc spec" in err and "Traceback" not in err


def test_env_is_required_only_when_the_spec_has_several(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    code, _, err = run(capsys, "resources", "specs/hxp.yaml")
    assert code == 3
    assert "declares 3 environments (dev, prod, staging): choose one with --env" in err
    code, out, err = run(capsys, "graph", "specs/hxp.yaml", "--env", "dev", "--format", "json")
    assert code == 0, err
    assert json.loads(out)


def test_commands_that_reach_live_systems_keep_their_options(capsys: pytest.CaptureFixture[str]) -> None:
    # the backends' own options are added to these commands; their other options must stay as declared
    for command, expected in (("plan", ("-o, --output", "-f, --format", "--detailed-exitcode", "--ssh-config")),
                              ("apply", ("-y, --yes", "--parallelism", "--metrics-file", "--ssh-config")),
                              ("status", ("-f, --format", "--ssh-config"))):
        code, out, _ = run(capsys, command, "--help")
        flat = " ".join(out.replace("│", " ").split())
        assert code == 0
        for option in expected:
            short, _, long = option.partition(", ")
            assert (long or short) in flat, (command, option)
            if long:
                assert f"{long} {short}" in flat or f"{short}, {long}" in flat or f"{long} {short} " in flat, \
                    (command, option)


def _complete(words: str, cword: int) -> list[str]:
    env = {**os.environ, "_HXPC_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    done = subprocess.run([sys.executable, "-m", "hxpc"], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_shell_completion_of_commands_options_environments_and_targets() -> None:
    assert _complete("hxpc pl", 1) == ["plan"]
    assert _complete("hxpc plan specs/hxp.yaml --env ", 4) == ["dev", "prod", "staging"]
    assert _complete("hxpc apply specs/hxp.yaml -e st", 4) == ["staging"]
    assert _complete("hxpc compile specs/hxp.yaml --target k", 4) == ["kubernetes"]
    assert "--ssh-config" in _complete("hxpc status specs/hxp.yaml --", 3)


def test_plan_without_a_terminal_says_what_it_reads(one_env_spec: tuple[Path, str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    spec, _ = one_env_spec
    code, _, err = run(capsys, "plan", str(spec))
    assert code == 0, err
    assert "reading compose" in err and "read compose: 0 live object(s)" in err
