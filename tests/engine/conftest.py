"""Fixtures of the engine's fault tests (test_killed.py, test_faults.py): a systemd host of their own."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
from conftest import require, require_tool
from faultlab import SYSTEMD_IMAGE, docker, start_systemd_host


@pytest.fixture(scope="module")
def systemd_host() -> Iterator[str]:
    require_tool("docker")
    require(f"the image {SYSTEMD_IMAGE} is missing (.ci/build-test-images.sh builds it)",
            subprocess.run(["docker", "image", "inspect", SYSTEMD_IMAGE], capture_output=True).returncode == 0)
    name = f"hxpc-sdf-{uuid.uuid4().hex[:6]}"
    try:
        start_systemd_host(name)
        yield name
    finally:
        docker("rm", "-f", name, check=False)
