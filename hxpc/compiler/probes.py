"""Health probes as portable POSIX sh scripts, for wherever hxpc cannot know which tools exist.

One builder serves the Compose target's `CMD-SHELL` health checks (run inside
an image) and the systemd backend's health gate (run on a host over a
transport), so both behave alike: an http check uses the first of curl, wget,
busybox wget, python3 or bash (`/dev/tcp`); a tcp check the first of bash,
python3, busybox nc or nc; none of them is assumed to exist, and a script
that finds none says so on stderr and exits 1. Every tool runs under
`timeout <seconds + 1>` when the system's `timeout` takes that form (busybox
before 1.30 only knows `-t`), a backstop behind each tool's own limit and the
only limit of an exec check; where Docker enforces the health check's timeout
itself the wrapper is redundant but harmless. Exactly one branch runs and its
exit status is the check's result. Scripts use `$`: the Compose target
escapes it as `$$` with every other value.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence

# `print(e)`: the reason (refused, HTTP 503, timed out) is what both Docker's health log and the gate show
PY_HTTP = ("import sys,urllib.request as u\n"
           "try: u.urlopen(sys.argv[1], timeout=float(sys.argv[2])).close()\n"
           "except Exception as e: print(e); sys.exit(1)")
PY_TCP = ("import socket,sys\n"
          "try: socket.create_connection((\"127.0.0.1\", int(sys.argv[1])), float(sys.argv[2])).close()\n"
          "except Exception as e: print(e); sys.exit(1)")


def timeout_s(timeout_ms: int) -> int:
    """A probe's timeout in whole seconds, the unit every tool takes: rounded up, at least 1."""
    return max(1, math.ceil(timeout_ms / 1000))


def url(port: int, path: str | None) -> str:
    """The URL an http check requests: always the loopback address, `path` with its leading `/`."""
    return f"http://127.0.0.1:{port}{_path(path)}"


def http_script(port: int, path: str | None, seconds: int) -> str:
    """GET `url(port, path)` with the first available tool; any 2xx or 3xx answer passes."""
    target = shlex.quote(url(port, path))
    raw = (f"exec 3<>/dev/tcp/127.0.0.1/{port} && "
           f'printf "GET %s HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n" '
           f"{shlex.quote(_path(path))} >&3"
           ' && head -n 1 <&3 | grep -qE "^HTTP/[0-9.]+ [23]"')
    return _limit(seconds) + _first_of([
        (_has("curl"), f"$T curl -fsS -o /dev/null -m {seconds} {target}"),
        # no `-T`: Debian bookworm's busybox wget segfaults with it; `timeout` bounds both instead
        (_has("wget"), f"$T wget -q -O /dev/null {target}"),
        (_busybox_has("wget"), f"$T busybox wget -q -O /dev/null {target}"),
        (_has("python3"), f"$T python3 -c {shlex.quote(PY_HTTP)} {target} {seconds}"),
        (_has("bash"), f"$T bash -c {shlex.quote(raw)}"),
    ], "curl, wget, busybox wget, python3, bash")


def tcp_script(port: int, seconds: int) -> str:
    """Connect to 127.0.0.1:`port` with the first available tool; an accepted connection passes."""
    return _limit(seconds) + _first_of([
        (_has("bash"), f"$T bash -c {shlex.quote(f'exec 3<>/dev/tcp/127.0.0.1/{port}')}"),
        (_has("python3"), f"$T python3 -c {shlex.quote(PY_TCP)} {port} {seconds}"),
        # before plain `nc`, which may be this very applet: busybox nc has no `-z`, so it half-closes on
        # an empty stdin instead (a server that ignores that is cut off by `timeout`)
        (_busybox_has("nc"), f"$T busybox nc -w {seconds} 127.0.0.1 {port} </dev/null >/dev/null"),
        (_has("nc"), f"$T nc -z -w {seconds} 127.0.0.1 {port}"),
    ], "bash, python3, busybox nc, nc")


def exec_script(command: Sequence[str], seconds: int) -> str:
    """Run `command` (already a complete argv); its exit status is the result."""
    return _limit(seconds) + f"$T {shlex.join(command)}"


def _path(path: str | None) -> str:
    path = path or "/"
    return path if path.startswith("/") else "/" + path


def _limit(seconds: int) -> str:
    # `timeout 1 true` rather than `command -v timeout`: it also rules out busybox's old `-t SECS` form
    return f"if timeout 1 true >/dev/null 2>&1; then T='timeout {seconds + 1}'; else T=; fi; "


def _has(tool: str) -> str:
    return f"command -v {tool} >/dev/null 2>&1"


def _busybox_has(applet: str) -> str:
    # `busybox APPLET --help` exits 0 only for a compiled-in applet (127 otherwise), and needs no grep
    return f"busybox {applet} --help >/dev/null 2>&1"


def _first_of(branches: Sequence[tuple[str, str]], tools: str) -> str:
    parts = [f"{'if' if i == 0 else 'elif'} {test}; then {check}" for i, (test, check) in enumerate(branches)]
    parts.append(f"else echo {shlex.quote(f'hxpc health check: found none of {tools}')} >&2; exit 1; fi")
    return "; ".join(parts)
