"""The harness of each backend the contract suite runs on, one test project each (tests/harnesses/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harnesses import Harness
from harnesses.docker import DockerStack
from harnesses.kubernetes import KubeStack
from harnesses.systemd import SystemdStack


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker),
                        pytest.param("systemd", marks=pytest.mark.systemd),
                        pytest.param("kubernetes", marks=pytest.mark.kubernetes)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    made: Harness
    if request.param == "docker":
        made = DockerStack(request.getfixturevalue("docker_client"), tmp_path)
    elif request.param == "systemd":
        made = SystemdStack(tmp_path, request.getfixturevalue("systemd_hosts"))
    else:
        made = KubeStack(request.getfixturevalue("kube_cluster"), tmp_path)
    try:
        yield made
    finally:
        made.cleanup()
