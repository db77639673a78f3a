"""Faults injected into real applies, shared by the tests (tests/engine/test_killed.py, test_faults.py) and by
bench/faults.py, which runs more of them and prints the table of the README's "Reliability" section.

A `Lab` is one project on one live system (the Docker Engine, or a systemd host in a container reached with
`docker://`): it writes the spec, runs the command line as a user does (`python -m hxpc apply SPEC --env E
--yes` in a subprocess, so a kill is a real kill), plants data and an object hxpc does not own, and checks
after every run that the next apply converged (exit 0, a following plan empty, no set-aside container, no
lock left) and that nothing was lost (the data is there, the foreign object unchanged).
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harnesses.docker import free_base

BUSYBOX = "hxpc-test/busybox:1"
SYSTEMD_IMAGE = "hxpc-test/systemd:bookworm"
ENV = "test"
# test containers only: see tests/engine/backends/systemd/test_apply.py (ProtectProc= with PrivateUsers=)
TEST_DROPIN = "[Service]\n# test containers only\nProtectProc=default\n"


# kills per target in the tests (default 3, to keep the suite fast on two cores) and their random moments
# (printed on failure, to replay a run)
KILL_RUNS = int(os.environ.get("HXPC_KILL_RUNS", "3"))
KILL_SEED = int(os.environ.get("HXPC_KILL_SEED", str(random.randrange(1 << 30))))


def check_outcome(outcome: Outcome, at: float) -> None:
    """For `Lab.kill_loop` in a test: fail at once, saying when the kill came and how to replay it."""
    assert outcome.converged and not outcome.data_lost, f"killed at {at:.2f}s (seed {KILL_SEED}): {outcome.detail}"


def docker(*args: str, check: bool = True, input: bytes | None = None, timeout: float = 120) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, input=input, check=False, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr.decode()}")
    return done.stdout.decode()


@dataclass
class Outcome:
    """One faulted run and the apply that followed it."""

    converged: bool
    data_lost: bool
    seconds_to_converge: float
    detail: str = ""


@dataclass
class Tally:
    scenario: str
    target: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.outcomes)

    @property
    def converged(self) -> int:
        return sum(o.converged for o in self.outcomes)

    @property
    def data_lost(self) -> int:
        return sum(o.data_lost for o in self.outcomes)

    def seconds(self) -> tuple[float, float]:
        times = sorted(o.seconds_to_converge for o in self.outcomes if o.converged) or [0.0]
        return times[len(times) // 2], times[-1]

    def row(self) -> str:
        median, worst = self.seconds()
        return (f"| {self.scenario} | {self.target} | {self.runs} | {self.converged} | {self.data_lost} | "
                f"{median:.1f} / {worst:.1f} |")


class Lab:
    """One project on one live system; subclasses say how to write the spec, plant and check data."""

    target = ""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None,
                 wrap: Callable[[list[str]], list[str]] = lambda argv: argv):
        self.tmp = tmp
        self.env = env or {}
        self.wrap = wrap  # how hxpc's commands are run (in the second engine's network namespace)
        self.spec = tmp / "lab.yaml"
        self.version = 0

    # -- what subclasses provide --
    def spec_doc(self, version: int) -> dict[str, Any]:
        raise NotImplementedError

    def plant(self) -> None:
        """Put data and an object hxpc does not own on the live system."""

    def lost(self) -> str:
        """What of the planted data or the foreign object is gone or changed ('' when nothing)."""
        return ""

    def leftovers(self) -> str:
        """What a converged apply must not leave behind (set-aside containers, locks), '' when nothing."""
        return ""

    def cleanup(self) -> None:
        pass

    # -- the command line --
    def write(self, version: int) -> None:
        self.version = version
        self.spec.write_text("# written by tests/faultlab.py\n" + json.dumps(self.spec_doc(version), indent=1))

    def hxpc(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.wrap([sys.executable, "-m", "hxpc", *args]), capture_output=True, text=True,
                              cwd=self.tmp, env={**os.environ, **self.env}, timeout=timeout)

    def apply(self, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.hxpc("apply", str(self.spec), "--env", ENV, "--yes", timeout=timeout)

    def plan_is_empty(self) -> tuple[bool, str]:
        done = self.hxpc("plan", str(self.spec), "--env", ENV, "--detailed-exitcode")
        return done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]

    def start_apply(self) -> subprocess.Popen[str]:
        return subprocess.Popen(self.wrap([sys.executable, "-m", "hxpc", "apply", str(self.spec), "--env", ENV,
                                           "--yes"]),
                                cwd=self.tmp, env={**os.environ, **self.env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def converge(self) -> Outcome:
        """The apply after a fault: it must exit 0, leave an empty plan, nothing behind, nothing lost."""
        started = time.monotonic()
        done = self.apply()
        took = time.monotonic() - started
        problems = []
        if done.returncode != 0:
            problems.append(f"apply exited {done.returncode}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        else:
            empty, shown = self.plan_is_empty()
            if not empty:
                problems.append(f"the plan after it is not empty: {shown}")
        left = self.leftovers()
        if left:
            problems.append(f"left behind: {left}")
        lost = self.lost()
        return Outcome(not problems, bool(lost), took, "; ".join(problems + ([f"lost: {lost}"] if lost else [])))

    def baseline_seconds(self) -> float:
        """How long one whole apply of a changed spec takes here: the kill moments are drawn within it."""
        self.write(self.version + 1)
        started = time.monotonic()
        done = self.apply()
        assert done.returncode == 0, done.stdout + done.stderr
        return time.monotonic() - started

    def kill_loop(self, runs: int, rng: random.Random, tally: Tally | None = None,
                  on_outcome: Callable[[Outcome, float], None] | None = None) -> Tally:
        """`kill -9` a changing apply at a random moment, then converge; `runs` times."""
        tally = tally or Tally("kill -9 mid-apply", self.target)
        self.write(self.version + 1)
        first = self.apply()
        assert first.returncode == 0, first.stdout + first.stderr
        self.plant()
        span = self.baseline_seconds()
        for _ in range(runs):
            self.write(self.version + 1)
            at = rng.uniform(0.05, span)
            proc = self.start_apply()
            time.sleep(at)
            proc.kill()
            proc.communicate(timeout=60)
            outcome = self.converge()
            tally.outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome, at)
        return tally


class KubeLab(Lab):
    """Two services on a real API server (tests/kubecluster.py, whose pods kwok runs): a StatefulSet whose
    claim stands for its data (kwok runs no container to write into it: the claim must stay the same object,
    bound), and a Deployment of two replicas; a ConfigMap hxpc does not own beside them."""

    target = "kubernetes (kube-apiserver)"

    def __init__(self, tmp: Path, cluster: Any):
        super().__init__(tmp, {"KUBECONFIG": str(cluster.kubeconfig)})
        self.cluster = cluster
        self.project = f"kk{uuid.uuid4().hex[:8]}"
        self.namespace = f"{self.project}-{ENV}"
        self.claim_uid = self.foreign_uid = ""
        cluster.add_persistent_volumes(1, size="5Gi", name_prefix=f"{self.project}-pv-")

    def kubectl(self, *args: str, check: bool = True) -> str:
        return str(self.cluster.kubectl("-n", self.namespace, *args, check=check).stdout)

    def spec_doc(self, version: int) -> dict[str, Any]:
        def svc(port: int, replicas: int, **extra: Any) -> dict[str, Any]:
            return {"image": BUSYBOX, "ports": {"http": port}, "replicas": replicas, "env": {"VERSION": str(version)},
                    "health": {"http": {"path": "/health", "port": "http"}, "interval": "1s", "timeout": "1s",
                               "retries": 2}, **extra}

        return {"apiVersion": "hxpc/v1", "project": self.project,
                "services": {"db": svc(5432, 1, volumes={"data": {"path": "/data", "size": "1Gi"}}),
                             "web": svc(8080, 2, depends_on=["db"])},
                "targets": {"kubernetes": {}}, "environments": {ENV: {}}}

    def _uid(self, kind: str, name: str) -> str:
        found = self.kubectl("get", kind, name, "-o", "jsonpath={.metadata.uid} {.status.phase}", check=False)
        return found.strip()

    def plant(self) -> None:
        self.claim_uid = self._uid("pvc", "data-db-0")
        self.kubectl("create", "configmap", "foreign", "--from-literal=k=v")
        self.foreign_uid = self._uid("configmap", "foreign")

    def lost(self) -> str:
        problems = []
        if not self.claim_uid.endswith(" Bound") or self._uid("pvc", "data-db-0") != self.claim_uid:
            problems.append(f"the claim data-db-0 is {self._uid('pvc', 'data-db-0') or 'gone'}, "
                            f"was {self.claim_uid or 'never made'}")
        if not self.foreign_uid or self._uid("configmap", "foreign") != self.foreign_uid:
            problems.append("the foreign ConfigMap was changed or removed")
        return "; ".join(problems)

    def leftovers(self) -> str:
        lease = f"hxpc-lock-{self.project}-{ENV}"
        return ", ".join(f"the Lease {lease} in {namespace}" for namespace in (self.namespace, "default")
                         if self.cluster.kubectl("-n", namespace, "get", "lease", lease, check=False).returncode == 0)

    def cleanup(self) -> None:
        self.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false", "--ignore-not-found", check=False)
        self.cluster.kubectl("-n", "default", "delete", "lease", f"hxpc-lock-{self.project}-{ENV}",
                             "--ignore-not-found", check=False)


class DockerLab(Lab):
    """Two services on the Docker Engine (`DOCKER_HOST` in `env`), one with a volume holding data."""

    target = "compose (Docker Engine)"

    def __init__(self, tmp: Path, env: dict[str, str] | None = None,
                 wrap: Callable[[list[str]], list[str]] = lambda argv: argv):
        super().__init__(tmp, env, wrap)
        self.project = f"hxk{uuid.uuid4().hex[:8]}"
        self.port = free_base(host="0.0.0.0")
        self.foreign = ""

    def docker(self, *args: str, check: bool = True) -> str:
        host = self.env.get("DOCKER_HOST")
        return docker(*(["-H", host] if host else []), *args, check=check)

    def spec_doc(self, version: int) -> dict[str, Any]:
        def svc(port: int, replicas: int, **extra: Any) -> dict[str, Any]:
            return {"image": BUSYBOX, "command": ["/bin/httpd"], "args": ["-f", "-p", str(port), "-h", "/www"],
                    "ports": {"http": port}, "replicas": replicas, "env": {"VERSION": str(version)},
                    "health": {"http": {"path": "/health", "port": "http"}, "interval": "1s", "timeout": "1s",
                               "retries": 2, "start_period": "1s"}, **extra}

        return {"apiVersion": "hxpc/v1", "project": self.project,
                "services": {"db": svc(self.port, 1, volumes={"data": {"path": "/data"}}),
                             "web": svc(self.port + 2, 2, depends_on=["db"])},
                "targets": {"compose": {}}, "environments": {ENV: {}}}

    def containers(self) -> dict[str, str]:
        out = self.docker("ps", "-a", "--filter", f"name={self.project}", "--format", "{{.Names}} {{.ID}}")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def plant(self) -> None:
        self.docker("exec", f"{self.project}-{ENV}-db-1", "sh", "-c", "echo planted > /data/marker")
        made = self.docker("run", "-d", "--name", f"{self.project}-{ENV}-foreign", "--label",
                           f"hxpc.lab={self.project}", BUSYBOX, "/bin/httpd", "-f", "-p", "9", "-h", "/www")
        self.foreign = made.strip()

    def lost(self) -> str:
        problems = []
        said = self.docker("exec", f"{self.project}-{ENV}-db-1", "cat", "/data/marker", check=False).strip()
        if said != "planted":
            problems.append(f"the volume's marker file reads {said!r}")
        # the same container under the same name (an engine restart may stop it; hxpc must not touch it)
        state = self.docker("inspect", "-f", "{{.Id}} {{.Name}}", f"{self.project}-{ENV}-foreign",
                            check=False).strip()
        if not self.foreign or state != f"{self.foreign} /{self.project}-{ENV}-foreign":
            problems.append(f"the foreign container is {state or 'gone'}")
        return "; ".join(problems)

    def leftovers(self) -> str:
        names = [n for n in self.containers() if n.endswith("-hxpc-old") or n.startswith("hxpc-lock-")]
        locks = self.docker("ps", "-a", "--filter", f"name=hxpc-lock-{self.project}", "--format", "{{.Names}}")
        return ", ".join(names + locks.split())

    def cleanup(self) -> None:
        ids = self.docker("ps", "-aq", "--filter", f"label=hxpc.dev/project={self.project}", check=False).split()
        ids += self.docker("ps", "-aq", "--filter", f"name={self.project}", check=False).split()
        if ids:
            self.docker("rm", "-f", *sorted(set(ids)), check=False)
        for kind in ("network", "volume"):
            found = self.docker(kind, "ls", "-q", "--filter", f"label=hxpc.dev/project={self.project}",
                                check=False).split()
            if found:
                self.docker(kind, "rm", *found, check=False)


def start_systemd_host(name: str) -> None:
    """A container running systemd as PID 1, prepared as tests/engine/backends/systemd/test_apply.py does."""
    docker("run", "-d", "--name", name, "--hostname", name, "--cap-add", "SYS_ADMIN", "--tmpfs", "/run",
           "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", SYSTEMD_IMAGE)
    state, deadline = "", time.monotonic() + 120
    while state not in ("running", "degraded") and time.monotonic() < deadline:  # the bus may not answer yet
        state = docker("exec", name, "systemctl", "is-system-running", "--wait", check=False).strip()
        time.sleep(0 if state else 0.5)
    assert state in ("running", "degraded"), f"{name}: systemd is {state or 'not answering'}"
    docker("exec", name, "sh", "-c", "mkdir -p /srv /etc/systemd/system/sdt-.service.d && echo ok > /srv/health "
                                     "&& chmod 0644 /srv/health")
    docker("exec", "-i", name, "sh", "-c", "cat > /etc/systemd/system/sdt-.service.d/50-test-container.conf && "
                                           "systemctl daemon-reload", input=TEST_DROPIN.encode())


class SystemdLab(Lab):
    """Two native busybox services on a systemd host, one with a state directory holding data."""

    target = "systemd (docker:// host)"
    HTTPD = ("/bin/busybox", "httpd", "-f", "-p", "${PORT_HTTP}", "-h", "/srv")

    def __init__(self, tmp: Path, host: str, address: str | None = None, env: dict[str, str] | None = None,
                 port: int = 0):
        super().__init__(tmp, env)
        self.host = host
        self.address = address or f"docker://{host}"
        self.project = f"sdt-k{uuid.uuid4().hex[:6]}"
        self.port = port or random.randrange(9200, 9800, 10)
        self.foreign_unit = f"sdt-foreign-{uuid.uuid4().hex[:6]}.service"
        self.foreign_text = ""

    def sh(self, script: str, check: bool = True) -> str:
        return docker("exec", self.host, "sh", "-c", script, check=check)

    def spec_doc(self, version: int) -> dict[str, Any]:
        def svc(port: int, replicas: int, **extra: Any) -> dict[str, Any]:
            return {"exec": list(self.HTTPD), "ports": {"http": port}, "hosts": ["h1"], "replicas": replicas,
                    "env": {"VERSION": str(version)},
                    "health": {"http": {"path": "/health", "port": "http"}, "interval": "500ms", "timeout": "1s",
                               "retries": 2}, **extra}

        return {"apiVersion": "hxpc/v1", "project": self.project, "hosts": {"h1": {"address": self.address}},
                "services": {"db": svc(self.port, 1, volumes={"data": {"path": "/var/lib/db"}}),
                             "web": svc(self.port + 2, 2, depends_on=["db"])},
                "targets": {"systemd": {"hosts": ["h1"], "runtime": "native"}}, "environments": {ENV: {}}}

    def plant(self) -> None:
        self.sh(f"echo planted > /var/lib/hxpc/{self.project}/db/data/marker")
        self.foreign_text = f"[Unit]\nDescription=not hxpc's\n[Service]\nExecStart=/bin/sleep 3600\n# {self.project}\n"
        docker("exec", "-i", self.host, "sh", "-c", f"cat > /etc/systemd/system/{self.foreign_unit} && "
               f"systemctl daemon-reload && systemctl start {self.foreign_unit}", input=self.foreign_text.encode())

    def lost(self) -> str:
        problems = []
        said = self.sh(f"cat /var/lib/hxpc/{self.project}/db/data/marker", check=False).strip()
        if said != "planted":
            problems.append(f"the state directory's marker reads {said!r}")
        text = self.sh(f"cat /etc/systemd/system/{self.foreign_unit}", check=False)
        active = self.sh(f"systemctl is-active {self.foreign_unit}", check=False).strip()
        if text != self.foreign_text or active != "active":
            changed = "unchanged" if text == self.foreign_text else "changed"
            problems.append(f"the foreign unit is {active} and {changed}")
        return "; ".join(problems)

    def leftovers(self) -> str:
        found = self.sh(f"ls -d /run/lock/hxpc-{self.project}-{ENV} 2>/dev/null; "
                        f"for f in /etc/systemd/system/{self.project}-*; do [ -s \"$f\" ] || echo \"empty $f\"; done; "
                        "true")
        return found.strip().replace("\n", ", ")

    def cleanup(self) -> None:
        self.sh(f"cd /etc/systemd/system && for u in {self.project}-*.service {self.project}-*@*.service; do "
                "[ -e \"$u\" ] && systemctl disable --now \"$u\" 2>/dev/null; done; "
                f"rm -rf {self.project}-* /var/lib/hxpc/{self.project} /etc/hxpc/{self.project}-* "
                f"/run/lock/hxpc-{self.project}-*; systemctl stop {self.foreign_unit} 2>/dev/null; "
                f"rm -f {self.foreign_unit}; systemctl daemon-reload; true", check=False)


# -- faults of the live systems --------------------------------------------------------------------------------------


class SecondEngine:
    """A Docker Engine of the test's own (socket, data root, exec root), in a network namespace of its own, so
    restarting it disturbs no one else; the busybox test image is loaded into it from the machine's engine.

    Its own network namespace, because dockerd started beside another one changes the machine's network (with
    `--bridge none` it deletes `docker0`, which the shared engine's containers use). hxpc's commands reach it
    through `DOCKER_HOST` and are run in that namespace (`wrap`), where its published ports answer.
    """

    def __init__(self, root: Path):
        self.root = root
        self.socket = root / "d.sock"
        self.host = f"unix://{self.socket}"
        self.netns = f"hxd{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen[bytes] | None = None

    def wrap(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv]  # not `ip netns exec`: it hides cgroups

    def setup(self) -> None:
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        subprocess.run(self.wrap(["ip", "link", "set", "lo", "up"]), check=True, capture_output=True)
        self.start()

    def teardown(self) -> None:
        self.stop()
        subprocess.run(["umount", "-R", str(self.root / "data")], capture_output=True)
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - the daemon writes it as long as it runs
        self.proc = subprocess.Popen(self.wrap(
            ["dockerd", "--host", self.host, "--data-root", str(self.root / "data"), "--exec-root",
             str(self.root / "exec"), "--pidfile", str(self.root / "d.pid")]), stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "-H", self.host, "version", "--format", "{{.Server.Version}}"],
                             capture_output=True, timeout=10).returncode != 0:
            assert self.proc.poll() is None, (self.root / "dockerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the second dockerd did not answer within 60 s"
            time.sleep(0.2)

    def load(self, image: str) -> None:
        saved = subprocess.run(["docker", "save", image], capture_output=True, check=True, timeout=120).stdout
        docker("-H", self.host, "load", input=saved)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down_s: float) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


def interrupted_apply(lab: Lab, fault: Callable[[], None], at: float) -> tuple[subprocess.CompletedProcess[str],
                                                                                   Outcome]:
    """Start an apply of a changed spec, inject `fault` `at` seconds in, let the apply end by itself, then
    converge. The faulted apply must end with 0 or 1 and the live system's error, never a traceback."""
    lab.write(lab.version + 1)
    proc = lab.start_apply()
    time.sleep(at)
    fault()
    out, _ = proc.communicate(timeout=900)
    faulted = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
    return faulted, lab.converge()


class SilentHost:
    """A TCP port that accepts connections and never says a word: a host that does not answer ssh."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def unreachable_spec(lab: SystemdLab, port: int) -> None:
    """The lab's spec with a second host `h2` at `port` of this machine (a `SilentHost`), where `web` runs."""
    doc = lab.spec_doc(1)
    doc["hosts"]["h2"] = {"address": f"ssh://root@127.0.0.1:{port}"}
    doc["targets"]["systemd"]["hosts"] = ["h1", "h2"]
    doc["services"]["web"]["hosts"] = ["h2"]
    lab.spec.write_text("# written by tests/faultlab.py\n" + json.dumps(doc))


def cut_ssh(host: str) -> None:
    """Kill every ssh session on the host (the master connection hxpc multiplexes over), keeping sshd itself."""
    pids = docker("exec", host, "sh", "-c", "pgrep -f '^sshd: root' || true").split()
    if pids:
        docker("exec", host, "kill", "-9", *pids, check=False)
