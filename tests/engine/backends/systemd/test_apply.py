"""The systemd backend against real systemd: two containers running systemd as PID 1 are two hosts,
reached with `docker://` (and once over ssh). Services are native busybox httpd units, hardened as in
production. Each test uses its own project (and ports), so the containers are shared by the session.

Test environment only: in these unprivileged containers, systemd 252 cannot combine `PrivateUsers=yes`
with `ProtectProc=invisible` (the unit fails with 217/USER, "Failed to set up user namespacing: No such
file or directory"; either one alone works). The fixture relaxes `ProtectProc=` with a prefix drop-in
for the tests' units (`sdt-.service.d/`); the units hxpc writes are not changed.
"""

from __future__ import annotations

import io
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import require, require_tool

from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import spec_hash
from hxpc.compiler.pipeline import resolve_env
from hxpc.engine import plan_live
from hxpc.engine.apply import ApplyOptions, apply
from hxpc.engine.backends.systemd.backend import SystemdBackend
from hxpc.engine.backends.systemd.desired import Check, probe_script
from hxpc.engine.backends.systemd.transport import CommandResult, DockerExecTransport, SshTransport, Transport
from hxpc.engine.lock import new_lock_info
from hxpc.engine.plan import NameClash, Plan, load_plan
from hxpc.engine.progress import PlainProgress
from hxpc.engine.render import render_json, render_text
from hxpc.engine.report import ApplyFailed, ApplyReport
from hxpc.errors import BackendError, LockHeld, StalePlan
from hxpc.sources import FileSources

pytestmark = pytest.mark.systemd

IMAGE = "hxpc-test/systemd:bookworm"
HTTPD = ["/bin/busybox", "httpd", "-f", "-p", "${PORT_HTTP}", "-h", "/srv"]
TEST_DROPIN = "[Service]\n# test containers only: see tests/engine/backends/systemd/test_apply.py\n" \
              "ProtectProc=default\n"


def docker(*args: str, check: bool = True, input: bytes | None = None) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, input=input, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr.decode()}")
    return done.stdout.decode()


def sh(container: str, script: str) -> str:
    return docker("exec", container, "sh", "-c", script)


@dataclass
class Hosts:
    h1: str
    h2: str


@pytest.fixture(scope="session")
def hosts() -> Iterator[Hosts]:
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


class Stack:
    """One test's project: its spec (rewritten per step), backends with recording transports, apply."""

    def __init__(self, tmp_path: Path, hosts: Hosts, project: str, addresses: dict[str, str] | None = None,
                 ssh_config: str | None = None):
        self.tmp, self.hosts, self.project, self.ssh_config = tmp_path, hosts, project, ssh_config
        self.addresses = addresses or {"h1": f"docker://{hosts.h1}", "h2": f"docker://{hosts.h2}"}
        self.spec_path = tmp_path / f"{project}.yaml"
        self.transports: dict[str, Recording] = {}
        self.output: list[str] = []

    def write(self, services: dict[str, Any], secrets: dict[str, Any] | None = None) -> None:
        spec = {"apiVersion": "hxpc/v1", "project": self.project,
                "hosts": {h: {"address": a} for h, a in self.addresses.items()},
                "secrets": secrets or {}, "services": services,
                "targets": {"systemd": {"hosts": sorted(self.addresses), "runtime": "native"}},
                "environments": {"test": {}}}
        self.spec_path.write_text(json.dumps(spec, indent=1))

    def backend(self) -> SystemdBackend:
        resolved = resolve_env(FileSources(str(self.spec_path)), "test")
        self.resolved = resolved
        meta = Meta(self.project, "test", self.spec_path.name, spec_hash(resolved))
        if not self.transports:
            for host, address in self.addresses.items():
                inner: Transport = (DockerExecTransport(address.removeprefix("docker://"))
                                    if address.startswith("docker://") else SshTransport(address, self.ssh_config))
                self.transports[host] = Recording(inner)
        return SystemdBackend(resolved.stack, meta, ssh_config=self.ssh_config,
                              transports=dict(self.transports))

    def plan(self) -> tuple[Plan, SystemdBackend]:
        backend = self.backend()
        plan = plan_live({"systemd": backend}, self.resolved.stack.waves, project=self.project, env="test",
                         spec_hash=backend.meta.spec_hash)
        self.output.append(render_text(plan))
        self.output.append(render_json(plan))
        return plan, backend

    def apply(self, plan: Plan | None = None) -> ApplyReport:
        made, backend = self.plan()
        log = io.StringIO()
        try:
            return apply(plan or made, {"systemd": backend}, env="test", spec_hash=backend.meta.spec_hash,
                         options=ApplyOptions(handle_signals=False, backoff_s=0.1), progress=PlainProgress(log))
        finally:
            self.output.append(log.getvalue())


def unit_props(container: str, unit: str) -> dict[str, str]:
    out = docker("exec", container, "systemctl", "show", "-p", "ActiveState,SubState,MainPID,InvocationID,LoadState,"
                 "UnitFileState,NRestarts", unit)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def http_ok(container: str, port: int) -> bool:
    done = subprocess.run(["docker", "exec", container, "busybox", "wget", "-q", "-O", "-",
                           f"http://127.0.0.1:{port}/health"], capture_output=True)
    return done.returncode == 0 and done.stdout.strip() == b"ok"


# -- the scenarios ---------------------------------------------------------------------------------------------------


def test_fresh_apply_on_two_hosts_with_a_dependency_across_them(tmp_path: Path, hosts: Hosts) -> None:
    s = Stack(tmp_path, hosts, "sdt-fresh")
    s.write({"db": service(8101, ["h1"]),
             "api": service(8111, ["h1", "h2"], replicas=2, depends_on=["db"])})
    report = s.apply()
    assert report.outcome == "success", report.render()
    waves = {r.action.key: r.action.wave for r in report.results.values()}
    assert waves[next(k for k in waves if k.name == "sdt-fresh-db.service")] == 0
    assert {w for k, w in waves.items() if k.name == "sdt-fresh-api@.service"} == {1}
    assert [w.gate for w in report.waves] == ["passed", "passed"]
    for container, unit, port in ((hosts.h1, "sdt-fresh-db.service", 8101), (hosts.h1, "sdt-fresh-api@0.service",
                                                                            8111),
                                  (hosts.h2, "sdt-fresh-api@1.service", 8112)):
        props = unit_props(container, unit)
        assert (props["ActiveState"], props["SubState"], props["UnitFileState"]) == ("active", "running", "enabled")
        assert http_ok(container, port)
    # h2's api started only after h1's db passed its gate: systemd cannot order across hosts, the waves do
    db_started = sh(hosts.h1, "systemctl show -p ExecMainStartTimestampMonotonic --value sdt-fresh-db.service")
    api_started = sh(hosts.h2, "systemctl show -p ExecMainStartTimestampMonotonic --value sdt-fresh-api@1.service")
    assert int(db_started) < int(api_started)  # one kernel: the containers share the monotonic clock
    # one daemon-reload per host per wave; reads are one command per host whatever the number of units
    assert s.transports["h1"].count("daemon-reload") == 2 and s.transports["h2"].count("daemon-reload") == 1


def test_replan_after_apply_shows_no_changes(tmp_path: Path, hosts: Hosts) -> None:
    s = Stack(tmp_path, hosts, "sdt-replan")
    s.write({"db": service(8201, ["h1"]), "api": service(8211, ["h1", "h2"], replicas=3, depends_on=["db"])})
    s.apply()
    for t in s.transports.values():
        t.argvs.clear()
    plan, _ = s.plan()
    assert not plan.has_changes, render_text(plan)
    assert {a.kind for a in plan.actions} == {"noop"}
    assert [len(t.argvs) for t in s.transports.values()] == [1, 1]  # one read command per host


def test_changing_one_service_restarts_only_that_unit(tmp_path: Path, hosts: Hosts) -> None:
    s = Stack(tmp_path, hosts, "sdt-change")
    base = {"a": service(8301, ["h1"]), "b": service(8311, ["h1", "h2"], replicas=2)}
    s.write(base)
    s.apply()
    before = {u: unit_props(c, u) for c, u in ((hosts.h1, "sdt-change-a.service"),
                                               (hosts.h1, "sdt-change-b@0.service"),
                                               (hosts.h2, "sdt-change-b@1.service"))}
    s.write({**base, "b": service(8311, ["h1", "h2"], replicas=2, env={"LOG_LEVEL": "debug"})})
    plan, _ = s.plan()
    touched = {(a.kind, a.key.scope, a.key.name) for a in plan.touched}
    assert touched == {("update", "h1", "sdt-change-b@.service"), ("update", "h2", "sdt-change-b@.service")}
    assert "Environment" in render_text(plan)
    s.apply()
    after = {u: unit_props(c, u) for c, u in ((hosts.h1, "sdt-change-a.service"),
                                              (hosts.h1, "sdt-change-b@0.service"),
                                              (hosts.h2, "sdt-change-b@1.service"))}
    a = "sdt-change-a.service"
    assert (after[a]["MainPID"], after[a]["InvocationID"]) == (before[a]["MainPID"], before[a]["InvocationID"])
    for b in ("sdt-change-b@0.service", "sdt-change-b@1.service"):
        assert after[b]["InvocationID"] != before[b]["InvocationID"]
        assert after[b]["ActiveState"] == "active"
    env = sh(hosts.h2, "tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value sdt-change-b@1.service)/environ")
    assert "LOG_LEVEL=debug" in env


def test_a_unit_failing_its_health_gate_is_rolled_back(tmp_path: Path, hosts: Hosts) -> None:
    s = Stack(tmp_path, hosts, "sdt-gate")
    s.write({"web": service(8401, ["h1"])})
    s.apply()
    unit = "/etc/systemd/system/sdt-gate-web.service"
    good = sh(hosts.h1, f"cat {unit}")
    s.write({"web": service(8401, ["h1"], exec=["/bin/busybox", "httpd", "-f", "-p", "${PORT_HTTP}", "-h",
                                                "/nonexistent"])})
    with pytest.raises(ApplyFailed) as caught:
        s.apply()
    text = caught.value.report.render()
    assert "health gate failed" in str(caught.value)
    assert "rolled back" in text and "auto-restart" in text + "".join(s.output)
    assert sh(hosts.h1, f"cat {unit}") == good                  # the previous unit file is back
    for _ in range(20):
        if http_ok(hosts.h1, 8401):
            break
        time.sleep(0.25)
    assert http_ok(hosts.h1, 8401)                              # and the previous version serves again
    assert unit_props(hosts.h1, "sdt-gate-web.service")["ActiveState"] == "active"
    s.write({"web": service(8401, ["h1"])})
    assert not s.plan()[0].has_changes                          # live is exactly the old spec again


def test_a_native_exec_check_runs_as_the_units_dynamic_user_not_root(tmp_path: Path, hosts: Hosts) -> None:
    s = Stack(tmp_path, hosts, "sdt-asuser")
    s.write({"web": service(9201, ["h1"], health={"exec": ["/bin/sh", "-c", 'test "$(id -u)" != 0'],
                                                  "interval": "500ms", "timeout": "2s", "retries": 2})})
    report = s.apply()                                          # the gate passes only off root
    assert report.outcome == "success", report.render()
    assert [w.gate for w in report.waves] == ["passed"]
    # and as the service's own user: the gate's wrapper, beside the live unit, gets the unit's dynamic UID
    service_uid = sh(hosts.h1, f"stat -c %u /proc/{unit_props(hosts.h1, 'sdt-asuser-web.service')['MainPID']}")
    _, backend = s.plan()
    unit = next(o for k, o in backend.desired().items() if k.kind == "unit")
    wrapper = unit.extra.checks["sdt-asuser-web.service"].wrapper
    probe_uid = sh(hosts.h1, probe_script(Check("exec", command=("/bin/sh", "-c", "echo $(id -u)"), wrapper=wrapper)))
    assert probe_uid.strip() == service_uid.strip() != "0"
    # the transient probe units are collected
    assert "run-" not in sh(hosts.h1, "systemctl list-units --all --no-legend 'run-*.service'")


def test_removing_a_service_stops_and_removes_its_unit_only(tmp_path: Path, hosts: Hosts) -> None:
    s = Stack(tmp_path, hosts, "sdt-prune")
    keep = {"keep": service(8501, ["h1"])}
    s.write({**keep, "gone": service(8511, ["h1", "h2"], replicas=2, depends_on=["keep"])})
    s.apply()
    before = unit_props(hosts.h1, "sdt-prune-keep.service")
    s.write(keep)
    plan, _ = s.plan()
    assert {(a.kind, a.key.scope, a.key.name) for a in plan.touched} == {
        ("delete", "h1", "sdt-prune-gone@.service"), ("delete", "h2", "sdt-prune-gone@.service")}
    s.apply()
    for container, unit in ((hosts.h1, "sdt-prune-gone@0.service"), (hosts.h2, "sdt-prune-gone@1.service")):
        props = unit_props(container, unit)
        assert props["ActiveState"] == "inactive" and props["LoadState"] == "not-found"
        assert sh(container, "ls /etc/systemd/system | grep -c sdt-prune-gone || true").strip() == "0"
        assert "sdt-prune-gone" not in sh(container, "ls /etc/systemd/system/multi-user.target.wants")
    after = unit_props(hosts.h1, "sdt-prune-keep.service")
    assert after["InvocationID"] == before["InvocationID"] and after["ActiveState"] == "active"


def test_a_unit_without_hxpc_keys_is_never_touched(tmp_path: Path, hosts: Hosts) -> None:
    foreign = "[Unit]\nDescription=not hxpc's\n[Service]\nExecStart=/bin/sleep infinity\n"
    for name in ("sdt-mine-web.service", "sdt-mine-other.service"):
        docker("exec", "-i", hosts.h1, "sh", "-c", f"cat > /etc/systemd/system/{name} && systemctl daemon-reload "
               f"&& systemctl start {name}", input=foreign.encode())
    before = {n: unit_props(hosts.h1, n)["InvocationID"] for n in ("sdt-mine-web.service", "sdt-mine-other.service")}
    s = Stack(tmp_path, hosts, "sdt-mine")
    s.write({"api": service(8601, ["h1"]), "web": service(8611, ["h1"])})
    with pytest.raises(NameClash, match=r"systemd:h1/unit/sdt-mine-web.service: exists without hxpc's ownership"):
        s.plan()
    s.write({"api": service(8601, ["h1"])})            # out of the way: apply, then prune everything of ours
    s.apply()
    s.write({"api": service(8601, ["h2"])})             # moved: its h1 unit is pruned, the others are not
    s.apply()
    for name in ("sdt-mine-web.service", "sdt-mine-other.service"):
        assert sh(hosts.h1, f"cat /etc/systemd/system/{name}") == foreign
        assert unit_props(hosts.h1, name)["InvocationID"] == before[name]


def test_ssh_transport_against_the_containers_sshd(tmp_path: Path, hosts: Hosts) -> None:
    require_tool("ssh")
    require_tool("ssh-keygen")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    docker("exec", "-i", hosts.h1, "sh", "-c", "mkdir -p -m 700 /root/.ssh && cat > /root/.ssh/authorized_keys && "
           "chmod 600 /root/.ssh/authorized_keys && systemctl start ssh", input=key.with_suffix(".pub").read_bytes())
    ip = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", hosts.h1).strip()
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {ip}\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                      "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    for _ in range(40):  # sshd starts asynchronously
        if subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", ip, "true"],
                          capture_output=True).returncode == 0:
            break
        time.sleep(0.25)
    s = Stack(tmp_path, hosts, "sdt-ssh", addresses={"h1": ip}, ssh_config=str(config))
    s.write({"web": service(8701, ["h1"])})
    report = s.apply()
    assert report.outcome == "success"
    assert http_ok(hosts.h1, 8701)
    ssh = s.transports["h1"].inner
    assert isinstance(ssh, SshTransport)
    control = Path(ssh._control_dir())
    assert len(list(control.iterdir())) == 1      # one master connection carried every command
    assert not s.plan()[0].has_changes
    ssh.close()
    assert not control.exists()


def test_a_saved_plan_is_refused_after_an_outside_change(tmp_path: Path, hosts: Hosts) -> None:
    s = Stack(tmp_path, hosts, "sdt-stale")
    s.write({"web": service(8801, ["h1"])})
    s.apply()
    s.write({"web": service(8801, ["h1"], env={"MODE": "new"})})
    saved = load_plan(render_json(s.plan()[0]))
    path = "/etc/systemd/system/sdt-stale-web.service"
    sh(hosts.h1, f"sed -i 's/^Restart=on-failure/Restart=always/' {path} && systemctl daemon-reload")
    edited = sh(hosts.h1, f"cat {path}")
    with pytest.raises(StalePlan, match=r"systemd:h1/unit/sdt-stale-web.service: changed since the plan was made"):
        s.apply(saved)
    assert sh(hosts.h1, f"cat {path}") == edited        # nothing touched


def test_secrets_exist_only_in_the_root_only_file(tmp_path: Path, hosts: Hosts,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    value = 'tok "3n" $HOME `x` \\ end'
    secret_file = tmp_path / "hf-token"
    secret_file.write_text("file-secret-9f8e7d\n")
    s = Stack(tmp_path, hosts, "sdt-secret")
    secrets = {"db-password": {"env": "SDT_DB_PASSWORD"}, "hf": {"file": str(secret_file)}}
    s.write({"api": service(8901, ["h1", "h2"], replicas=2, secrets={"DB_PASSWORD": "db-password", "HF": "hf"})},
            secrets)
    monkeypatch.delenv("SDT_DB_PASSWORD", raising=False)
    with pytest.raises(BackendError, match=r"secret `db-password`: environment variable SDT_DB_PASSWORD is not set"):
        s.apply()
    assert sh(hosts.h1, "ls /etc/hxpc/sdt-secret-test 2>&1 || true").startswith("ls:")  # nothing touched
    monkeypatch.setenv("SDT_DB_PASSWORD", value)
    s.apply()
    for container, unit in ((hosts.h1, "sdt-secret-api@0.service"), (hosts.h2, "sdt-secret-api@1.service")):
        listing = sh(container, "stat -c '%a %U:%G %n' /etc/hxpc/sdt-secret-test /etc/hxpc/sdt-secret-test/*")
        assert listing.splitlines() == ["700 root:root /etc/hxpc/sdt-secret-test",
                                        "600 root:root /etc/hxpc/sdt-secret-test/api.env"]
        env = sh(container, f"tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value {unit})/environ")
        assert f"DB_PASSWORD={value}" in env and "HF=file-secret-9f8e7d" in env
        units = sh(container, "cd /etc/systemd/system && cat sdt-secret-api@.service sdt-secret-api@*.d/*")
        assert value not in units and "file-secret" not in units
    everything = "\n".join(s.output) + json.dumps([t.argvs for t in s.transports.values()])
    for leaked in (value, "file-secret-9f8e7d", "3n"):
        assert leaked not in everything
    assert not s.plan()[0].has_changes


def test_a_second_apply_is_refused_while_the_lock_is_held(tmp_path: Path, hosts: Hosts) -> None:
    s = Stack(tmp_path, hosts, "sdt-lock")
    s.write({"web": service(9001, ["h1"])})
    holder = s.backend().lock(new_lock_info("somehash", 600))
    try:
        assert "holder" in json.loads(sh(hosts.h2, "cat /run/lock/hxpc-sdt-lock-test/info.json"))
        with pytest.raises(LockHeld, match=r"another apply holds the lock for sdt-lock/test on host `h1`"):
            s.apply()
    finally:
        holder.release()
    assert "hxpc-sdt-lock-test" not in sh(hosts.h1, "ls /run/lock")


def test_an_unreachable_host_fails_the_plan_naming_it(tmp_path: Path, hosts: Hosts) -> None:
    s = Stack(tmp_path, hosts, "sdt-down", addresses={"h1": f"docker://{hosts.h1}", "h2": "docker://hxpc-sdt-gone"})
    s.write({"web": service(9101, ["h1"]), "api": service(9111, ["h2"])})
    with pytest.raises(BackendError, match=r"cannot read host `h2`: docker://hxpc-sdt-gone: cannot reach the host"):
        s.plan()
    assert "sdt-down" not in sh(hosts.h1, "ls /etc/systemd/system")
