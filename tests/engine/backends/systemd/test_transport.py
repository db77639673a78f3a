"""Transports for real: the local one on this machine, `docker exec` against a busybox container (so the
file scripts are checked against a minimal POSIX userland), and ssh's command line and failures."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import require, require_tool

from hxpc.engine.backend import TransientError
from hxpc.engine.backends.systemd.transport import (
    DockerExecTransport,
    LocalTransport,
    SshAddress,
    SshTransport,
    Transport,
    parse_ssh_address,
    transport_for,
)

BUSYBOX = "hxpc-test/busybox:1"
SECRET = "p4ss w0rd with 'quotes' and $dollars"


class Recorder(Transport):
    """Any transport, with every command line it ran kept for inspection."""

    def __init__(self, inner: Transport):
        self.inner, self.name = inner, inner.name
        self.argvs: list[list[str]] = []

    def wrap(self, argv: Sequence[str]) -> list[str]:
        full = self.inner.wrap(argv)
        self.argvs.append(full)
        return full

    def unreachable(self, result):  # type: ignore[no-untyped-def]
        return self.inner.unreachable(result)


@pytest.mark.parametrize(("address", "expected"), [
    ("gpu-01.internal", SshAddress("gpu-01.internal")),
    ("deploy@gpu-01", SshAddress("gpu-01", "deploy")),
    ("deploy@gpu-01:2222", SshAddress("gpu-01", "deploy", 2222)),
    ("ssh://deploy@10.0.0.5:22", SshAddress("10.0.0.5", "deploy", 22)),
    ("ssh://gpu-01", SshAddress("gpu-01")),
    ("root@[fe80::1]:2200", SshAddress("fe80::1", "root", 2200)),
    ("fe80::1", SshAddress("fe80::1")),
])
def test_ssh_address_forms(address: str, expected: SshAddress) -> None:
    assert parse_ssh_address(address) == expected


def test_transport_is_chosen_by_address(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(transport_for("local", "h"), LocalTransport)
    docker = transport_for("docker://box-1", "h")
    assert isinstance(docker, DockerExecTransport) and docker.container == "box-1"
    by_name = transport_for(None, "gpu-01")
    assert isinstance(by_name, SshTransport) and by_name.address.host == "gpu-01"
    monkeypatch.setenv("HXPC_SSH_CONFIG", "/etc/hxpc/ssh_config")
    from_env = transport_for("deploy@gpu-01:2222", "gpu-01")
    assert isinstance(from_env, SshTransport) and from_env.ssh_config == "/etc/hxpc/ssh_config"
    assert transport_for("gpu-01", "gpu-01", "/explicit").ssh_config == "/explicit"  # type: ignore[attr-defined]


def test_ssh_command_line_is_batch_mode_and_multiplexed() -> None:
    t = SshTransport("ssh://deploy@gpu-01:2222", "/tmp/cfg")
    argv = t.wrap(["systemctl", "show", "-p", "Id", "a b.service"])
    control_dir = Path(t._control_dir())
    try:
        assert argv[:3] == ["ssh", "-F", "/tmp/cfg"]
        assert {"BatchMode=yes", "ControlMaster=auto", f"ControlPath={control_dir}/%C"} <= set(argv)
        assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "deploy"
        assert argv[-2:-1] == ["gpu-01"] and argv[-3] == "--"
        assert "'a b.service'" in argv[-1]                       # one remote string, every word quoted
        assert oct(control_dir.stat().st_mode & 0o777) == "0o700"  # nobody else may use the master socket
    finally:
        t.close()
    assert not control_dir.exists()


def test_ssh_that_cannot_connect_is_transient_and_names_the_host() -> None:
    require_tool("ssh")
    t = SshTransport("nobody@127.0.0.1:1")
    try:
        with pytest.raises(TransientError, match=r"ssh://nobody@127.0.0.1:1: cannot reach the host: .*refused"):
            t.run(["true"], timeout=20)
    finally:
        t.close()


def test_local_transport_runs_writes_atomically_and_reads(tmp_path: Path) -> None:
    require("the local transport writes as root (or with sudo -n)", os.geteuid() == 0)
    t = Recorder(LocalTransport())
    result = t.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.rc, result.out, result.err) == (3, "out\n", "err")
    target = tmp_path / "etc" / "hxpc" / "app.env"
    t.put_file(str(target), SECRET.encode(), mode=0o600, dir_mode=0o700)
    assert target.read_bytes() == SECRET.encode()
    assert oct(target.stat().st_mode & 0o777) == "0o600" and target.stat().st_uid == 0
    assert oct(target.parent.stat().st_mode & 0o777) == "0o700"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".hxpc.")]   # no temporary left
    t.put_file(str(target), b"second", mode=0o600)
    assert t.read_file(str(target)) == b"second"
    assert t.read_file(str(tmp_path / "missing")) is None
    assert not any(SECRET in " ".join(argv) for argv in t.argvs)   # contents travel on stdin only


def test_local_timeout_is_transient() -> None:
    require("the local transport runs as root (or with sudo -n)", os.geteuid() == 0)
    with pytest.raises(TransientError, match=r"timed out after 0\.2s"):
        LocalTransport().run(["sleep", "5"], timeout=0.2)


@pytest.fixture(scope="module")
def busybox_container() -> Iterator[str]:
    require_tool("docker")
    have = subprocess.run(["docker", "image", "inspect", BUSYBOX], capture_output=True).returncode == 0
    require(f"the test image {BUSYBOX} is missing (.ci/build-test-images.sh builds it)", have)
    name = f"hxpc-transport-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "run", "-d", "--name", name, BUSYBOX], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_docker_exec_transport_against_a_busybox_container(busybox_container: str) -> None:
    t = Recorder(DockerExecTransport(busybox_container))
    assert t.run(["id", "-u"]).out.strip() == "0"
    t.put_file("/etc/hxpc/p-e/api.env", SECRET.encode(), mode=0o600, dir_mode=0o700)
    assert t.read_file("/etc/hxpc/p-e/api.env") == SECRET.encode()
    listing = t.run(["ls", "-la", "/etc/hxpc/p-e"]).out
    assert "-rw-------" in listing and ".hxpc." not in listing
    assert t.run(["stat", "-c", "%a %U", "/etc/hxpc/p-e"]).out.strip() == "700 root"
    assert t.read_file("/nope") is None
    binary = bytes(range(256)) * 4
    t.put_file("/tmp/blob", binary)
    assert t.read_file("/tmp/blob") == binary
    assert not any(SECRET in " ".join(argv) for argv in t.argvs)


def test_docker_exec_to_a_missing_container_is_unreachable() -> None:
    require_tool("docker")
    with pytest.raises(TransientError, match=r"docker://hxpc-no-such-box: cannot reach the host: .*No such container"):
        DockerExecTransport("hxpc-no-such-box").run(["true"])
