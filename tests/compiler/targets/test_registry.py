"""The target registry is the one place a target is declared: a new target is one module and one registry line.

The toy target below is written into a copy of the package exactly as a
developer would add one, with no other file touched; the copy then validates,
reports the toy's own problems at their place in the spec, publishes its
field in the JSON Schema, and compiles it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from hxpc.compiler import targets

TOY = '''"""A toy target: one greeting file per workload."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from hxpc.compiler.fieldtypes import SPEC_CONFIG
from hxpc.compiler.targets import Placing, Platform, Problem, config_of
from hxpc.records import record

if TYPE_CHECKING:
    from hxpc.compiler.bundle import Meta
    from hxpc.compiler.model import ResolvedStack, Workload
    from hxpc.compiler.spec import Stack


@record(kw_only=True)
class ToyTarget:
    """A greeting per workload."""

    __pydantic_config__ = SPEC_CONFIG
    greeting: str = "hello"


Config = ToyTarget


def placement(config: ToyTarget) -> Placing | None:
    return None


def check(config: ToyTarget, stack: Stack, workloads: Mapping[str, Workload]) -> Iterator[Problem]:
    if not config.greeting:
        yield Problem("HX401", "the toy target needs a greeting", ("targets", "toy", "greeting"))


def platform(config: ToyTarget, stack: ResolvedStack) -> Platform:
    return Platform("hosts", "toy")


def emit(stack: ResolvedStack, meta: Meta) -> dict[str, str]:
    config = config_of(stack.spec, ToyTarget)
    assert config is not None
    return {f"{name}.txt": f"{config.greeting}, {name}\\n" for name in sorted(stack.workloads)}
'''

SPEC = """apiVersion: hxpc/v1
project: demo
services:
  web: {image: "busybox:1", ports: {http: 8080}}
targets:
  toy: {greeting: %s}
"""


@pytest.fixture(scope="module")
def with_toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    shutil.copytree(REPO / "hxpc", root / "hxpc", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "hxpc" / "compiler" / "targets" / "toy.py").write_text(TOY)
    registry = root / "hxpc" / "compiler" / "targets" / "__init__.py"
    text = registry.read_text()
    anchor = '    TargetEntry("prometheus"'
    assert text.count(anchor) == 1
    registry.write_text(text.replace(anchor, '    TargetEntry("toy", "hxpc.compiler.targets.toy"),\n' + anchor))
    return root


def _hxpc(root: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-m", "hxpc", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120, check=False)


def test_a_toy_target_is_one_module_and_one_registry_line(with_toy: Path, tmp_path: Path) -> None:
    (tmp_path / "stack.yaml").write_text(SPEC % "hi")
    done = _hxpc(with_toy, tmp_path, "compile", "stack.yaml", "-o", "out")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "default" / "toy" / "web.txt").read_text() == "hi, web\n"
    assert sorted(p.name for p in (tmp_path / "out" / "default").iterdir()) == [".hxpc-manifest.json", "toy"]

    schema = json.loads(_hxpc(with_toy, tmp_path, "schema").stdout)
    assert schema["$defs"]["ToyTarget"]["properties"]["greeting"]["default"] == "hello"
    assert "toy" in schema["$defs"]["Targets"]["properties"]


def test_a_toy_targets_problems_are_located_in_the_spec(with_toy: Path, tmp_path: Path) -> None:
    (tmp_path / "stack.yaml").write_text(SPEC % '""')
    done = _hxpc(with_toy, tmp_path, "validate", "stack.yaml")
    assert done.returncode == 3, done.stderr
    assert "stack.yaml:6:19: error[HX401]: the toy target needs a greeting" in done.stderr
    (tmp_path / "bad.yaml").write_text(SPEC % "{sing: true}")
    done = _hxpc(with_toy, tmp_path, "validate", "bad.yaml")
    assert done.returncode == 3 and "sing" in done.stderr, done.stderr


def test_every_registered_module_loads_and_deploying_ones_have_a_config() -> None:
    for entry in targets.REGISTRY:
        assert callable(entry.target().emit)
        if entry.deploys:
            assert isinstance(entry.deploy().Config, type)
    assert [e.name for e in targets.deploying()] == ["systemd", "compose", "kubernetes"]
