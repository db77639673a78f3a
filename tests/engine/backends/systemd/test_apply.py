"""The systemd backend against real systemd: what only it promises.

The scenarios every backend shares (fresh apply across two hosts, re-plan, change one, prune, ownership,
stale plans, health-gate rollback, the lock, secrets in the root-only file) run on these hosts in
tests/engine/backends/contract/, with the systemd-specific checks in tests/harnesses/systemd.py (which also
says why the test containers relax `ProtectProc=`). Here: an exec health check runs as the unit's dynamic
user, a service moved to another host leaves foreign units alone, the ssh transport, and an unreachable
host.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import require_tool
from harnesses.systemd import Hosts, SystemdStack, docker, enable_ssh, http_ok, service, sh, unit_props

from hxpc.engine.backends.systemd.desired import Check, probe_script
from hxpc.engine.backends.systemd.transport import SshTransport
from hxpc.engine.plan import NameClash
from hxpc.errors import BackendError

pytestmark = pytest.mark.systemd


@pytest.fixture
def hosts(systemd_hosts: Hosts) -> Hosts:
    return systemd_hosts


def test_a_native_exec_check_runs_as_the_units_dynamic_user_not_root(tmp_path: Path, hosts: Hosts) -> None:
    s = SystemdStack(tmp_path, hosts, "sdt-asuser")
    s.write_raw({"web": service(9201, ["h1"], health={"exec": ["/bin/sh", "-c", 'test "$(id -u)" != 0'],
                                                  "interval": "500ms", "timeout": "2s", "retries": 2})})
    report = s.apply()                                          # the gate passes only off root
    assert report.outcome == "success", report.render()
    assert [w.gate for w in report.waves] == ["passed"]
    # and as the service's own user: the gate's wrapper, beside the live unit, gets the unit's dynamic UID
    service_uid = sh(hosts.h1, f"stat -c %u /proc/{unit_props(hosts.h1, 'sdt-asuser-web.service')['MainPID']}")
    _, backend = s.plan_with_backend()
    unit = next(o for k, o in backend.desired().items() if k.kind == "unit")
    wrapper = unit.extra.checks["sdt-asuser-web.service"].wrapper
    probe_uid = sh(hosts.h1, probe_script(Check("exec", command=("/bin/sh", "-c", "echo $(id -u)"), wrapper=wrapper)))
    assert probe_uid.strip() == service_uid.strip() != "0"
    # the transient probe units are collected
    assert "run-" not in sh(hosts.h1, "systemctl list-units --all --no-legend 'run-*.service'")

def test_a_unit_without_hxpc_keys_is_never_touched(tmp_path: Path, hosts: Hosts) -> None:
    foreign = "[Unit]\nDescription=not hxpc's\n[Service]\nExecStart=/bin/sleep infinity\n"
    for name in ("sdt-mine-web.service", "sdt-mine-other.service"):
        docker("exec", "-i", hosts.h1, "sh", "-c", f"cat > /etc/systemd/system/{name} && systemctl daemon-reload "
               f"&& systemctl start {name}", input=foreign.encode())
    before = {n: unit_props(hosts.h1, n)["InvocationID"] for n in ("sdt-mine-web.service", "sdt-mine-other.service")}
    s = SystemdStack(tmp_path, hosts, "sdt-mine")
    s.write_raw({"api": service(8601, ["h1"]), "web": service(8611, ["h1"])})
    with pytest.raises(NameClash, match=r"systemd:h1/unit/sdt-mine-web.service: exists without hxpc's ownership"):
        s.plan()
    s.write_raw({"api": service(8601, ["h1"])})            # out of the way: apply, then prune everything of ours
    s.apply()
    s.write_raw({"api": service(8601, ["h2"])})             # moved: its h1 unit is pruned, the others are not
    s.apply()
    for name in ("sdt-mine-web.service", "sdt-mine-other.service"):
        assert sh(hosts.h1, f"cat /etc/systemd/system/{name}") == foreign
        assert unit_props(hosts.h1, name)["InvocationID"] == before[name]

def test_ssh_transport_against_the_containers_sshd(tmp_path: Path, hosts: Hosts) -> None:
    require_tool("ssh")
    require_tool("ssh-keygen")
    ip, config = enable_ssh(hosts.h1, tmp_path)
    s = SystemdStack(tmp_path, hosts, "sdt-ssh", addresses={"h1": ip}, ssh_config=str(config))
    s.write_raw({"web": service(8701, ["h1"])})
    report = s.apply()
    assert report.outcome == "success"
    assert http_ok(hosts.h1, 8701)
    ssh = s.transports["h1"].inner
    assert isinstance(ssh, SshTransport)
    control = Path(ssh._control_dir())
    assert len(list(control.iterdir())) == 1      # one master connection carried every command
    assert not s.plan().has_changes
    ssh.close()
    assert not control.exists()

def test_an_unreachable_host_fails_the_plan_naming_it(tmp_path: Path, hosts: Hosts) -> None:
    s = SystemdStack(tmp_path, hosts, "sdt-down", addresses={"h1": f"docker://{hosts.h1}", "h2": "docker://hxpc-sdt-gone"})
    s.write_raw({"web": service(9101, ["h1"]), "api": service(9111, ["h2"])})
    with pytest.raises(BackendError, match=r"cannot read host `h2`: docker://hxpc-sdt-gone: cannot reach the host"):
        s.plan()
    assert "sdt-down" not in sh(hosts.h1, "ls /etc/systemd/system")


def test_security_runs_a_native_unit_as_the_specs_user(tmp_path: Path, hosts: Hosts) -> None:
    # systemd runs a unit as a fixed User= only when the host knows it (an unknown uid fails with 217/USER)
    sh(hosts.h1, "grep -q ':10001:' /etc/passwd || { echo 'hxpcsvc:x:10001:20002::/nonexistent:/usr/sbin/nologin'"
                 " >> /etc/passwd; echo 'hxpcsvc:x:20002:' >> /etc/group; }")
    s = SystemdStack(tmp_path, hosts, "sdt-user")
    s.write_raw({"web": service(9301, ["h1"], security={"run_as_user": 10001, "run_as_group": 20002},
                                health={"exec": ["/bin/sh", "-c", 'test "$(id -u)" = 10001'],
                                        "interval": "500ms", "timeout": "2s", "retries": 2})})
    try:
        report = s.apply()
        assert report.outcome == "success", report.render()          # the exec check ran as that user too
        main = unit_props(hosts.h1, "sdt-user-web.service")["MainPID"]
        assert sh(hosts.h1, f"stat -c '%u %g' /proc/{main}").split() == ["10001", "20002"]
        assert not s.plan().has_changes
    finally:
        s.cleanup()
