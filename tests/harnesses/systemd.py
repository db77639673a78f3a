"""The systemd target on real systemd: two containers running systemd as PID 1 are two hosts, reached with
`docker://` (and once over ssh). Services are native busybox httpd units, hardened as in production. Each
test uses its own project (and ports), so the containers are shared by the session.

Test environment only: in these unprivileged containers, systemd 252 cannot combine `PrivateUsers=yes`
with `ProtectProc=invisible` (the unit fails with 217/USER, "Failed to set up user namespacing: No such
file or directory"; either one alone works). `systemd_hosts` relaxes `ProtectProc=` with a prefix drop-in
for the tests' units (`sdt-.service.d/`); the units hxpc writes are not changed.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import require, require_tool

from harnesses import Svc
from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import spec_hash
from hxpc.compiler.pipeline import resolve_env
from hxpc.engine import plan_live
from hxpc.engine.apply import ApplyOptions, apply
from hxpc.engine.backends.systemd.backend import SystemdBackend
from hxpc.engine.backends.systemd.transport import CommandResult, DockerExecTransport, SshTransport, Transport
from hxpc.engine.lock import LockHandle, new_lock_info
from hxpc.engine.plan import Plan
from hxpc.engine.progress import PlainProgress
from hxpc.engine.render import render_json, render_text
from hxpc.engine.report import ApplyReport
from hxpc.sources import FileSources

IMAGE = "hxpc-test/systemd:bookworm"
HTTPD = ["/bin/busybox", "httpd", "-f", "-p", "${PORT_HTTP}", "-h", "/srv"]
BROKEN = ["/bin/busybox", "httpd", "-f", "-p", "${PORT_HTTP}", "-h", "/nonexistent"]
TEST_DROPIN = "[Service]\n# test containers only: see tests/harnesses/systemd.py\nProtectProc=default\n"
ENV = "test"


def docker(*args: str, check: bool = True, input: bytes | None = None) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, input=input, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr.decode()}")
    return done.stdout.decode()


def sh(container: str, script: str) -> str:
    return docker("exec", container, "sh", "-c", script)


def enable_ssh(host: str, tmp: Path) -> tuple[str, Path]:
    """Start sshd in the systemd host container with a fresh key; its address and an ssh config for it."""
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    docker("exec", "-i", host, "sh", "-c", "mkdir -p -m 700 /root/.ssh && cat > /root/.ssh/authorized_keys && "
           "chmod 600 /root/.ssh/authorized_keys && systemctl start ssh", input=key.with_suffix(".pub").read_bytes())
    ip = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", host).strip()
    config = tmp / "ssh_config"
    config.write_text(f"Host {ip}\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                      "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    for _ in range(80):  # sshd starts asynchronously
        if subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", ip, "true"],
                          capture_output=True).returncode == 0:
            break
        time.sleep(0.25)
    return ip, config


@dataclass
class Hosts:
    h1: str
    h2: str


def systemd_hosts() -> Iterator[Hosts]:
    """Two containers running systemd, started for the session (a generator for a session fixture)."""
    require_tool("docker")
    require(f"the image {IMAGE} is missing (.ci/build-test-images.sh builds it)",
            subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0)
    names = [f"hxpc-sdt-{uuid.uuid4().hex[:6]}-{i}" for i in (1, 2)]
    try:
        for name in names:
            docker("run", "-d", "--name", name, "--hostname", name, "--cap-add", "SYS_ADMIN", "--tmpfs", "/run",
                   "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", IMAGE)
        for name in names:
            state = docker("exec", name, "systemctl", "is-system-running", "--wait", check=False).strip()
            assert state in ("running", "degraded"), f"{name}: systemd is {state}"
            sh(name, "mkdir -p /srv /etc/systemd/system/sdt-.service.d && echo ok > /srv/health && "
                     "chmod 0644 /srv/health")
            docker("exec", "-i", name, "sh", "-c", "cat > /etc/systemd/system/sdt-.service.d/50-test-container.conf"
                   " && systemctl daemon-reload", input=TEST_DROPIN.encode())
        yield Hosts(*names)
    finally:
        for name in names:
            docker("rm", "-f", name, check=False)


class Recording(Transport):
    """A transport that keeps every command line and stdin it sent (to prove where secrets go)."""

    def __init__(self, inner: Transport):
        self.inner, self.name = inner, inner.name
        self.argvs: list[list[str]] = []
        self.guard = threading.Lock()

    def wrap(self, argv: Sequence[str]) -> list[str]:
        full = self.inner.wrap(argv)
        with self.guard:
            self.argvs.append(full)
        return full

    def unreachable(self, result: CommandResult) -> bool:
        return self.inner.unreachable(result)

    def count(self, text: str) -> int:
        return sum(1 for a in self.argvs if any(text in part for part in a))


def service(port: int, hosts: list[str], **extra: Any) -> dict[str, Any]:
    return {"exec": HTTPD, "ports": {"http": port}, "hosts": hosts,
            "health": {"http": {"path": "/health", "port": "http"}, "interval": "500ms", "timeout": "1s",
                       "retries": 2}, **extra}


def unit_props(container: str, unit: str) -> dict[str, str]:
    out = docker("exec", container, "systemctl", "show", "-p", "ActiveState,SubState,MainPID,InvocationID,LoadState,"
                 "UnitFileState,NRestarts", unit)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def http_ok(container: str, port: int) -> bool:
    done = subprocess.run(["docker", "exec", container, "busybox", "wget", "-q", "-O", "-",
                           f"http://127.0.0.1:{port}/health"], capture_output=True)
    return done.returncode == 0 and done.stdout.strip() == b"ok"


class SystemdStack:
    """One test's project: its spec (rewritten per step), backends with recording transports, apply."""

    name = "systemd"
    detects_secret_rotation = False   # a secret's value reaches only the root-only env file, never a plan

    def __init__(self, tmp_path: Path, hosts: Hosts, project: str | None = None,
                 addresses: dict[str, str] | None = None, ssh_config: str | None = None):
        self.tmp, self.hosts, self.ssh_config = tmp_path, hosts, ssh_config
        self.project = project or f"sdt-{uuid.uuid4().hex[:6]}"
        self.scope = "systemd:h1"
        self.addresses_ = addresses or {"h1": f"docker://{hosts.h1}", "h2": f"docker://{hosts.h2}"}
        self.spec_path = tmp_path / f"{self.project}.yaml"
        self.transports: dict[str, Recording] = {}
        self.output: list[str] = []
        self.port = random.randrange(10000, 60000, 100)
        self.ports: dict[str, int] = {}
        self.svcs: dict[str, Svc] = {}

    # -- the spec and the engine ----------------------------------------------------------------------------------

    def write_raw(self, services: dict[str, Any], secrets: Mapping[str, Any] | None = None) -> None:
        spec = {"apiVersion": "hxpc/v1", "project": self.project,
                "hosts": {h: {"address": a} for h, a in self.addresses_.items()},
                "secrets": dict(secrets or {}), "services": services,
                "targets": {"systemd": {"hosts": sorted(self.addresses_), "runtime": "native"}},
                "environments": {ENV: {}}}
        self.spec_path.write_text(json.dumps(spec, indent=1))

    def port_of(self, name: str) -> int:
        return self.ports.setdefault(name, self.port + 10 * len(self.ports))

    def hosts_of(self, s: Svc) -> list[str]:
        return ["h1", "h2"] if s.replicas > 1 else ["h1"]

    def write(self, services: Mapping[str, Svc], secrets: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.svcs = dict(services)
        raw = {}
        for name, s in services.items():
            env = {**s.env, **({"SOFTWARE_VERSION": str(s.version)} if s.version != 1 else {})}
            spec = service(self.port_of(name), self.hosts_of(s), replicas=s.replicas, env=env,
                           secrets=dict(s.secrets), depends_on=list(s.depends_on),
                           **({"exec": BROKEN} if s.broken else {}))
            if not s.health:
                spec.pop("health")
            raw[name] = spec
        self.write_raw(raw, secrets)

    def backend(self) -> SystemdBackend:
        resolved = resolve_env(FileSources(str(self.spec_path)), ENV)
        self.resolved = resolved
        meta = Meta(self.project, ENV, self.spec_path.name, spec_hash(resolved))
        if not self.transports:
            for host, address in self.addresses_.items():
                inner: Transport = (DockerExecTransport(address.removeprefix("docker://"))
                                    if address.startswith("docker://") else SshTransport(address, self.ssh_config))
                self.transports[host] = Recording(inner)
        return SystemdBackend(resolved.stack, meta, ssh_config=self.ssh_config, transports=dict(self.transports))

    def plan_with_backend(self) -> tuple[Plan, SystemdBackend]:
        backend = self.backend()
        plan = plan_live({"systemd": backend}, self.resolved.stack.waves, project=self.project, env=ENV,
                         spec_hash=backend.meta.spec_hash)
        self.output.append(render_text(plan))
        self.output.append(render_json(plan))
        return plan, backend

    def plan(self) -> Plan:
        return self.plan_with_backend()[0]

    def apply(self, plan: Plan | None = None, **opts: Any) -> ApplyReport:
        made, backend = self.plan_with_backend()
        log = io.StringIO()
        progress = opts.pop("progress", None) or PlainProgress(log)
        try:
            report = apply(plan or made, {"systemd": backend}, env=ENV, spec_hash=backend.meta.spec_hash,
                           options=ApplyOptions(handle_signals=False, backoff_s=0.1, **opts), progress=progress)
            self.output.append(report.render())
            return report
        finally:
            self.output.append(log.getvalue())

    # -- the hosts as an operator reads them ----------------------------------------------------------------------

    def container(self, host: str) -> str:
        return self.hosts.h1 if host == "h1" else self.hosts.h2

    def units(self, name: str) -> list[tuple[str, str]]:
        """(container, unit) of every replica of service `name` as the current spec places them."""
        s = self.svcs[name]
        hosts = self.hosts_of(s)
        if s.replicas == 1:
            return [(self.container(hosts[0]), f"{self.project}-{name}.service")]
        return [(self.container(hosts[i % len(hosts)]), f"{self.project}-{name}@{i}.service")
                for i in range(s.replicas)]

    # -- the Harness ----------------------------------------------------------------------------------------------

    def desired(self) -> set[str]:
        return {str(k) for k in self.backend().desired()}

    def addresses(self, name: str) -> set[str]:
        return {str(k) for k, d in self.backend().desired().items() if d.workload == name}

    def bookkeeping(self) -> set[str]:
        return set()

    def instances(self, name: str) -> set[str]:
        return {unit_props(c, u)["InvocationID"] for c, u in self.units(name)}

    def serving(self, name: str) -> bool:
        for _ in range(20):
            if all(unit_props(c, u)["ActiveState"] == "active" and http_ok(c, self.port_of(name) + i)
                   for i, (c, u) in enumerate(self.units(name))):
                return True
            time.sleep(0.25)
        return False

    def exists(self, name: str) -> bool:
        listing = sh(self.hosts.h1, "ls /etc/systemd/system") + sh(self.hosts.h2, "ls /etc/systemd/system")
        return f"{self.project}-{name}" in listing

    FOREIGN = "[Unit]\nDescription=not hxpc's\n[Service]\nExecStart=/bin/sleep infinity\n"

    def _foreign(self, name: str) -> None:
        docker("exec", "-i", self.hosts.h1, "sh", "-c", f"cat > /etc/systemd/system/{name} && systemctl "
               f"daemon-reload && systemctl start {name}", input=self.FOREIGN.encode())

    def add_stray(self) -> Any:
        name = f"{self.project}-other.service"
        self._foreign(name)
        return name, unit_props(self.hosts.h1, name)["InvocationID"]

    def stray_intact(self, stray: Any) -> bool:
        name, invocation = stray
        return bool(sh(self.hosts.h1, f"cat /etc/systemd/system/{name}") == self.FOREIGN
                    and unit_props(self.hosts.h1, name)["InvocationID"] == invocation)

    def put_in_the_way(self, name: str) -> str:
        self._foreign(f"{self.project}-{name}.service")
        return f"systemd:h1/unit/{self.project}-{name}.service"

    def change_outside(self, name: str) -> str:
        path = f"/etc/systemd/system/{self.project}-{name}.service"
        sh(self.hosts.h1, f"sed -i 's/^Restart=on-failure/Restart=always/' {path} && systemctl daemon-reload")
        return f"systemd:h1/unit/{self.project}-{name}.service: changed since the plan was made"

    def lock_held(self) -> bool:
        return f"hxpc-{self.project}-{ENV}" in sh(self.hosts.h1, "ls /run/lock") + sh(self.hosts.h2, "ls /run/lock")

    def hold_lock(self) -> LockHandle:
        return self.backend().lock(new_lock_info("somehash", 600))

    def sees_secret(self, name: str, variable: str, value: str) -> bool:
        container, unit = self.units(name)[0]
        env = sh(container, f"tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value {unit})/environ")
        return f"{variable}={value}" in env.splitlines()

    def written(self) -> str:
        units = "".join(sh(c, f"cd /etc/systemd/system && cat {self.project}-* {self.project}-*.d/* 2>/dev/null; true")
                        for c in (self.hosts.h1, self.hosts.h2))
        return "\n".join(self.output) + json.dumps([t.argvs for t in self.transports.values()]) + units

    def cleanup(self) -> None:
        for container in (self.hosts.h1, self.hosts.h2):
            sh(container, f"cd /etc/systemd/system && for u in {self.project}-*.service; do "
                          f"[ -e \"$u\" ] && systemctl disable --now \"$u\" >/dev/null 2>&1; done; "
                          f"rm -rf {self.project}-* /etc/hxpc/{self.project}-{ENV} /run/lock/hxpc-{self.project}-{ENV};"
                          " systemctl daemon-reload; systemctl reset-failed; true")

    # -- what only the systemd backend promises ----------------------------------------------------------------------

    def verify_fresh(self, report: ApplyReport) -> None:
        assert [w.gate for w in report.waves] == ["passed", "passed"]
        for container, unit in self.units("db") + self.units("web"):
            props = unit_props(container, unit)
            assert (props["ActiveState"], props["SubState"], props["UnitFileState"]) == ("active", "running",
                                                                                         "enabled")
        # h2's web started only after h1's db passed its gate: systemd cannot order across hosts, the waves do
        (db_host, db), (web_host, web) = self.units("db")[0], self.units("web")[1]
        db_started = sh(db_host, f"systemctl show -p ExecMainStartTimestampMonotonic --value {db}")
        web_started = sh(web_host, f"systemctl show -p ExecMainStartTimestampMonotonic --value {web}")
        assert int(db_started) < int(web_started)  # one kernel: the containers share the monotonic clock
        # one daemon-reload per host per wave
        assert self.transports["h1"].count("daemon-reload") == 2 and self.transports["h2"].count("daemon-reload") == 1

    def verify_replan(self) -> None:
        for t in self.transports.values():
            t.argvs.clear()
        self.plan()
        assert [len(t.argvs) for t in self.transports.values()] == [1, 1]  # one read command per host

    def verify_changed(self, plan: Plan, what: str) -> None:
        touched = {(a.kind, a.key.scope, a.key.name) for a in plan.touched}
        if what == "version":
            assert touched == {("update", "h1", f"{self.project}-web@.service"),
                               ("update", "h2", f"{self.project}-web@.service")}
            assert "Environment" in render_text(plan)
        else:
            assert touched == {("update", "h1", f"{self.project}-db.service")}

    def verify_applied_change(self) -> None:
        container, unit = self.units("web")[1]
        env = sh(container, f"tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value {unit})/environ")
        assert "SOFTWARE_VERSION=2" in env

    def verify_pruned(self, name: str) -> None:
        props = unit_props(self.hosts.h1, f"{self.project}-{name}.service")
        assert props["ActiveState"] == "inactive" and props["LoadState"] == "not-found"
        for container in (self.hosts.h1, self.hosts.h2):
            assert sh(container, f"ls /etc/systemd/system | grep -c {self.project}-{name} || true").strip() == "0"
            assert f"{self.project}-{name}" not in sh(container, "ls /etc/systemd/system/multi-user.target.wants")

    def verify_rolled_back(self, report: ApplyReport, name: str, before: set[str]) -> None:
        text = report.render()
        assert "auto-restart" in text + "".join(self.output)
        assert unit_props(*self.units(name)[0])["ActiveState"] == "active"
        assert [a.kind for a in self.plan().touched] == ["update"]

    def verify_secret(self, name: str, value: str) -> None:
        for container in (self.hosts.h1, self.hosts.h2) if self.svcs[name].replicas > 1 else (self.hosts.h1,):
            listing = sh(container, f"stat -c '%a %U:%G %n' /etc/hxpc/{self.project}-{ENV} "
                                    f"/etc/hxpc/{self.project}-{ENV}/*")
            assert listing.splitlines() == [f"700 root:root /etc/hxpc/{self.project}-{ENV}",
                                            f"600 root:root /etc/hxpc/{self.project}-{ENV}/{name}.env"]
