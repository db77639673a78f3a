"""The lock protocol of hxpc/engine/lock.py on every primitive: ids, proof of a dead holder, renewal, unlock.

The protocol is tested on an in-memory primitive, then each real primitive (the Docker lock container,
the `mkdir` lock on a systemd host) is put through the same steps, and `hxpc unlock` is run as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import require
from fakes import MemoryLock

from hxpc.engine.lock import (
    LockHeldBy,
    LockInfo,
    LockPrimitive,
    Renewal,
    acquire,
    break_locks,
    holder_gone,
    new_lock_info,
)
from hxpc.errors import LockHeld


def _lock_of_a_process(alive: bool) -> tuple[LockInfo, subprocess.Popen[str]]:
    """The lock info another hxpc process on this machine would write; that process stays alive or has exited."""
    code = ("import json, sys, time; from hxpc.engine.lock import new_lock_info; "
            "print(json.dumps(new_lock_info('abc', 900).to_dict()), flush=True); "
            + ("time.sleep(300)" if alive else "sys.exit(0)"))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    info = LockInfo.from_dict(json.loads(proc.stdout.readline()))
    if not alive:
        proc.wait(30)
    return info, proc


def test_a_lock_whose_holder_died_on_this_machine_is_taken_over_at_once() -> None:
    dead, _ = _lock_of_a_process(alive=False)
    store = MemoryLock()
    store.payload = dead.to_dict()
    handle = acquire(store, new_lock_info("mine", 900), "demo/prod")
    assert handle.took_over is not None and handle.took_over.lock_id == dead.lock_id
    assert handle.took_over_why == f"its holder, pid {dead.pid} on this machine, is no longer running"
    assert not dead.expired(time.time())  # taken over long before its TTL


def test_a_live_holder_is_respected_and_named_with_its_lock_id() -> None:
    live, proc = _lock_of_a_process(alive=True)
    try:
        store = MemoryLock()
        store.payload = live.to_dict()
        with pytest.raises(LockHeldBy) as caught:
            acquire(store, new_lock_info("mine", 900), "demo/prod")
        assert caught.value.exit_code == 4 and caught.value.lock_id == live.lock_id
        assert f"lock id {live.lock_id}" in str(caught.value) and f"--lock-id {live.lock_id}" in str(caught.value)
        assert store.payload == live.to_dict()
    finally:
        proc.kill()
        proc.wait()


def test_a_reused_pid_is_not_mistaken_for_the_holder() -> None:
    mine = new_lock_info("x", 900)
    assert holder_gone(mine) is None                               # this very process: alive
    impostor = replace(mine, pid_start=str(int(mine.pid_start) + 1))
    assert holder_gone(impostor) == (f"its holder, pid {mine.pid} on this machine, is no longer running "
                                     "(another process has its pid)")


@pytest.mark.parametrize("elsewhere", [{"boot_id": "another-boot"}, {"pid_ns": "pid:[1]"}, {"pid": 0}])
def test_a_holder_on_another_machine_or_container_is_respected_until_its_ttl(elsewhere: dict[str, object]) -> None:
    dead, _ = _lock_of_a_process(alive=False)
    foreign = replace(dead, **elsewhere)  # type: ignore[arg-type]
    assert holder_gone(foreign) is None
    store = MemoryLock()
    store.payload = foreign.to_dict()
    with pytest.raises(LockHeld, match="taken over after its TTL"):
        acquire(store, new_lock_info("mine", 900), "demo/prod")
    expired = replace(foreign, since=time.time() - 1000, ttl_s=900)
    store.payload = expired.to_dict()
    handle = acquire(store, new_lock_info("mine", 900), "demo/prod")
    assert handle.took_over_why == "its TTL expired"


def test_renewal_keeps_a_long_apply_locked_past_its_ttl() -> None:
    store = MemoryLock()
    clock = [float(int(time.time()))]
    handle = acquire(store, new_lock_info("mine", 10, now=clock[0]), "demo/prod")
    lost: list[str] = []
    renewal = Renewal([handle], 0.05, lost.append, clock=lambda: clock[0]).start()
    try:
        for _ in range(5):
            clock[0] += 8  # each step within the TTL of the previous renewal
            deadline = time.monotonic() + 10
            before = store.renewals
            while store.renewals == before and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        renewal.stop()
    held = LockInfo.from_dict(store.payload or {})
    assert not held.expired(clock[0]) and held.renewed >= clock[0] - 8
    assert clock[0] - held.since == 40 > held.ttl_s  # outlived its TTL, renewed
    assert not lost and handle.info.renewed == held.renewed
    handle.release()
    assert store.payload is None  # released by id although the payload changed with each renewal


def test_a_renewal_that_finds_the_lock_broken_reports_it() -> None:
    store = MemoryLock()
    handle = acquire(store, new_lock_info("mine", 10), "demo/prod")
    lost = threading.Event()
    renewal = Renewal([handle], 0.05, lambda message: lost.set()).start()
    try:
        break_locks({"memory": store}, handle.info.lock_id)
        assert lost.wait(10)
    finally:
        renewal.stop()


def test_break_locks_refuses_another_id_and_derives_one_for_old_locks() -> None:
    a, b = MemoryLock(), MemoryLock()
    mine = new_lock_info("x", 900)
    a.payload = mine.to_dict()
    b.payload = LockInfo("old@hxpc pid 7", time.time(), "x", 900).to_dict() | {"lock_id": ""}
    with pytest.raises(LockHeld, match=r"refusing to unlock: the lock held is not .*lock id legacy-"):
        break_locks({"a": a, "b": b}, mine.lock_id)
    assert a.payload is not None and b.payload is not None  # nothing touched
    legacy = LockInfo.from_dict(b.payload).lock_id
    b.payload = None
    assert [where for where, _ in break_locks({"a": a, "b": b}, mine.lock_id)] == ["a"]
    assert a.payload is None
    assert break_locks({"a": a}, "anything") == []  # nothing held: nothing to do
    assert legacy.startswith("legacy-")


# -- the real primitives ---------------------------------------------------------------------------------------------


def _exercise(primitive: LockPrimitive, read_back: bool = True) -> None:
    """The protocol steps every primitive must pass: create, refuse, renew, remove only by id."""
    mine = new_lock_info("spec", 60)
    assert primitive.try_create(mine.to_dict())
    assert not primitive.try_create(new_lock_info("other", 60).to_dict())
    renew = primitive.renew  # type: ignore[attr-defined]
    later = replace(mine, renewed=mine.since + 30)
    assert renew(later.to_dict())
    if read_back:
        held = LockInfo.from_dict(primitive.read() or {})
        assert held.lock_id == mine.lock_id and held.renewed == mine.since + 30
        assert held.expires_at() == mine.since + 90
    primitive.remove(new_lock_info("other", 60).to_dict())  # someone else's id: not removed
    assert primitive.read() is not None
    assert not renew(new_lock_info("other", 60).to_dict())
    primitive.remove(mine.to_dict())  # our id, an older payload: removed
    assert primitive.read() is None
    assert not renew(later.to_dict())


@pytest.fixture
def docker_client() -> Iterator[object]:
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the daemon means: no Docker here
        require(f"no Docker Engine answers: {exc}", False)
    yield client
    client.close()


def _docker_spec(tmp_path: Path, project: str, port: int = 8080) -> Path:
    spec = tmp_path / f"{project}.yaml"
    doc = {"apiVersion": "hxpc/v1", "project": project, "targets": {"compose": {}},
           "services": {"web": {"image": "hxpc-test/busybox:1", "command": ["/bin/httpd"],
                                "args": ["-f", "-p", str(port), "-h", "/www"], "ports": {"http": port}}}}
    spec.write_text("# a spec (JSON is YAML)\n" + json.dumps(doc))
    return spec


def _docker_backend(spec: Path, client: object) -> object:
    from hxpc.compiler.bundle import Meta
    from hxpc.compiler.compile import spec_hash
    from hxpc.compiler.pipeline import resolve_env
    from hxpc.engine.backends.docker.backend import DockerBackend
    from hxpc.sources import FileSources

    resolved = resolve_env(FileSources(str(spec)), "default")
    meta = Meta(resolved.stack.project, "default", spec.name, spec_hash(resolved))
    return DockerBackend(resolved.stack, meta, client)  # type: ignore[arg-type]


def test_the_docker_lock_container_passes_the_protocol(tmp_path: Path, docker_client: object) -> None:
    from hxpc.engine.backends.docker.backend import DockerLock

    project = f"hxl{uuid.uuid4().hex[:8]}"
    backend = _docker_backend(_docker_spec(tmp_path, project), docker_client)
    try:
        _exercise(DockerLock(backend))  # type: ignore[arg-type]
    finally:
        for c in docker_client.api.containers(all=True, filters={"name": f"hxpc-lock-{project}"}):  # type: ignore[attr-defined]
            docker_client.api.remove_container(c["Id"], force=True)  # type: ignore[attr-defined]


def _hxpc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hxpc", *args], capture_output=True, text=True, timeout=300)


def test_hxpc_unlock_breaks_a_lock_from_another_machine_only_by_its_id(tmp_path: Path, docker_client: object) -> None:
    project = f"hxl{uuid.uuid4().hex[:8]}"
    spec = _docker_spec(tmp_path, project)
    backend = _docker_backend(spec, docker_client)
    foreign = replace(new_lock_info("theirs", 900), holder="ci@runner-9 pid 5741", boot_id="another-machine")
    held = backend.lock(foreign)  # type: ignore[attr-defined]
    try:
        refused = _hxpc("apply", str(spec), "--env", "default", "--yes")
        assert refused.returncode == 4, refused.stderr
        assert f"lock id {foreign.lock_id}" in refused.stderr
        assert f"`hxpc unlock {spec} --env default --lock-id {foreign.lock_id}`" in refused.stderr
        wrong = _hxpc("unlock", str(spec), "--env", "default", "--lock-id", "not-the-id")
        assert wrong.returncode == 4 and f"lock id {foreign.lock_id}" in wrong.stderr and "nothing was changed" \
            in wrong.stderr
        lock_name = f"^/hxpc-lock-{project}-default$"
        assert docker_client.api.containers(all=True, filters={"name": lock_name})  # type: ignore[attr-defined]
        done = _hxpc("unlock", str(spec), "--env", "default", "--lock-id", foreign.lock_id)
        assert done.returncode == 0, done.stderr
        assert f"broke lock {foreign.lock_id} of ci@runner-9 pid 5741" in done.stdout
        assert not docker_client.api.containers(all=True, filters={"name": lock_name})  # type: ignore[attr-defined]
        again = _hxpc("unlock", str(spec), "--env", "default", "--lock-id", foreign.lock_id)
        assert again.returncode == 0 and "no apply lock is held" in again.stdout
        held.released = True
    finally:
        api = docker_client.api  # type: ignore[attr-defined]
        for c in api.containers(all=True, filters={"label": f"hxpc.dev/project={project}"}) + api.containers(
                all=True, filters={"name": f"hxpc-lock-{project}"}):
            api.remove_container(c["Id"], force=True)
        for net in api.networks(filters={"label": f"hxpc.dev/project={project}"}):
            api.remove_network(net["Id"])


def test_an_apply_with_nothing_to_change_removes_the_lock_a_killed_apply_left(tmp_path: Path,
                                                                              docker_client: object) -> None:
    from harnesses.docker import free_base

    project = f"hxl{uuid.uuid4().hex[:8]}"
    spec = _docker_spec(tmp_path, project, free_base(host="0.0.0.0"))
    api = docker_client.api  # type: ignore[attr-defined]
    try:
        first = _hxpc("apply", str(spec), "--env", "default", "--yes")
        assert first.returncode == 0, first.stdout + first.stderr
        dead, _ = _lock_of_a_process(alive=False)  # as if killed after its last change, before releasing
        _docker_backend(spec, docker_client).lock(dead)  # type: ignore[attr-defined]
        again = _hxpc("apply", str(spec), "--env", "default", "--yes")
        assert again.returncode == 0, again.stderr
        assert f"removed the lock {dead.lock_id}" in again.stderr and "is no longer running" in again.stderr
        assert not api.containers(all=True, filters={"name": f"^/hxpc-lock-{project}-default$"})
    finally:
        for c in api.containers(all=True, filters={"label": f"hxpc.dev/project={project}"}) + api.containers(
                all=True, filters={"name": f"hxpc-lock-{project}"}):
            api.remove_container(c["Id"], force=True)
        for net in api.networks(filters={"label": f"hxpc.dev/project={project}"}):
            api.remove_network(net["Id"])


def test_a_create_retried_after_a_lost_answer_finds_its_own_lock() -> None:
    from hxpc.engine.backend import TransientError

    class LostAnswer(MemoryLock):
        def try_create(self, payload: Mapping[str, str]) -> bool:
            made = super().try_create(payload)
            if made and self.renewals == 0:
                self.renewals = -1  # once: the lock is taken, but the answer never arrives
                raise TransientError("connection reset")
            return made

    store = LostAnswer()
    mine = new_lock_info("x", 900)
    with pytest.raises(TransientError):
        acquire(store, mine, "demo/prod")
    handle = acquire(store, mine, "demo/prod")  # the executor's retry
    assert handle.took_over is None and store.payload is not None
    handle.release()
    assert store.payload is None
