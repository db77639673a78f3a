"""The portable health probe scripts, run for real with `/bin/sh` against local servers, with PATH
holding only the tools of one branch (as in an image or on a host that has just those)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool

from hxpc.compiler import probes


@pytest.fixture(scope="module")
def silent() -> Iterator[int]:
    """A port that accepts connections and then never answers nor closes them."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield int(sock.getsockname()[1])
    sock.close()
    for conn in held:
        conn.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(script: str, tmp_path: Path, tools: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """`script` under `/bin/sh` with PATH holding only `tools` (`name=tool` links `tool` as `name`)."""
    bin_dir = tmp_path / ("bin-" + "-".join(tools or ("none",)).replace("=", "_"))
    bin_dir.mkdir(exist_ok=True)
    for entry in tools:
        name, _, tool = entry.partition("=")
        real = sys.executable if (tool or name) == "python3" else require_tool(tool or name)
        link = bin_dir / name
        if not link.exists():
            link.symlink_to(real)
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env={"PATH": str(bin_dir)},
                          timeout=30, check=False)


# each branch alone, without and with `timeout` (which runs `true` to see which form it takes)
HTTP_BRANCHES = [("curl",), ("wget",), ("busybox",), ("wget=busybox", "busybox"), ("python3",),
                 ("bash", "head", "grep")]
TCP_BRANCHES = [("bash",), ("python3",), ("busybox",), ("nc=busybox", "busybox")]
WITH_TIMEOUT = ("timeout", "true")


def _ids(tools: tuple[str, ...]) -> str:
    return "+".join(tools)


@pytest.mark.parametrize("limit", [(), WITH_TIMEOUT], ids=["plain", "timeout"])
@pytest.mark.parametrize("tools", HTTP_BRANCHES, ids=_ids)
def test_http_passes_and_fails_with_each_tool(tools: tuple[str, ...], limit: tuple[str, ...], server: int,
                                              tmp_path: Path) -> None:
    path = (*tools, *limit)
    ok = run(probes.http_script(server, "/healthz", 2), tmp_path, path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert run(probes.http_script(server, "/down", 2), tmp_path, path).returncode != 0
    assert run(probes.http_script(closed_port(), "/healthz", 2), tmp_path, path).returncode != 0


@pytest.mark.parametrize("limit", [(), WITH_TIMEOUT], ids=["plain", "timeout"])
@pytest.mark.parametrize("tools", TCP_BRANCHES, ids=_ids)
def test_tcp_passes_and_fails_with_each_tool(tools: tuple[str, ...], limit: tuple[str, ...], server: int,
                                             tmp_path: Path) -> None:
    # `nc=busybox`: an image whose `nc` is the busybox applet, which has no `-z` (the busybox branch runs)
    path = (*tools, *limit)
    ok = run(probes.tcp_script(server, 2), tmp_path, path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert run(probes.tcp_script(closed_port(), 2), tmp_path, path).returncode != 0


def test_plain_nc_is_the_last_tcp_resort_with_z() -> None:
    # no netcat is installed for the tests (CI neither); its branch is checked as text
    script = probes.tcp_script(8201, 2)
    assert script.index("busybox nc") < script.index("command -v nc") < script.index("$T nc -z -w 2 127.0.0.1 8201")


@pytest.mark.parametrize("tools", [("wget",), ("busybox",), ("bash", "head", "grep")], ids=_ids)
def test_timeout_bounds_a_server_that_never_answers(tools: tuple[str, ...], silent: int, tmp_path: Path) -> None:
    # wget and a raw /dev/tcp read have no limit of their own here: `timeout seconds+1` is what stops them
    start = time.monotonic()
    result = run(probes.http_script(silent, "/healthz", 1), tmp_path, (*tools, *WITH_TIMEOUT))
    assert result.returncode != 0
    assert time.monotonic() - start < 10


def test_exec_runs_the_command_under_timeout(tmp_path: Path) -> None:
    assert run(probes.exec_script(["sh", "-c", "exit 0"], 2), tmp_path, ("sh",)).returncode == 0
    assert run(probes.exec_script(["sh", "-c", "echo no; exit 3"], 2), tmp_path, ("sh",)).returncode == 3
    start = time.monotonic()
    hung = run(probes.exec_script(["sleep", "30"], 1), tmp_path, ("sleep", *WITH_TIMEOUT))
    assert hung.returncode == 124 and time.monotonic() - start < 10


def test_exec_arguments_are_quoted(tmp_path: Path) -> None:
    script = probes.exec_script(["sh", "-c", 'test "$0" = "a b; c"', "a b; c"], 2)
    assert run(script, tmp_path, ("sh",)).returncode == 0


@pytest.mark.parametrize("make", [lambda: probes.http_script(1, "/", 1), lambda: probes.tcp_script(1, 1)],
                         ids=["http", "tcp"])
def test_no_tool_fails_and_says_which_it_looked_for(make: Any, tmp_path: Path) -> None:
    result = run(make(), tmp_path, ())
    assert result.returncode == 1
    assert result.stderr.startswith("hxpc health check: found none of ")
    assert ("curl, wget, busybox wget, python3, bash" in result.stderr or
            "bash, python3, busybox nc, nc" in result.stderr)


def test_paths_urls_and_seconds() -> None:
    assert probes.url(80, None) == probes.url(80, "") == "http://127.0.0.1:80/"
    assert probes.url(80, "health") == "http://127.0.0.1:80/health"
    assert [probes.timeout_s(ms) for ms in (1, 999, 1000, 1001, 2500)] == [1, 1, 1, 2, 3]
    # a path with shell metacharacters stays one argument
    assert "'http://127.0.0.1:80/a b;c'" in probes.http_script(80, "/a b;c", 1)


def test_busybox_is_found_without_grep(tmp_path: Path) -> None:
    # the applet test is `busybox wget --help`, so a host with only /bin/busybox needs nothing else
    assert run("busybox wget --help >/dev/null 2>&1", tmp_path, ("busybox",)).returncode == 0
    assert run("busybox nosuch --help >/dev/null 2>&1", tmp_path, ("busybox",)).returncode != 0
