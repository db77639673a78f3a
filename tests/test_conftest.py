"""What the test suite asks of a machine is what .ci/setup gives a fresh one.

Every tool a test requires is listed in conftest.TOOLS with its provider; here
each provider is checked against what installs it: a console script of a
distribution in the test extras, a Debian package that .ci/install-system.sh
installs (or that Debian marks essential), or a .ci script. A new tool that
nothing installs fails here, not on the next fresh machine.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, TOOLS, find_tool

SETUP = REPO / ".ci"


def _test_extras() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [re.split(r"[<>=!~; \[]", req, maxsplit=1)[0].lower() for req in project["optional-dependencies"]["test"]]


def _debian_packages() -> set[str]:
    text = (SETUP / "install-system.sh").read_text()
    block = text[text.index("PKGS=(") + len("PKGS=("): text.index("\n)", text.index("PKGS=("))]
    return {word for line in block.splitlines() for word in line.split("#")[0].split()}


def _essential(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Essential}", package], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() == "yes"


def _required_names() -> set[str]:
    """Every literal tool name passed to require_tool in the tests."""
    names = set()
    for path in (REPO / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "require_tool"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                names.add(node.args[0].value)
    return names


def test_every_required_tool_has_a_provider() -> None:
    assert _required_names() <= set(TOOLS), sorted(_required_names() - set(TOOLS))


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_each_provider_installs_its_tool(tool: str) -> None:
    kind, _, name = TOOLS[tool].partition(":")
    if kind == "pip":
        assert name in _test_extras(), f"{name} is not in the test extras of pyproject.toml"
        scripts = {ep.name for ep in importlib.metadata.distribution(name).entry_points
                   if ep.group == "console_scripts"}
        assert tool in scripts, f"{name} does not install a `{tool}` script"
    elif kind == "debian":
        assert name in _debian_packages() or _essential(name), \
            f"Debian package {name} is neither installed by .ci/install-system.sh nor essential"
        listed = subprocess.run(["dpkg", "-L", name], capture_output=True, text=True, check=False).stdout
        assert any(line.endswith(f"bin/{tool}") for line in listed.splitlines()), f"{name} ships no bin/{tool}"
    else:
        assert kind == "script", TOOLS[tool]
        assert tool in (SETUP / name).read_text(), f".ci/{name} does not build {tool}"
        assert f"bash .ci/{name}" in (SETUP / "setup").read_text(), f".ci/setup does not run .ci/{name}"


def test_tools_of_the_test_extras_are_found_beside_the_interpreter() -> None:
    # the README runs `.venv/bin/python -m pytest`, with the venv's bin/ not on PATH
    path = find_tool("kubernetes-validate")
    assert path is not None and Path(path).exists()
