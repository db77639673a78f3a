"""Rolling updates against a real Docker Engine, while a client polls every replica every 50 ms (issue 16).

The harness (a project per test, free ports, cleanup) is tests/harnesses/docker.py's. Each
replica is a busybox httpd that writes its `VERSION` to `/version`, "loads" for `START` seconds before it
listens, then serves `/health`. A replica with a published port holds it exclusively, so it is replaced
stop-first; one without published ports starts beside its old self (start-first). The "model-like"
shape starts slowly, as a model server loading weights does, on its own port per replica: GPUs cannot be
used here (the Engine refuses an `nvidia` device request without the NVIDIA runtime), so its exclusive
resource is the port. The order each container started and stopped is read back from the Engine's own
event stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from harnesses.docker import IMAGE, DockerStack
from rollcheck import Poller, fetch, wait_until

from hxpc.engine.render import render_markdown, render_text
from hxpc.engine.report import ApplyFailed

pytestmark = pytest.mark.docker

# `n` is taken by the first replica of a new version to start, `n + 1` by the next: FAIL_SECOND makes the
# second one exit, so exactly the second replica's replacement fails whichever container it is
SCRIPT = ('mkdir -p /tmp/www && echo ok > /tmp/www/health && echo "$VERSION" > /tmp/www/version && '
          'if [ "$FAIL_SECOND" = 1 ]; then n=1; while ! mkdir "/data/$VERSION-$n" 2>/dev/null; do n=$((n+1)); done; '
          '[ "$n" != 2 ] || { echo "replica $n of $VERSION refuses to start" >&2; exit 1; }; fi; '
          'sleep "$START"; exec httpd -f -p "$PORT" -h /tmp/www')
INSIDE = 8080   # where a replica without published ports listens


@pytest.fixture
def stack(docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[DockerStack]:
    s = DockerStack(docker_client, tmp_path)
    try:
        yield s
    finally:
        s.cleanup()


def versioned(version: str, *, port: int | None, replicas: int = 3, start_s: float = 1.0, fail_second: bool = False,
              max_unavailable: int = 1) -> dict[str, Any]:
    """A service whose replicas answer `GET /version` with `version`; published on `port` (+i) if given."""
    listen = port if port is not None else INSIDE
    out: dict[str, Any] = {
        "image": IMAGE, "command": ["/bin/sh"], "args": ["-c", SCRIPT], "replicas": replicas, "restart": "never",
        "env": {"VERSION": version, "START": str(start_s), "FAIL_SECOND": "1" if fail_second else "0",
                "PORT": str(listen)},
        "volumes": {"data": {"path": "/data"}}, "update": {"max_unavailable": max_unavailable}}
    timing = {"interval": "1s", "timeout": "1s", "retries": 2, "start_period": f"{int(start_s) + 1}s"}
    if port is not None:
        out["ports"] = {"http": port}
        out["health"] = {"http": {"path": "/health", "port": "http"}, **timing}
    else:  # nothing published: the check runs inside the container
        out["health"] = {"exec": ["wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{INSIDE}/health"], **timing}
    return out


def published(s: Any, replicas: int = 3) -> list[str]:
    return [f"http://127.0.0.1:{s.port + i}/version" for i in range(replicas)]


def spec_with_ports(s: Any, version: str, **kw: Any) -> None:
    s.write_raw({"web": versioned(version, port=s.port, **kw)})


def events(s: Any, since: float) -> list[tuple[float, str, str]]:
    """(time, action, container id) of this project's containers since `since` (Unix time), from the Engine."""
    until = time.time() + 1
    found = s.api.events(since=int(since) - 1, until=int(until), decode=True,
                         filters={"type": "container", "label": f"hxpc.dev/project={s.project}"})
    return [(e["timeNano"] / 1e9, e["Action"], e["Actor"]["ID"]) for e in found
            if e.get("Action") in ("start", "die") and e["timeNano"] / 1e9 >= since]


def ids(s: Any, replicas: int = 3) -> list[str]:
    return [s.cid(f"web-{i + 1}") for i in range(replicas)]


SHAPES = {"service": 1.0, "model-like": 3.0}   # seconds each replica takes to start serving


def serving_v1(s: Any, start: float) -> tuple[list[str], list[str]]:
    """Three replicas on their own ports serving v1: their URLs and container ids."""
    spec_with_ports(s, "v1", start_s=start)
    s.apply()
    urls = published(s)
    wait_until(lambda: [fetch(u) for u in urls] == ["v1"] * 3, 30, "three replicas serving v1")
    return urls, ids(s)


def order(s: Any, since: float) -> tuple[dict[str, float], dict[str, float]]:
    """When each container died and started since `since`, by id, from the Engine's event stream."""
    seen = events(s, since)
    return ({cid: t for t, what, cid in seen if what == "die"}, {cid: t for t, what, cid in seen if what == "start"})


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_three_replicas_on_their_own_ports_roll_stop_first_keeping_two_serving(stack: Any, shape: str) -> None:
    start = SHAPES[shape]
    urls, old = serving_v1(stack, start)
    spec_with_ports(stack, "v2", start_s=start)
    plan = stack.plan()
    text = render_text(plan)
    for i in range(3):
        assert (f"update: rolls web-{i + 1} in step {i + 1} of 3, 1 at a time, each healthy before the next; at "
                f"least 2 of 3 keep serving (stop-first: it publishes host port {stack.port + i})") in text
    began = time.time()
    with Poller(urls) as poller:
        report = stack.apply(plan)
    assert report.outcome == "success", report.render()
    assert [fetch(u) for u in urls] == ["v2"] * 3
    assert poller.min_serving >= 2, [r.answers for r in poller.rounds if r.serving < 2][:5]
    assert any(r.serving == 2 for r in poller.rounds)     # one at a time was really down
    # the Engine's own record: each old container died before its replacement started, and the next old one
    # died only after that replacement started (stop-first, one at a time)
    new = ids(stack)
    died, started = order(stack, began)
    for i in range(3):
        assert died[old[i]] < started[new[i]]
        if i:
            assert started[new[i - 1]] < died[old[i]]
    assert not stack.plan().has_changes


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_failure_on_the_second_replica_leaves_all_three_on_the_old_version(stack: Any, shape: str) -> None:
    start = SHAPES[shape]
    urls, old = serving_v1(stack, start)
    spec_with_ports(stack, "v2", start_s=start, fail_second=True)
    with Poller(urls) as poller, pytest.raises(ApplyFailed) as caught:
        stack.apply()
    # the rollback waited for each restored replica: all three serve the old version at once
    assert [fetch(u) for u in urls] == ["v1"] * 3
    assert ids(stack) == old                                # the very same containers, brought back
    assert poller.min_serving >= 2, [r.answers for r in poller.rounds if r.serving < 2][:5]
    message = str(caught.value)
    assert f"health gate failed for replica web-2 of web (compose:{stack.scope}/container/web-2)" in message
    assert "exited (exit code 1)" in message
    assert "rolled back: web-1, web-2; never touched, still the previous version: web-3" in message
    statuses = {r.action.key.name: r.status for r in caught.value.report.results.values()}
    assert statuses == {"web-1": "rolled_back", "web-2": "rolled_back", "web-3": "skipped"}
    assert not [n for n in stack.containers() if n.endswith("-hxpc-old")]
    assert not stack.lock_exists()


def test_replicas_without_published_ports_start_beside_the_old_ones(stack: Any) -> None:
    stack.write_raw({"web": versioned("v1", port=None)})
    stack.apply()

    def urls() -> list[str]:
        running = stack.api.containers(filters={"label": f"hxpc.dev/project={stack.project}"})
        return [f"http://{ip}:{INSIDE}/version" for c in running
                for ip in [n["IPAddress"] for n in c["NetworkSettings"]["Networks"].values()] if ip]

    wait_until(lambda: sorted(fetch(u) or "" for u in urls()) == ["v1"] * 3, 30, "three replicas serving v1")
    old = ids(stack)
    stack.write_raw({"web": versioned("v2", port=None)})
    plan = stack.plan()
    assert "at least 3 of 3 keep serving (start-first: it holds nothing exclusive" in render_text(plan)
    began = time.time()
    with Poller(urls) as poller:
        assert stack.apply(plan).outcome == "success"
    assert poller.min_serving >= 3, [r.answers for r in poller.rounds if r.serving < 3][:5]
    new = ids(stack)
    died, started = order(stack, began)
    for i in range(3):
        assert started[new[i]] < died[old[i]]            # the replacement ran before the old one stopped
    assert sorted(fetch(u) or "" for u in urls()) == ["v2"] * 3
    assert not stack.plan().has_changes


def test_a_single_replica_on_a_fixed_port_says_its_downtime_and_takes_about_that(stack: Any) -> None:
    spec_with_ports(stack, "v1", replicas=1, start_s=2.0)
    stack.apply()
    urls = published(stack, 1)
    wait_until(lambda: fetch(urls[0]) == "v1", 30, "the replica serving v1")
    spec_with_ports(stack, "v2", replicas=1, start_s=2.0)
    plan = stack.plan()
    update = next(a.update for a in plan.actions if a.key.kind == "container")
    assert update is not None and update.downtime_s == 60   # the startup budget: at least 60 s for a service
    assert (f"update: DOWNTIME up to 60s (its startup budget): web-1 is the only serving replica and goes down "
            f"before its replacement starts (stop-first: it publishes host port {stack.port})") in render_text(plan)
    assert f"> - web on compose: up to 60s (its startup budget), because it publishes host port {stack.port}" \
        in render_markdown(plan)
    with Poller(urls) as poller:
        stack.apply(plan)
    gap = poller.longest_gap()
    assert 1.5 <= gap < 60, gap     # down while it "loads" (2 s), never longer than the plan said
    assert fetch(urls[0]) == "v2"
