"""Plan and apply against a real Docker Engine: the scenarios of issue 5, each a test.

Every test gets its own project name and free host ports in 20000-40000 bound to 127.0.0.1, and a
finalizer removes whatever carries that project (containers, network, volumes, lock) however the test
ends. Services run `hxpc-test/busybox:1` (built by `.ci/build-test-images.sh`): busybox httpd on the
service's own port, `/health` answering "ok". Health checks use 1 s timings so a gate takes seconds; a
"slow" gate asks for `/slow` (404) with a 60 s start period, so Docker keeps the container `starting`
and the gate waits until it is interrupted. Interrupts and `kill -9` hit an apply running in a
subprocess (`SCRIPT`, written per test), as they would hit the command line.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from conftest import require

from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import compile_env, spec_hash
from hxpc.compiler.pipeline import resolve_env
from hxpc.engine import plan_live
from hxpc.engine.apply import ApplyOptions, apply
from hxpc.engine.backends.docker import parse as dp
from hxpc.engine.backends.docker.backend import DockerBackend
from hxpc.engine.plan import NameClash, Plan, load_plan
from hxpc.engine.progress import Event, PlainProgress
from hxpc.engine.render import render_json, render_markdown, render_text
from hxpc.engine.report import ApplyFailed, ApplyReport
from hxpc.errors import BackendError, LockHeld, StalePlan
from hxpc.sources import FileSources

pytestmark = pytest.mark.docker

IMAGE = "hxpc-test/busybox:1"
IMAGE2 = "hxpc-test/busybox:2"
ENV = "default"
REPO = Path(__file__).resolve().parents[4]


def _unavailable(reason: str) -> None:
    require(f"{reason}; .ci/setup starts dockerd and builds the test images", False)


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    try:
        c = docker.from_env()
        c.ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the daemon means: no Docker here
        _unavailable(f"no Docker Engine answers: {exc}")
    try:
        c.api.inspect_image(IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable(f"test image {IMAGE} is missing: run .ci/build-test-images.sh")
    c.api.tag(IMAGE, "hxpc-test/busybox", "2")  # a second tag of the same image: an image change
    yield c
    c.close()


def free_base(span: int = 10) -> int:
    """A base port with `span` free ports above it on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(20000, 40000 - span)
        socks = []
        try:
            for p in range(base, base + span):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def svc(port: int, *, image: str = IMAGE, replicas: int = 1, env: dict[str, str] | None = None,
        path: str | None = "/health", start_period: str = "1s", **extra: Any) -> dict[str, Any]:
    """A busybox httpd service listening (and published) on `port` (+i per replica)."""
    out: dict[str, Any] = {"image": image, "command": ["/bin/httpd"], "args": ["-f", "-p", str(port), "-h", "/www"],
                           "ports": {"http": port}, "replicas": replicas, "env": env or {}, **extra}
    if path is not None:
        out["health"] = {"http": {"path": path, "port": "http"}, "interval": "1s", "timeout": "1s", "retries": 2,
                         "start_period": start_period}
    return out


class Stack:
    """One test's project: writes specs, plans and applies them, and reads the Engine like a user would."""

    def __init__(self, client: docker.DockerClient, tmp_path: Path):
        self.client = client
        self.api = client.api
        self.tmp = tmp_path
        self.project = f"hxt{uuid.uuid4().hex[:8]}"
        self.scope = f"{self.project}-{ENV}"
        self.port = free_base()
        self.spec = tmp_path / f"{self.project}.yaml"
        self.secrets: dict[str, Any] = {}

    def write(self, services: dict[str, Any], secrets: dict[str, Any] | None = None) -> Path:
        doc: dict[str, Any] = {"apiVersion": "hxpc/v1", "project": self.project, "services": services,
                               "targets": {"compose": {}}}
        if secrets:
            doc["secrets"] = secrets
        self.spec.write_text(json.dumps(doc, indent=1))  # JSON is YAML
        return self.spec

    def backend(self) -> tuple[DockerBackend, Meta, Any]:
        resolved = resolve_env(FileSources(str(self.spec)), ENV)
        meta = Meta(resolved.stack.project, ENV, self.spec.name, spec_hash(resolved))
        return DockerBackend(resolved.stack, meta, self.client, bind_address="127.0.0.1"), meta, resolved.stack

    def plan(self) -> Plan:
        backend, meta, stack = self.backend()
        return plan_live({"compose": backend}, stack.waves, project=meta.project, env=ENV, spec_hash=meta.spec_hash)

    def apply(self, plan: Plan | None = None, **opts: Any) -> ApplyReport:
        backend, meta, _ = self.backend()
        progress = opts.pop("progress", None)
        return apply(plan or self.plan(), {"compose": backend}, env=ENV, spec_hash=meta.spec_hash,
                     project=meta.project, options=ApplyOptions(handle_signals=False, backoff_s=0.1, **opts),
                     progress=progress)

    def containers(self) -> dict[str, dict[str, Any]]:
        """Every container named for this project, owned or not, by name."""
        found = self.api.containers(all=True, filters={"name": f"^/{self.scope}-"})
        return {c["Names"][0].lstrip("/"): c for c in found}

    def cid(self, name: str) -> str:
        return str(self.containers()[f"{self.scope}-{name}"]["Id"])

    def lock_exists(self) -> bool:
        return bool(self.api.containers(all=True, filters={"name": f"^/hxpc-lock-{self.scope}$"}))

    def run_stray(self, name: str, labels: dict[str, str] | None = None) -> str:
        made = self.api.create_container(IMAGE, name=name, labels={"hxpc.test": self.project, **(labels or {})})
        self.api.start(made["Id"])
        return str(made["Id"])

    def cleanup(self) -> None:
        api = self.api
        mine = {c["Id"] for c in api.containers(all=True, filters={"label": f"hxpc.dev/project={self.project}"})}
        mine |= {c["Id"] for c in api.containers(all=True, filters={"label": f"hxpc.test={self.project}"})}
        mine |= {c["Id"] for c in api.containers(all=True, filters={"name": f"{self.scope}"})}
        for cid in mine:
            api.remove_container(cid, force=True)
        for net in api.networks(filters={"label": f"hxpc.dev/project={self.project}"}):
            api.remove_network(net["Id"])
        for vol in (api.volumes(filters={"label": f"hxpc.dev/project={self.project}"}) or {}).get("Volumes") or []:
            api.remove_volume(vol["Name"], force=True)


@pytest.fixture
def stack(client: docker.DockerClient, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(client, tmp_path)
    try:
        yield s
    finally:
        s.cleanup()


def get(port: int, path: str = "/health") -> str:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return str(response.read().decode())


def two_services(s: Stack, **web: Any) -> Path:
    return s.write({"web": svc(s.port, replicas=2, **web),
                    "db": svc(s.port + 5, path=None, env={"MODE": "a"})})


# -- scenarios ---------------------------------------------------------------------------------------------------

def test_fresh_apply_creates_what_compose_would(stack: Stack) -> None:
    two_services(stack)
    report = stack.apply()
    assert report.outcome == "success", report.render()
    assert report.plan.counts()["create"] == 4  # network + 3 containers
    found = stack.containers()
    assert sorted(found) == [f"{stack.scope}-db-1", f"{stack.scope}-web-1", f"{stack.scope}-web-2"]
    assert all(c["State"] == "running" for c in found.values())
    web2 = found[f"{stack.scope}-web-2"]["Labels"]
    assert (web2[dp.LABEL_PROJECT], web2[dp.LABEL_SERVICE], web2[dp.LABEL_NUMBER], web2[dp.LABEL_ONEOFF]) == \
        (stack.scope, "web", "2", "False")
    assert len(web2[dp.LABEL_HASH]) == 16
    # what `docker compose -p <project>-<env> ps` asks the Engine for
    ps = stack.api.containers(filters={"label": [f"{dp.LABEL_PROJECT}={stack.scope}", f"{dp.LABEL_ONEOFF}=False"]})
    assert len(ps) == 3
    # and the real tool lists them as its own
    listed = subprocess.run(["docker", "compose", "-p", stack.scope, "ps", "--format", "{{.Service}} {{.Name}}"],
                            capture_output=True, text=True, check=False)
    require(f"`docker compose` is not usable here (.ci/install-compose.sh builds it): {listed.stderr}",
            listed.returncode == 0)
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split("\n")[:-1]) == [
        f"db {stack.scope}-db-1", f"web {stack.scope}-web-1", f"web {stack.scope}-web-2"]
    assert get(stack.port) == "ok\n" and get(stack.port + 1) == "ok\n" and get(stack.port + 5) == "ok\n"
    # on the project network, a service answers to its name
    ran = stack.client.containers.get(f"{stack.scope}-db-1").exec_run(
        ["wget", "-q", "-O", "-", f"http://web:{stack.port}/health"])
    assert (ran.exit_code, ran.output) == (0, b"ok\n")
    info = stack.api.inspect_container(f"{stack.scope}-web-1")
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    assert info["Config"]["Healthcheck"]["Interval"] == 10**9
    assert info["State"]["Health"]["Status"] == "healthy"
    assert not stack.lock_exists()


def test_replan_after_apply_shows_no_changes(stack: Stack) -> None:
    two_services(stack)
    stack.apply()
    first, second = stack.plan(), stack.plan()
    assert not first.has_changes, render_text(first)
    assert {a.kind for a in first.actions} == {"noop"}
    assert render_json(first) == render_json(second)      # same spec and live state: byte-identical


def test_changing_one_services_image_or_env_recreates_only_it(stack: Stack) -> None:
    two_services(stack)
    stack.apply()
    before = {n: stack.cid(n) for n in ("web-1", "web-2", "db-1")}
    stack.write({"web": svc(stack.port, replicas=2, image=IMAGE2),
                 "db": svc(stack.port + 5, path=None, env={"MODE": "a"})})
    plan = stack.plan()
    touched = {a.key.name: (a.kind, a.reason) for a in plan.touched}
    assert touched == {"web-1": ("replace", "image 1 -> 2"), "web-2": ("replace", "image 1 -> 2")}
    assert stack.apply(plan).outcome == "success"
    after = {n: stack.cid(n) for n in ("web-1", "web-2", "db-1")}
    assert after["db-1"] == before["db-1"]
    assert after["web-1"] != before["web-1"] and after["web-2"] != before["web-2"]
    assert stack.containers()[f"{stack.scope}-web-1"]["Image"] == IMAGE2
    assert not [n for n in stack.containers() if n.endswith(dp.ASIDE_SUFFIX)]  # the old ones are gone

    stack.write({"web": svc(stack.port, replicas=2, image=IMAGE2),
                 "db": svc(stack.port + 5, path=None, env={"MODE": "b"})})
    plan = stack.plan()
    assert {a.key.name: a.reason for a in plan.touched} == {"db-1": "environment.MODE a -> b"}
    stack.apply(plan)
    assert {n: stack.cid(n) for n in ("web-1", "web-2")} == {n: after[n] for n in ("web-1", "web-2")}
    assert stack.cid("db-1") != after["db-1"]
    assert not stack.plan().has_changes


def test_removing_a_service_prunes_it_and_nothing_else(stack: Stack) -> None:
    stack.write({"web": svc(stack.port), "db": svc(stack.port + 5, path=None, volumes={"data": {"path": "/data"}})})
    stack.apply()
    web = stack.cid("web-1")
    stack.write({"web": svc(stack.port)})
    plan = stack.plan()
    assert [(a.kind, a.key.name) for a in plan.touched] == [("delete", "db-1")]
    assert stack.apply(plan).outcome == "success"
    assert sorted(stack.containers()) == [f"{stack.scope}-web-1"]
    assert stack.cid("web-1") == web
    assert stack.api.networks(filters={"name": f"{stack.scope}_default"})
    # a volume holds data: it outlives the service, as with `docker compose down` without -v
    assert stack.api.inspect_volume(f"{stack.scope}_db-data")
    assert not stack.plan().has_changes


def test_containers_without_hxpc_labels_are_untouched_and_clashes_refused(stack: Stack) -> None:
    stray = stack.run_stray(f"{stack.scope}-stray")
    compose_only = stack.run_stray(f"{stack.scope}-web-7", {dp.LABEL_PROJECT: stack.scope,
                                                             dp.LABEL_SERVICE: "web"})
    stack.write({"web": svc(stack.port)})
    plan = stack.plan()
    assert {a.key.name for a in plan.actions} == {"default", "web-1"}
    stack.apply(plan)
    stack.write({})  # the spec now wants nothing: still only our own objects go
    stack.apply()
    left = stack.containers()
    assert {c["Id"] for c in left.values()} == {stray, compose_only}
    assert all(c["State"] == "running" for c in left.values())

    stack.run_stray(f"{stack.scope}-api-1")
    stack.write({"web": svc(stack.port), "api": svc(stack.port + 5)})
    with pytest.raises(NameClash) as caught:
        stack.plan()
    assert f"compose:{stack.scope}/container/api-1: exists without hxpc's ownership labels" in str(caught.value)
    assert caught.value.exit_code == 1
    assert f"{stack.scope}-web-1" not in stack.containers()       # refused before anything was touched


def test_saved_plan_is_refused_after_an_outside_change(stack: Stack) -> None:
    two_services(stack)
    stack.apply()
    web = stack.cid("web-1")
    stack.write({"web": svc(stack.port, replicas=2), "db": svc(stack.port + 5, path=None, env={"MODE": "b"})})
    saved = load_plan(render_json(stack.plan()))
    stack.api.remove_container(f"{stack.scope}-db-1", force=True)   # someone removed it by hand
    with pytest.raises(StalePlan) as caught:
        stack.apply(saved)
    assert caught.value.exit_code == 4
    assert f"compose:{stack.scope}/container/db-1: no longer exists; it was removed outside this plan" \
        in str(caught.value)
    assert stack.cid("web-1") == web and not stack.lock_exists()


def test_failing_health_gate_rolls_back_and_the_old_container_serves(stack: Stack) -> None:
    stack.write({"web": svc(stack.port)})
    stack.apply()
    old = stack.cid("web-1")
    stack.write({"web": svc(stack.port, path="/nope", env={"V": "2"})})
    with pytest.raises(ApplyFailed) as caught:
        stack.apply()
    report = caught.value.report
    assert caught.value.exit_code == 1
    result = report.results[f"compose:{stack.scope}/container/web-1"]
    assert result.status == "rolled_back", report.render()
    assert "Docker health check: unhealthy" in result.health
    assert stack.cid("web-1") == old                          # the very same container, restored
    assert stack.containers()[f"{stack.scope}-web-1"]["State"] == "running"
    assert get(stack.port) == "ok\n"
    assert sorted(stack.containers()) == [f"{stack.scope}-web-1"]
    assert not stack.lock_exists()
    assert [a.kind for a in stack.plan().touched] == ["replace"]


def test_a_second_concurrent_apply_is_refused(stack: Stack) -> None:
    stack.write({"web": svc(stack.port, path="/slow", start_period="60s")})
    second = stack.plan()  # both applies planned the same change before either started
    waiting = threading.Event()
    stop = threading.Event()
    outcome: list[BaseException] = []

    def first() -> None:
        try:
            stack.apply(stop=stop, progress=lambda e: e.kind == "gate" and waiting.set())
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert waiting.wait(30), "the first apply never reached its health gate"
        assert stack.lock_exists()
        with pytest.raises(LockHeld) as caught:
            stack.apply(second)
        assert caught.value.exit_code == 4
        assert f"pid {os.getpid()} since " in str(caught.value)
        assert f"{stack.scope}-web-1" in stack.containers()    # the first apply's container, untouched
    finally:
        stop.set()
        thread.join(60)
    assert outcome and type(outcome[0]).__name__ == "ApplyInterrupted"
    assert not stack.lock_exists()


SCRIPT = textwrap.dedent("""
    import json, os, sys
    from hxpc.compiler.bundle import Meta
    from hxpc.compiler.compile import spec_hash
    from hxpc.compiler.pipeline import resolve_env
    from hxpc.engine import plan_live
    from hxpc.engine.apply import ApplyOptions, apply
    from hxpc.engine.backends.docker.backend import DockerBackend
    from hxpc.engine.progress import PlainProgress
    from hxpc.engine.report import ApplyFailed, ApplyInterrupted
    from hxpc.sources import FileSources

    spec, env = sys.argv[1], sys.argv[2]
    resolved = resolve_env(FileSources(spec), env)
    meta = Meta(resolved.stack.project, env, spec, spec_hash(resolved))
    backend = DockerBackend(resolved.stack, meta, bind_address="127.0.0.1")
    plan = plan_live({"compose": backend}, resolved.stack.waves, project=meta.project, env=env,
                     spec_hash=meta.spec_hash)
    ttl = os.environ.get("HXPC_LOCK_TTL")
    try:
        report = apply(plan, {"compose": backend}, env=env, spec_hash=meta.spec_hash, project=meta.project,
                       options=ApplyOptions(lock_ttl_s=int(ttl) if ttl else None), progress=PlainProgress(sys.stdout))
        code = 0
    except (ApplyFailed, ApplyInterrupted) as exc:
        report, code = exc.report, exc.exit_code
    print(report.render(), end="", flush=True)
    print("REPORT " + json.dumps(report.to_dict()), flush=True)
    sys.exit(code)
""")


def start_apply(stack: Stack, **env: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`apply` in a subprocess, as the command line runs it; returns once it waits on a health gate."""
    script = stack.tmp / "apply_script.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, "-u", str(script), str(stack.spec), ENV], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO, env={**os.environ, **env})
    lines: list[str] = []
    reached = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "health gate" in line:
                reached.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 30
    while not reached.wait(0.1) and proc.poll() is None and time.monotonic() < deadline:
        pass
    if not reached.is_set():
        proc.kill()
        pytest.fail("the apply never reached its health gate:\n" + "".join(lines))
    return proc, lines


def test_sigint_mid_apply_leaves_no_lock_and_a_truthful_report(stack: Stack) -> None:
    stack.write({"web": svc(stack.port)})
    stack.apply()
    old = stack.cid("web-1")
    stack.write({"web": svc(stack.port, path="/slow", start_period="60s", env={"V": "2"})})
    proc, lines = start_apply(stack)
    assert stack.lock_exists()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    time.sleep(0.2)  # let the reader thread take the last lines
    out = "".join(lines)
    report = json.loads(next(line for line in lines if line.startswith("REPORT "))[len("REPORT "):])
    assert report["outcome"] == "interrupted" and "SIGINT" in report["message"]
    assert [(a["address"], a["status"]) for a in report["actions"]] == \
        [(f"compose:{stack.scope}/container/web-1", "rolled_back")]
    assert "Apply interrupted" in out and "rolled back" in out
    assert not stack.lock_exists()
    assert stack.cid("web-1") == old and get(stack.port) == "ok\n"
    assert sorted(stack.containers()) == [f"{stack.scope}-web-1"]


def test_after_kill_9_mid_apply_the_next_apply_converges(stack: Stack) -> None:
    stack.write({"web": svc(stack.port)})
    stack.apply()
    stack.write({"web": svc(stack.port, path="/slow", start_period="60s", env={"V": "2"})})
    proc, _ = start_apply(stack)
    proc.kill()
    proc.wait(10)
    # the dead apply left its lock, its new container and the old one set aside
    assert stack.lock_exists()
    assert sorted(stack.containers()) == [f"{stack.scope}-web-1", f"{stack.scope}-web-1{dp.ASIDE_SUFFIX}"]
    stack.write({"web": svc(stack.port, env={"V": "3"})})
    plan = stack.plan()
    assert {a.key.name: a.kind for a in plan.touched} == {"web-1": "replace", f"web-1{dp.ASIDE_SUFFIX}": "delete"}
    # its holder died on this machine: the lock is taken over at once, not after its TTL
    report = stack.apply(plan)
    assert report.outcome == "success", report.render()
    assert any("took over the compose lock" in n and "is no longer running" in n for n in report.notes)
    assert sorted(stack.containers()) == [f"{stack.scope}-web-1"]
    assert get(stack.port) == "ok\n"
    assert not stack.plan().has_changes and not stack.lock_exists()


def test_secrets_never_appear_in_labels_plans_or_logs(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    value = f"s3cr3t-{uuid.uuid4()}"
    var = f"HXT_{stack.project.upper()}_TOKEN"
    monkeypatch.setenv(var, value)
    stack.write({"web": svc(stack.port, secrets={"TOKEN": "tok"})}, secrets={"tok": {"env": var}})
    caplog.set_level(logging.DEBUG)
    plan = stack.plan()
    shown = render_text(plan) + render_json(plan) + render_markdown(plan)
    assert "tok" in shown and value not in shown
    log = io.StringIO()
    events: list[Event] = []
    progress = PlainProgress(log)
    report = stack.apply(plan, progress=lambda e: (events.append(e), progress(e)))
    written = log.getvalue() + report.render() + json.dumps(report.to_dict()) + caplog.text
    assert value not in written and value not in repr(events)
    info = stack.api.inspect_container(f"{stack.scope}-web-1")
    assert value not in json.dumps(info["Config"]["Labels"])
    assert f"TOKEN={value}" in info["Config"]["Env"]       # the one intended place, as with `docker run -e`
    ran = stack.client.containers.get(f"{stack.scope}-web-1").exec_run(["cat", "/run/secrets/tok"])
    assert ran.output.decode() == value                   # where the compiled TOKEN_FILE points
    resolved = resolve_env(FileSources(str(stack.spec)), ENV)
    assert value not in "".join(compile_env(resolved, stack.spec.name).files.values())
    # a new value alone does not recreate the container (the hash covers the reference, not the value)
    monkeypatch.setenv(var, value + "-rotated")
    assert not stack.plan().has_changes


def test_a_missing_secret_or_image_fails_before_anything_is_touched(stack: Stack,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    var = f"HXT_{stack.project.upper()}_MISSING"
    monkeypatch.delenv(var, raising=False)
    stack.write({"web": svc(stack.port, secrets={"TOKEN": "tok"})}, secrets={"tok": {"env": var}})
    with pytest.raises(BackendError, match=f"secret `tok`: environment variable {var} is not set"):
        stack.apply()
    stack.write({"web": svc(stack.port, image="hxpc-test/absent:0")})
    with pytest.raises(BackendError, match="image hxpc-test/absent:0 is not on the Docker Engine and cannot be "
                                           "pulled"):
        stack.apply()
    assert not stack.containers() and not stack.lock_exists()
    assert not stack.api.networks(filters={"name": f"{stack.scope}_default"})
