"""Plan and apply against a real Docker Engine: what only the Docker backend promises.

The scenarios every backend shares (fresh apply, re-plan, change one, prune, ownership, stale plans,
health-gate rollback, the lock, secrets) run on the Docker Engine in tests/engine/backends/contract/, with
the Docker-specific checks in tests/harnesses/docker.py. Here: a second apply racing a real one, SIGINT and
`kill -9` hitting an apply running in a subprocess (`SCRIPT`, as they would hit the command line), and an
image that cannot be pulled. Every test gets its own project and ports (tests/harnesses/docker.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import harnesses
import pytest
from harnesses.docker import ENV, DockerStack, get, svc

from hxpc.engine.backends.docker import parse as dp
from hxpc.errors import BackendError, LockHeld

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture
def stack(docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[DockerStack]:
    s = DockerStack(docker_client, tmp_path)
    try:
        yield s
    finally:
        s.cleanup()


def test_a_second_concurrent_apply_is_refused(stack: DockerStack) -> None:
    stack.write_raw({"web": svc(stack.port, path="/slow", start_period="60s")})
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
    TARGET = "compose"
""") + harnesses.APPLY_SCRIPT_TAIL


def start_apply(stack: DockerStack, **env: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`apply` in a subprocess, as the command line runs it; returns once it waits on a health gate."""
    script = stack.tmp / "apply_script.py"
    script.write_text(SCRIPT)
    return harnesses.start_apply(script, [str(stack.spec), ENV], REPO, env, timeout=30)


def test_sigint_mid_apply_leaves_no_lock_and_a_truthful_report(stack: DockerStack) -> None:
    stack.write_raw({"web": svc(stack.port)})
    stack.apply()
    old = stack.cid("web-1")
    stack.write_raw({"web": svc(stack.port, path="/slow", start_period="60s", env={"V": "2"})})
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


def test_after_kill_9_mid_apply_the_next_apply_converges(stack: DockerStack) -> None:
    stack.write_raw({"web": svc(stack.port)})
    stack.apply()
    stack.write_raw({"web": svc(stack.port, path="/slow", start_period="60s", env={"V": "2"})})
    proc, _ = start_apply(stack)
    proc.kill()
    proc.wait(10)
    # the dead apply left its lock, its new container and the old one set aside
    assert stack.lock_exists()
    assert sorted(stack.containers()) == [f"{stack.scope}-web-1", f"{stack.scope}-web-1{dp.ASIDE_SUFFIX}"]
    stack.write_raw({"web": svc(stack.port, env={"V": "3"})})
    plan = stack.plan()
    assert {a.key.name: a.kind for a in plan.touched} == {"web-1": "replace", f"web-1{dp.ASIDE_SUFFIX}": "delete"}
    # its holder died on this machine: the lock is taken over at once, not after its TTL
    report = stack.apply(plan)
    assert report.outcome == "success", report.render()
    assert any("took over the compose lock" in n and "is no longer running" in n for n in report.notes)
    assert sorted(stack.containers()) == [f"{stack.scope}-web-1"]
    assert get(stack.port) == "ok\n"
    assert not stack.plan().has_changes and not stack.lock_exists()


def test_a_missing_secret_or_image_fails_before_anything_is_touched(stack: DockerStack,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    var = f"HXT_{stack.project.upper()}_MISSING"
    monkeypatch.delenv(var, raising=False)
    stack.write_raw({"web": svc(stack.port, secrets={"TOKEN": "tok"})}, secrets={"tok": {"env": var}})
    with pytest.raises(BackendError, match=f"secret `tok`: environment variable {var} is not set"):
        stack.apply()
    stack.write_raw({"web": svc(stack.port, image="hxpc-test/absent:0")})
    with pytest.raises(BackendError, match="image hxpc-test/absent:0 is not on the Docker Engine and cannot be "
                                           "pulled"):
        stack.apply()
    assert not stack.containers() and not stack.lock_exists()
    assert not stack.api.networks(filters={"name": f"{stack.scope}_default"})


def test_security_runs_the_container_as_the_specs_user_with_a_read_only_root(stack: DockerStack) -> None:
    stack.write_raw({"web": svc(stack.port, security={"run_as_user": 10001, "run_as_group": 20002,
                                                      "read_only_root_filesystem": True})})
    assert stack.apply().outcome == "success"
    info = stack.api.inspect_container(f"{stack.scope}-web-1")
    assert info["Config"]["User"] == "10001:20002" and info["HostConfig"]["ReadonlyRootfs"] is True
    ran = stack.client.containers.get(f"{stack.scope}-web-1").exec_run(["id", "-u"])
    assert ran.output.decode().strip() == "10001"
    assert get(stack.port) == "ok\n"
    assert not stack.plan().has_changes
