"""What the repository offers CI pipelines is checked by the real tools: the GitHub Action and its example
workflow by actionlint, the GitLab template against GitLab's documented keywords, and the pre-commit
hooks by running `pre-commit try-repo` on a repository with a good and a bad spec."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, require_tool
from ruamel.yaml import YAML

WORKFLOW = REPO / "docs" / "ci" / "github-workflow.yml"
GITLAB = REPO / "docs" / "ci" / "hxpc.gitlab-ci.yml"


def _actionlint(cwd: Path, *files: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("actionlint"), "-no-color", *files], capture_output=True, text=True,
                          cwd=cwd, timeout=120, check=False)


def test_the_example_workflow_passes_actionlint() -> None:
    done = _actionlint(REPO, str(WORKFLOW))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_action_is_checked_where_a_workflow_uses_it(tmp_path: Path) -> None:
    """actionlint reads a local action's action.yml and checks every `with:` and output a workflow uses."""
    shutil.copy(REPO / "action.yml", tmp_path / "action.yml")
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    text = WORKFLOW.read_text().replace("uses: hxpc/hxpc@v1", "uses: ./")
    (workflows / "hxpc.yml").write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    done = _actionlint(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (workflows / "hxpc.yml").write_text(text.replace("mode: plan", "mode: plan\n          spek: typo"))
    done = _actionlint(tmp_path)
    assert done.returncode != 0 and 'input "spek" is not defined in action' in done.stdout


# GitLab CI/CD YAML syntax reference (docs.gitlab.com/ee/ci/yaml/): global keywords and job keywords
GLOBAL_KEYWORDS = {"default", "include", "stages", "variables", "workflow", "spec"}
JOB_KEYWORDS = {
    "after_script", "allow_failure", "artifacts", "before_script", "cache", "coverage", "dast_configuration",
    "dependencies", "environment", "extends", "hooks", "identity", "id_tokens", "image", "inherit",
    "interruptible", "manual_confirmation", "needs", "pages", "parallel", "release", "resource_group", "retry",
    "rules", "script", "secrets", "services", "stage", "tags", "timeout", "trigger", "variables", "when",
}
ARTIFACTS_KEYWORDS = {"paths", "exclude", "expire_in", "expose_as", "name", "public", "access", "reports",
                      "untracked", "when"}


def test_the_gitlab_template_uses_only_documented_keywords() -> None:
    doc = YAML(typ="safe").load(GITLAB.read_text())
    jobs = {k: v for k, v in doc.items() if k not in GLOBAL_KEYWORDS}
    assert jobs and all(k.startswith(".") for k in jobs), "a template defines hidden jobs for users to extend"
    for name, job in jobs.items():
        assert set(job) <= JOB_KEYWORDS, (name, set(job) - JOB_KEYWORDS)
        for parent in [job["extends"]] if isinstance(job.get("extends"), str) else job.get("extends", []):
            assert parent in jobs, (name, parent)
        assert set(job.get("artifacts", {})) <= ARTIFACTS_KEYWORDS, name
        for rule in job.get("rules", []):
            assert set(rule) <= {"if", "changes", "exists", "when", "allow_failure", "variables", "needs"}, rule
    runnable = [n for n, j in jobs.items() if "script" in j]
    assert {".hxpc-plan", ".hxpc-apply"} <= set(runnable)
    assert "hxpc plan" in " ".join(jobs[".hxpc-plan"]["script"])
    assert "--detailed-exitcode" in " ".join(jobs[".hxpc-plan"]["script"])
    assert jobs[".hxpc-apply"]["resource_group"] == "hxpc-$HXPC_ENV"


GOOD = """apiVersion: hxpc/v1
project: demo
services:
  web: {image: "nginx:1.27", ports: {http: 8080}}
targets:
  compose: {}
"""


@pytest.fixture(scope="module")
def precommit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pre-commit cache for the module: the hooks' environment (hxpc installed by pip) is built once."""
    return tmp_path_factory.mktemp("pre-commit-home")


def _try_repo(repo: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run([require_tool("pre-commit"), "try-repo", str(REPO), "--all-files", "--color=never"],
                          capture_output=True, text=True, cwd=repo, env=env, timeout=900, check=False)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_pre_commit_hooks_pass_a_good_spec_and_fail_a_bad_one(tmp_path: Path, precommit_home: Path) -> None:
    repo = tmp_path / "stack"
    (repo / "specs").mkdir(parents=True)
    (repo / "specs" / "demo.yaml").write_text(GOOD)
    (repo / "specs" / "demo.prod.yaml").write_text("services: {web: {replicas: 2}}\n")
    _git(repo, "init", "-q")  # first: artifacts name their spec by its path in the repository
    done = subprocess.run([sys.executable, "-m", "hxpc", "compile", "specs/demo.yaml", "-o", "out"], cwd=repo,
                          check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "a stack")

    good = _try_repo(repo, precommit_home)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "hxpc validate" in good.stdout and "hxpc compile --check" in good.stdout

    # an overlay file that breaks its spec: both hooks run for it and fail, naming the problem
    (repo / "specs" / "demo.prod.yaml").write_text("services: {web: {replics: 2}}\n")
    _git(repo, "add", ".")
    bad = _try_repo(repo, precommit_home)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "error[HX201]: unknown field `replics`" in bad.stdout
