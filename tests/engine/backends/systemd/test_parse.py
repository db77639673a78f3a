"""The systemd backend's pure parts against output recorded from real hosts (systemd 252 in the test
containers): the read report, unit files, `systemctl show`, health rounds, snapshots and scripts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hxpc.compiler import probes
from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import spec_hash
from hxpc.compiler.pipeline import resolve_env
from hxpc.engine.backends.systemd.backend import SystemdBackend
from hxpc.engine.backends.systemd.desired import Check, describe, env_quote, probe_script
from hxpc.engine.backends.systemd.parse import (
    ReadError,
    instance_of,
    object_of,
    parse_health,
    parse_host,
    parse_show,
    parse_snapshot,
    parse_unit,
    split_read,
)
from hxpc.engine.objects import DesiredObject, ObjectKey
from hxpc.engine.plan import NameClash, make_plan
from hxpc.sources import FileSources

PAYLOADS = Path(__file__).parents[1] / "payloads"


def payload(name: str) -> str:
    return (PAYLOADS / name).read_text()


def key(host: str, kind: str, name: str) -> ObjectKey:
    return ObjectKey("systemd", host, kind, name)


def recorded_backend() -> SystemdBackend:
    """The spec the payloads were recorded from (only its comments and addresses differ)."""
    resolved = resolve_env(FileSources(str(PAYLOADS / "systemd_spec.yaml")), "test")
    return SystemdBackend(resolved.stack, Meta("t1", "test", "systemd_spec.yaml", spec_hash(resolved)))


def test_parse_unit_sections_lists_continuations_and_ignored_lines() -> None:
    text = ("# header\n; also a comment\n\n[Unit]\nDescription=x y\nX-Hxpc-Hash=abc\nAfter=a\nAfter=b\n"
            "[Service]\nExecStart=/bin/busybox \\\n    httpd \\\n    -p ${PORT_HTTP}\nEnvironment=A=1\n")
    assert parse_unit(text) == {
        "Unit": {"Description": "x y", "After": ["a", "b"]},
        "Service": {"ExecStart": "/bin/busybox httpd -p ${PORT_HTTP}", "Environment": "A=1"},
    }
    # comments and the hash (both follow the spec's hash) never make a difference by themselves
    assert parse_unit(text.replace("# header", "# other").replace("abc", "def")) == parse_unit(text)


def test_names_of_objects_and_instances() -> None:
    assert object_of("hxp-api@3.service.d/replica.conf") == "hxp-api@.service"
    assert object_of("hxp-api@3.service") == "hxp-api@.service"
    assert object_of("hxp-db.service") == "hxp-db.service"
    assert instance_of("hxp-api@3.service.d/replica.conf") == "hxp-api@3.service"
    assert instance_of("hxp-api@.service") is None


def test_recorded_read_of_host_1() -> None:
    live = parse_host("h1", "t1", "test", payload("systemd_read_h1.txt"))
    assert sorted(live) == [key("h1", "secret", "api.env"), key("h1", "unit", "t1-api@.service"),
                            key("h1", "unit", "t1-db.service")]
    db = live[key("h1", "unit", "t1-db.service")]
    assert (db.owned, db.workload, db.running, db.status) == (True, "db", True, "active/running")
    assert db.state["enabled"] == ["t1-db.service"]
    assert db.state["files"]["t1-db.service"]["Service"]["ExecStart"] == "/bin/busybox httpd -f -p ${PORT_HTTP} -h /srv"
    api = live[key("h1", "unit", "t1-api@.service")]
    assert sorted(api.state["files"]) == ["t1-api@.service", "t1-api@0.service.d/replica.conf"]
    assert (api.workload, api.depends_on, api.state["enabled"]) == ("api", ("db",), ["t1-api@0.service"])
    secret = live[key("h1", "secret", "api.env")]
    assert secret.state == {"path": "/etc/hxpc/t1-test/api.env", "mode": "0600", "owner": "root:root",
                            "vars": ["TOKEN"], "refs": "00982e50d2889384"}
    assert secret.owned and secret.secret_paths == frozenset({("refs",)})
    # the read never carries a secret's value, only the file's header keys
    assert "s3cr" not in payload("systemd_read_h1.txt")


def test_recorded_read_of_host_2_finds_what_is_not_ours() -> None:
    live = parse_host("h2", "t1", "test", payload("systemd_read_h2.txt"))
    web = live[key("h2", "unit", "t1-web.service")]
    assert not web.owned and "without t1/test's X-Hxpc keys" in web.status
    other_env = live[key("h2", "secret", "web.env")]
    assert not other_env.owned and other_env.state["mode"] == "0640"
    assert live[key("h2", "unit", "t1-api@.service")].state["enabled"] == ["t1-api@1.service"]


def test_recorded_state_equals_the_compiled_spec_so_nothing_to_do() -> None:
    backend = recorded_backend()
    desired = backend.desired()
    live = {**parse_host("h1", "t1", "test", payload("systemd_read_h1.txt")),
            **parse_host("h2", "t1", "test", payload("systemd_read_h2.txt"))}
    live = {k: v for k, v in live.items() if v.owned}
    plan = make_plan(desired, live, backend.stack.waves, project="t1", env="test", spec_hash="x")
    assert {a.kind for a in plan.actions} == {"noop"}
    assert len(plan.actions) == 5
    unit = desired[key("h1", "unit", "t1-api@.service")]
    assert unit.extra.instances == ("t1-api@0.service",)
    assert unit.extra.checks["t1-api@0.service"] == Check("tcp", 8201, "/", (), 3)


def test_a_unit_in_the_way_is_a_name_clash() -> None:
    backend = recorded_backend()
    live = parse_host("h2", "t1", "test", payload("systemd_read_h2.txt"))
    desired = dict(backend.desired())
    clash = key("h2", "unit", "t1-web.service")
    desired[clash] = DesiredObject(clash, {"files": {}, "enabled": []}, "web")
    with pytest.raises(NameClash, match=r"systemd:h2/unit/t1-web.service: exists without hxpc's ownership"):
        make_plan(desired, live, backend.stack.waves, project="t1", env="test", spec_hash="x")


def test_a_cut_short_or_foreign_report_is_an_error() -> None:
    text = payload("systemd_read_h1.txt")
    with pytest.raises(ReadError, match="cut short"):
        split_read(text[: text.index("@@0123456789abcdef show")])
    with pytest.raises(ReadError, match="unexpected first line"):
        split_read("System has not been booted with systemd as init system (PID 1).\n")


def test_show_blocks_and_a_recorded_health_round() -> None:
    shown = parse_show("Id=a.service\nActiveState=active\n\nId=b.service\nActiveState=failed\n")
    assert shown["b.service"]["ActiveState"] == "failed"
    rounds = parse_health(payload("systemd_health_h1.txt"), ["t1-db.service", "t1-gone.service"], "@@feedc0de")
    db, gone = rounds
    assert (db.active, db.sub, db.probe_rc, db.main_pid > 0) == ("active", "running", 0, True)
    assert (gone.active, gone.probe_rc) == ("inactive", 1)
    assert "Connection refused" in gone.probe_output


def test_snapshot_frames_exact_bytes() -> None:
    tricky = b"no newline at the end @@n1 file 3 /x\n@@n1 end"
    data = b"@@n1 file %d /etc/a\n" % len(tricky) + tricky + b"@@n1 file 0 /etc/empty\n@@n1 end\n"
    assert parse_snapshot(data, "n1") == {"/etc/a": tricky, "/etc/empty": b""}
    with pytest.raises(ReadError):
        parse_snapshot(b"@@n1 file 3 /etc/a\nabc", "n1")


def test_environment_file_quoting_round_trips_through_a_shell_like_reader() -> None:
    # systemd's EnvironmentFile double quotes escape exactly what POSIX sh double quotes do
    value = 'he said "hi" \\ $HOME `x` \'q\' # no comment\nline 2'
    out = subprocess.run(["sh", "-c", f"V={env_quote(value)}; printf %s \"$V\""], capture_output=True, text=True)
    assert out.stdout == value


def test_checks_become_the_shared_probe_scripts() -> None:
    # the scripts themselves (every tool's branch, run for real) are tested in tests/compiler/test_probes.py
    http = probe_script(Check("http", 8101, "health", (), 2))
    assert http == probes.http_script(8101, "health", 2) and " http://127.0.0.1:8101/health" in http
    assert probe_script(Check("tcp", 8201, "/", (), 2)) == probes.tcp_script(8201, 2)
    command = ("/bin/sh", "-c", "test -e /srv/health")
    assert probe_script(Check("exec", command=command)) == probes.exec_script(command, 3)
    # natively, systemd-run runs it as the unit's user; systemd would expand `$X` there, so `$` becomes `$$`
    native = Check("exec", command=("/bin/sh", "-c", 'test "$(id -u)" != 0'), wrapper=("systemd-run", "--"))
    escaped = ("systemd-run", "--", "/bin/sh", "-c", 'test "$$(id -u)" != 0')
    assert probe_script(native) == probes.exec_script(escaped, 3)
    assert describe(native) == "exec /bin/sh -c 'test \"$(id -u)\" != 0'"  # the spec's command, not the wrapper
    assert describe(Check("http", 8101, "health")) == "GET http://127.0.0.1:8101/health"
    assert describe(Check("tcp", 8201)) == "tcp 127.0.0.1:8201"
    # a check without a port (validation refuses it) fails with a reason instead of probing port "None"
    broken = subprocess.run(["sh", "-c", probe_script(Check("tcp"))], capture_output=True, text=True)
    assert broken.returncode == 1 and "no known port" in broken.stderr
    # on this machine, against a closed port: the chain runs one tool and fails
    tcp = probe_script(Check("tcp", 1, "/", (), 2))
    assert subprocess.run(["sh", "-c", tcp], capture_output=True).returncode != 0
