"""Benchmark of faults: kill -9 in a loop and the live-system faults, as the README's "Reliability" table.

Runs the scenarios of tests/faultlab.py (the same the tests run, more often) against the real components:
`kill -9` of `hxpc apply` at random moments on the Docker Engine and on a systemd host, the Docker Engine
restarted mid-apply (a second dockerd of its own), the ssh connection cut mid-wave, a host that does not
answer at plan time, and a full disk at compile (a real tmpfs). For each it prints the runs, how many were
followed by a converging apply (or, for the plan and compile faults, by the expected clean failure and then
success), the runs after which data was lost (the planted data or an object hxpc does not own; must be 0),
and the time to converge (median / worst, seconds).

Needs root, the Docker Engine, dockerd and the test images (.ci/setup).
Run: python bench/faults.py [KILLS_PER_TARGET [FAULT_RUNS]]   (default 10 and 3)
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from faultlab import (  # noqa: E402 - tests/ holds the lab the tests share
    BUSYBOX,
    DockerLab,
    Outcome,
    SecondEngine,
    SilentHost,
    SystemdLab,
    Tally,
    cut_ssh,
    docker,
    interrupted_apply,
    start_systemd_host,
    unreachable_spec,
)
from harnesses.systemd import enable_ssh  # noqa: E402 - as above


def faulted(lab: DockerLab | SystemdLab, fault, runs: int, tally: Tally, rng: random.Random) -> None:  # type: ignore[no-untyped-def]
    lab.write(lab.version + 1)
    assert lab.apply().returncode == 0
    lab.plant()
    span = lab.baseline_seconds()
    for _ in range(runs):
        done, outcome = interrupted_apply(lab, fault, rng.uniform(0.3, span))
        if done.returncode not in (0, 1) or "Traceback" in done.stdout:
            outcome = Outcome(False, outcome.data_lost, outcome.seconds_to_converge, done.stdout[-500:])
        tally.outcomes.append(outcome)


def unreachable(tmp: Path, host: str, runs: int) -> Tally:
    tally = Tally("host not answering at plan", "systemd (ssh)")
    silent = SilentHost()
    lab = SystemdLab(tmp, host)
    try:
        unreachable_spec(lab, silent.port)
        for _ in range(runs):
            started = time.monotonic()
            done = lab.hxpc("plan", str(lab.spec), "--env", "test")
            took = time.monotonic() - started
            named = done.returncode == 1 and "cannot read host `h2`" in done.stderr
            touched = lab.sh(f"ls /etc/systemd/system | grep -c '^{lab.project}' || true").strip() != "0"
            tally.outcomes.append(Outcome(named, touched, took))
    finally:
        silent.close()
        lab.cleanup()
    return tally


def disk_full(runs: int) -> Tally:
    tally = Tally("disk full at compile", "compile -o (4 MiB tmpfs)")
    spec = str(REPO / "specs" / "hxp.yaml")
    for _ in range(runs):
        mount = Path(f"/tmp/hxpc-full-{uuid.uuid4().hex[:8]}")
        mount.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
        try:
            out = mount / "out"
            hxpc = [sys.executable, "-m", "hxpc", "compile", spec, "-o", str(out)]
            subprocess.run(hxpc, check=True, capture_output=True)
            before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
            with open(mount / "filler", "wb") as filler:
                filler.write(b"\0" * max(0, shutil.disk_usage(mount).free - 100_000))
            failed = subprocess.run(hxpc, capture_output=True, text=True)
            intact = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
            (mount / "filler").unlink()
            started = time.monotonic()
            again = subprocess.run(hxpc, capture_output=True)
            ok = failed.returncode == 1 and "No space left on device" in failed.stderr and again.returncode == 0
            tally.outcomes.append(Outcome(ok, not intact, time.monotonic() - started))
        finally:
            subprocess.run(["umount", str(mount)], capture_output=True)
            shutil.rmtree(mount, ignore_errors=True)
    return tally


def main() -> None:
    kills = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    rng = random.Random()
    tallies: list[Tally] = []
    host = f"hxpc-bench-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "d").mkdir()
        lab = DockerLab(tmp / "d")
        try:
            tallies.append(lab.kill_loop(kills, rng))
        finally:
            lab.cleanup()
        start_systemd_host(host)
        try:
            (tmp / "s").mkdir()
            slab = SystemdLab(tmp / "s", host)
            try:
                tallies.append(slab.kill_loop(kills, rng))
            finally:
                slab.cleanup()
            engine = SecondEngine(Path(f"/tmp/hxpc-dockerd-{uuid.uuid4().hex[:8]}"))
            try:
                engine.setup()
                engine.load(BUSYBOX)
                (tmp / "e").mkdir()
                elab = DockerLab(tmp / "e", env={"DOCKER_HOST": engine.host}, wrap=engine.wrap)
                tally = Tally("Docker Engine restarted mid-apply", "compose (second dockerd)")
                faulted(elab, lambda: engine.restart(down_s=1.0), runs, tally, rng)
                tallies.append(tally)
            finally:
                engine.teardown()
                shutil.rmtree(engine.root, ignore_errors=True)
            (tmp / "c").mkdir()
            ip, config = enable_ssh(host, tmp / "c")
            clab = SystemdLab(tmp / "c", host, address=ip, env={"HXPC_SSH_CONFIG": str(config)})
            try:
                tally = Tally("ssh connection cut mid-wave", "systemd (ssh)")
                faulted(clab, lambda: cut_ssh(host), runs, tally, rng)
                tallies.append(tally)
            finally:
                clab.cleanup()
            (tmp / "u").mkdir()
            tallies.append(unreachable(tmp / "u", host, runs))
        finally:
            docker("rm", "-f", host, check=False)
    tallies.append(disk_full(runs))
    print("| scenario | target | runs | converged | data lost | time to converge, s (median / worst) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for tally in tallies:
        print(tally.row())
    for tally in tallies:
        for outcome in tally.outcomes:
            if not outcome.converged or outcome.data_lost:
                print(f"\n{tally.scenario} ({tally.target}): {outcome.detail[:1500]}")


if __name__ == "__main__":
    main()
