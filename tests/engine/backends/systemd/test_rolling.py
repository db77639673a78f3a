"""Rolling updates against real systemd hosts, while a client polls every instance every 50 ms (issue 16).

The harness (two containers running systemd as PID 1, reached with `docker://`; a project per test) is
tests/harnesses/systemd.py's. Each instance is a native busybox httpd that writes its
`VERSION` to `/version`, "loads" for `START` seconds, then serves `/health`; the client reaches it at its
host container's address and its own port (`port + i`). An instance is one unit on its own port, so it is
always replaced stop-first. The "model-like" shape also holds a GPU per replica from the host's budget
(`CUDA_VISIBLE_DEVICES` and `DeviceAllow=`, which need no GPU to start) and loads for longer. The order
instances went down and came up is systemd's own (`InactiveEnterTimestampMonotonic`,
`ActiveEnterTimestampMonotonic`; the containers share one kernel clock).
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harnesses.systemd import Hosts, SystemdStack, docker, sh, unit_props
from rollcheck import Poller, fetch, wait_until

from hxpc.engine.render import render_markdown, render_text
from hxpc.engine.report import ApplyFailed

pytestmark = pytest.mark.systemd


@pytest.fixture(scope="module")
def hosts(systemd_hosts: Hosts) -> Hosts:
    """The session's two hosts, which the other systemd tests share: this module's ports (7600-7999) are its
    own, so a unit another test left running cannot hold one."""
    return systemd_hosts


@pytest.fixture(scope="module")
def reach(hosts: Any) -> Iterator[dict[str, str]]:
    """Each host's address on a network of this module's own, where the client polls the instances (the
    default bridge is shared with every other test on the machine)."""
    network = f"hxpc-sdt-roll-{uuid.uuid4().hex[:8]}"
    docker("network", "create", network)
    try:
        for container in (hosts.h1, hosts.h2):
            docker("network", "connect", network, container)
        yield {c: docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                           c).strip() for c in (hosts.h1, hosts.h2)}
    finally:
        for container in (hosts.h1, hosts.h2):
            docker("network", "disconnect", "-f", network, container, check=False)
        docker("network", "rm", network, check=False)

SCRIPT = ('mkdir -p /tmp/www && echo ok > /tmp/www/health && echo "$VERSION" > /tmp/www/version && '
          'if [ "$FAIL_REPLICA" = "$HXPC_REPLICA" ]; then echo "replica $HXPC_REPLICA refuses to start" >&2; '
          'exit 1; fi; sleep "$START"; exec /bin/busybox httpd -f -p "$PORT_HTTP" -h /tmp/www')
SHAPES = {"service": (1.0, 0), "model-like": (3.0, 1)}   # start seconds, GPUs per replica


def versioned(port: int, version: str, *, start_s: float, gpus: int, fail_replica: int | None = None,
              replicas: int = 3, **extra: Any) -> dict[str, Any]:
    return {"exec": ["/bin/sh", "-c", SCRIPT], "ports": {"http": port}, "hosts": ["h1", "h2"],
            "replicas": replicas, "restart": "never", "resources": {"gpus": gpus},
            "env": {"VERSION": version, "START": str(start_s),
                    "FAIL_REPLICA": "" if fail_replica is None else str(fail_replica)},
            "health": {"http": {"path": "/health", "port": "http"}, "interval": "500ms", "timeout": "1s",
                       "retries": 2, "start_period": f"{int(start_s) + 1}s"}, **extra}


def write(s: Any, services: dict[str, Any], secrets: dict[str, Any] | None = None) -> None:
    """The harness's spec, with a GPU budget on both hosts (no GPU is touched: native units only get the
    device indices)."""
    s.write_raw(services, secrets)
    spec = json.loads(s.spec_path.read_text())
    for host in spec["hosts"].values():
        host["gpus"] = {"count": 4, "model": "TEST-GPU", "memory": "80Gi"}
    s.spec_path.write_text(json.dumps(spec, indent=1))


def urls(hosts: Any, reach: dict[str, str], port: int, replicas: int = 3) -> list[str]:
    """Instance i runs on h1, h2, h1, ... (round-robin) at port + i."""
    where = [reach[hosts.h1], reach[hosts.h2]]
    return [f"http://{where[i % 2]}:{port + i}/version" for i in range(replicas)]


def times(hosts: Any, project: str, replicas: int = 3) -> list[tuple[int, int]]:
    """(went down, came up) per instance, in µs of the shared monotonic clock."""
    out = []
    for i in range(replicas):
        props = unit_props(hosts.h1 if i % 2 == 0 else hosts.h2, f"{project}-web@{i}.service")
        shown = docker("exec", hosts.h1 if i % 2 == 0 else hosts.h2, "systemctl", "show", "-p",
                         "InactiveEnterTimestampMonotonic,ActiveEnterTimestampMonotonic",
                         f"{project}-web@{i}.service")
        values = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        assert props["ActiveState"] == "active"
        out.append((int(values["InactiveEnterTimestampMonotonic"]), int(values["ActiveEnterTimestampMonotonic"])))
    return out


def serving_v1(tmp_path: Path, hosts: Any, reach: dict[str, str], project: str, port: int,
               shape: str) -> tuple[Any, list[str]]:
    """Three instances of `shape` serving v1 on both hosts: the project's stack and the instances' URLs."""
    start, gpus = SHAPES[shape]
    s = SystemdStack(tmp_path, hosts, project)
    write(s, {"web": versioned(port, "v1", start_s=start, gpus=gpus)})
    s.apply()
    targets = urls(hosts, reach, port)
    wait_until(lambda: [fetch(u) for u in targets] == ["v1"] * 3, 60, "three instances serving v1")
    return s, targets


def environ(container: str, unit: str) -> str:
    return sh(container, f"tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value {unit})/environ")


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_three_instances_roll_one_at_a_time_keeping_two_serving(tmp_path: Path, hosts: Any, reach: dict[str, str],
                                                                shape: str) -> None:
    start, gpus = SHAPES[shape]
    project, port = f"sdt-roll-{shape}", 7600 + 20 * sorted(SHAPES).index(shape)
    s, targets = serving_v1(tmp_path, hosts, reach, project, port, shape)
    write(s, {"web": versioned(port, "v2", start_s=start, gpus=gpus)})
    plan = s.plan()
    text = render_text(plan)
    held = ("runs each replica as one systemd unit, listens on its own host ports and holds 1 GPU(s)" if gpus
            else "runs each replica as one systemd unit and listens on its own host ports")
    assert (f"update: rolls {project}-web@0.service, {project}-web@2.service in steps 1, 3 of 3, 1 at a time, "
            f"each healthy before the next; at least 2 of 3 keep serving (stop-first: it {held})") in text
    assert f"update: rolls {project}-web@1.service in step 2 of 3" in text
    with Poller(targets) as poller:
        report = s.apply(plan)
    assert report.outcome == "success", report.render()
    assert [fetch(u) for u in targets] == ["v2"] * 3
    assert poller.min_serving >= 2, [r.answers for r in poller.rounds if r.serving < 2][:5]
    assert any(r.serving == 2 for r in poller.rounds)
    # systemd's own record: each instance went down only after the one before came up and loaded
    down_up = times(hosts, project)
    for (_, up), (down, _) in itertools.pairwise(down_up):
        assert down > up + start * 0.8e6
    if gpus:  # each instance kept its own device on its host: h1 has @0 (GPU 0) and @2 (GPU 1), h2 has @1
        assert "CUDA_VISIBLE_DEVICES=0" in environ(hosts.h1, f"{project}-web@0.service")
        assert "CUDA_VISIBLE_DEVICES=1" in environ(hosts.h1, f"{project}-web@2.service")
        assert "CUDA_VISIBLE_DEVICES=0" in environ(hosts.h2, f"{project}-web@1.service")
    assert not s.plan().has_changes


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_failure_on_the_second_instance_leaves_all_three_on_the_old_version(tmp_path: Path, hosts: Any,
                                                                             reach: dict[str, str],
                                                                             shape: str) -> None:
    start, gpus = SHAPES[shape]
    project, port = f"sdt-rollfail-{shape}", 7700 + 20 * sorted(SHAPES).index(shape)
    s, targets = serving_v1(tmp_path, hosts, reach, project, port, shape)
    template = f"/etc/systemd/system/{project}-web@.service"
    good = {h: sh(h, f"cat {template}") for h in (hosts.h1, hosts.h2)}
    untouched = unit_props(hosts.h1, f"{project}-web@2.service")
    write(s, {"web": versioned(port, "v2", start_s=start, gpus=gpus, fail_replica=1)})
    with Poller(targets) as poller, pytest.raises(ApplyFailed) as caught:
        s.apply()
    assert [fetch(u) for u in targets] == ["v1"] * 3
    assert poller.min_serving >= 2, [r.answers for r in poller.rounds if r.serving < 2][:5]
    message = str(caught.value)
    assert (f"health gate failed for replica {project}-web@1.service of web "
            f"(systemd:h2/unit/{project}-web@.service)") in message
    assert f"rolled back: {project}-web@0.service, {project}-web@1.service; never touched, still the previous " \
           f"version: {project}-web@2.service" in message
    # the instance never reached kept its very process, and the previous files are back on both hosts
    after = unit_props(hosts.h1, f"{project}-web@2.service")
    assert (after["MainPID"], after["InvocationID"]) == (untouched["MainPID"], untouched["InvocationID"])
    assert {h: sh(h, f"cat {template}") for h in (hosts.h1, hosts.h2)} == good
    assert "VERSION=v1" in environ(hosts.h1, f"{project}-web@2.service")
    write(s, {"web": versioned(port, "v1", start_s=start, gpus=gpus)})
    assert not s.plan().has_changes


def test_a_new_secret_reaches_the_instances_one_at_a_time(tmp_path: Path, hosts: Any, reach: dict[str, str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    project, port = "sdt-rollsecret", 7800
    monkeypatch.setenv("SDT_TOKEN_A", "first-value")
    monkeypatch.setenv("SDT_TOKEN_B", "second-value")
    s = SystemdStack(tmp_path, hosts, project)
    svc = versioned(port, "v1", start_s=1.0, gpus=0, secrets={"TOKEN": "token"})
    write(s, {"web": svc}, {"token": {"env": "SDT_TOKEN_A"}})
    s.apply()
    targets = urls(hosts, reach, port)
    wait_until(lambda: [fetch(u) for u in targets] == ["v1"] * 3, 60, "three instances serving v1")
    # a new secret value, and a fourth instance (on h2) in the same change: the new instance starts at once,
    # the three serving ones take the new value one at a time
    write(s, {"web": {**svc, "replicas": 4}}, {"token": {"env": "SDT_TOKEN_B"}})
    plan = s.plan()
    touched = {(a.kind, a.key.scope, a.key.kind): a.update for a in plan.touched}
    assert set(touched) == {("update", "h1", "secret"), ("update", "h2", "secret"), ("update", "h2", "unit")}
    assert touched[("update", "h2", "unit")] is None          # it only adds an instance: nothing serving to roll
    assert touched[("update", "h1", "secret")] is not None and touched[("update", "h2", "secret")] is not None
    with Poller(targets) as poller:
        assert s.apply(plan).outcome == "success"
    assert poller.min_serving >= 2, [r.answers for r in poller.rounds if r.serving < 2][:5]
    for i in range(4):
        assert "TOKEN=second-value" in environ(hosts.h1 if i % 2 == 0 else hosts.h2, f"{project}-web@{i}.service")
    down_up = times(hosts, project)
    assert all(down > up for (_, up), (down, _) in itertools.pairwise(down_up))


def test_a_single_unit_says_its_downtime_in_the_plan(tmp_path: Path, hosts: Any, reach: dict[str, str]) -> None:
    s = SystemdStack(tmp_path, hosts, "sdt-rollone")
    one = versioned(7900, "v1", start_s=1.0, gpus=1, replicas=1)
    write(s, {"web": {**one, "hosts": ["h1"]}})
    s.apply()
    write(s, {"web": {**versioned(7900, "v2", start_s=1.0, gpus=1, replicas=1), "hosts": ["h1"]}})
    plan = s.plan()
    update = next(a.update for a in plan.touched)
    assert update is not None and update.downtime_s == 60
    assert ("update: DOWNTIME up to 60s (its startup budget): sdt-rollone-web.service is the only serving replica "
            "and goes down before its replacement starts (stop-first: it runs each replica as one systemd unit, "
            "listens on its own host ports and holds 1 GPU(s))") in render_text(plan)
    assert "**up to 60s**" in render_markdown(plan)
    target = f"http://{reach[hosts.h1]}:7900/version"
    with Poller([target]) as poller:
        s.apply(plan)
    assert 0.8 <= poller.longest_gap() < 60
    assert fetch(target) == "v2"
