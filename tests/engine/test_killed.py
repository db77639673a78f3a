"""`kill -9` at random moments of a real `hxpc apply` (the command line, in a subprocess), in a loop, on the
Docker Engine and on a systemd host (Kubernetes: tests/engine/backends/kubernetes/test_apply.py): each time the
next apply converges (exit 0, the plan after it empty, no `-hxpc-old` container, no lock, no empty unit file)
and nothing is lost (a volume's data, an object hxpc does not own). The scenarios are tests/faultlab.py's;
bench/faults.py runs more of them.

HXPC_KILL_RUNS sets the number of kills per target (default 3, to keep the suite fast on two cores) and
HXPC_KILL_SEED the random moments (printed on failure, to replay a run).
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from conftest import require, require_tool
from faultlab import KILL_RUNS as RUNS
from faultlab import KILL_SEED as SEED
from faultlab import DockerLab, SystemdLab
from faultlab import check_outcome as _check


@pytest.mark.docker
def test_kill_9_at_random_moments_of_a_docker_apply(tmp_path: Path) -> None:
    require_tool("docker")
    require("no Docker Engine answers", subprocess.run(["docker", "info"], capture_output=True).returncode == 0)
    lab = DockerLab(tmp_path)
    try:
        tally = lab.kill_loop(RUNS, random.Random(SEED), on_outcome=_check)
        assert tally.converged == RUNS and tally.data_lost == 0
    finally:
        lab.cleanup()


@pytest.mark.systemd
def test_kill_9_at_random_moments_of_a_systemd_apply(tmp_path: Path, systemd_host: str) -> None:
    lab = SystemdLab(tmp_path, systemd_host)
    try:
        tally = lab.kill_loop(RUNS, random.Random(SEED), on_outcome=_check)
        assert tally.converged == RUNS and tally.data_lost == 0
        # every file hxpc wrote went to a temporary name first: none of its units or env files is short
        listing = lab.sh(f"cd /etc/systemd/system && ls -a | grep -e '^{lab.project}' -e '^.hxpc' || true")
        for name in listing.split():
            assert not name.startswith(".hxpc") or not name.endswith((".service", ".conf", ".env")), name
    finally:
        lab.cleanup()
