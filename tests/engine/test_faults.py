"""Faults of the live systems, each against the real component: the Docker Engine restarted while an apply runs
(a second dockerd of the test's own, so the shared one is never disturbed), the ssh connection to a systemd
host cut mid-wave, a host that does not answer at plan time, and (tests/test_artifacts.py) a full disk at
compile. Each time hxpc ends with the live system's error named (exit 1) or retries through the fault, never a
traceback, and the next apply converges with nothing lost. The scenarios are tests/faultlab.py's.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require, require_tool
from faultlab import (
    BUSYBOX,
    DockerLab,
    SecondEngine,
    SilentHost,
    SystemdLab,
    cut_ssh,
    interrupted_apply,
    unreachable_spec,
)
from harnesses.systemd import enable_ssh

RUNS = int(os.environ.get("HXPC_FAULT_RUNS", "1"))


def _ended_cleanly(done: subprocess.CompletedProcess[str], names: str) -> None:
    """Exit 0 (retried through the fault), or 1 with the failure said in hxpc's last line, never a bug."""
    assert done.returncode in (0, 1), done.stdout[-3000:]
    assert "Traceback" not in done.stdout and "internal error" not in done.stdout, done.stdout[-3000:]
    if done.returncode == 1:
        last = done.stdout.strip().splitlines()[-1]
        assert last.startswith("hxpc: ") and (names in done.stdout or "rolled back" in last), done.stdout[-3000:]


@pytest.fixture
def engine() -> Iterator[SecondEngine]:
    require_tool("docker")
    require("dockerd is not installed (debian docker.io)", shutil.which("dockerd") is not None)
    second = SecondEngine(Path(f"/tmp/hxpc-dockerd-{uuid.uuid4().hex[:8]}"))  # short: a socket path is <108 bytes
    try:
        second.setup()
        second.load(BUSYBOX)
        yield second
    finally:
        second.teardown()
        shutil.rmtree(second.root, ignore_errors=True)


@pytest.mark.docker
def test_the_docker_engine_restarting_mid_apply(tmp_path: Path, engine: SecondEngine) -> None:
    lab = DockerLab(tmp_path, env={"DOCKER_HOST": engine.host}, wrap=engine.wrap)
    rng = random.Random()
    lab.write(1)
    assert lab.apply().returncode == 0
    lab.plant()
    span = lab.baseline_seconds()
    for _ in range(RUNS):
        at = rng.uniform(0.5, span)
        faulted, outcome = interrupted_apply(lab, lambda: engine.restart(down_s=1.0), at)
        _ended_cleanly(faulted, "Docker Engine")
        assert outcome.converged and not outcome.data_lost, f"restarted at {at:.1f}s: {outcome.detail}"


@pytest.mark.systemd
def test_the_ssh_connection_cut_mid_wave(tmp_path: Path, systemd_host: str) -> None:
    require_tool("ssh")
    require_tool("ssh-keygen")
    ip, config = enable_ssh(systemd_host, tmp_path)
    lab = SystemdLab(tmp_path, systemd_host, address=ip, env={"HXPC_SSH_CONFIG": str(config)})
    try:
        lab.write(1)
        first = lab.apply()
        assert first.returncode == 0, first.stdout + first.stderr
        lab.plant()
        span = lab.baseline_seconds()
        rng = random.Random()
        for _ in range(RUNS):
            at = rng.uniform(0.3, span)
            faulted, outcome = interrupted_apply(lab, lambda: cut_ssh(systemd_host), at)
            _ended_cleanly(faulted, f"ssh://{ip}")
            assert outcome.converged and not outcome.data_lost, f"cut at {at:.1f}s: {outcome.detail}"
    finally:
        lab.cleanup()


@pytest.mark.systemd
def test_a_host_that_does_not_answer_fails_the_plan_in_bounded_time_naming_it(tmp_path: Path,
                                                                            systemd_host: str) -> None:
    require_tool("ssh")
    silent = SilentHost()
    lab = SystemdLab(tmp_path, systemd_host)
    try:
        unreachable_spec(lab, silent.port)
        for command in ("plan", "apply"):
            started = time.monotonic()
            done = lab.hxpc(command, str(lab.spec), "--env", "test", *(["--yes"] if command == "apply" else []))
            took = time.monotonic() - started
            assert done.returncode == 1, done.stdout + done.stderr
            assert f"cannot read host `h2`: ssh://root@127.0.0.1:{silent.port}: cannot reach the host" in done.stderr
            assert took < 90, f"{command} took {took:.0f}s"
        listing = lab.sh(f"ls /etc/systemd/system | grep -c '^{lab.project}' || true").strip()
        assert listing == "0"  # the host that answers was not touched
    finally:
        silent.close()
        lab.cleanup()
