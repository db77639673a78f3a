"""How hxpc reaches a host: run a command, put a file atomically with owner and mode, read a file.

`Transport` is the one interface every systemd backend call goes through;
`LocalTransport` runs commands here, `SshTransport` uses the system `ssh`
client (batch mode, the user's own config and agent, `-F FILE` for
`--ssh-config`/`HXPC_SSH_CONFIG`, one multiplexed connection per host for the
whole run, closed at exit) and `DockerExecTransport` uses `docker exec -i`.
`transport_for` chooses one from a host's `address`. File contents travel on
the command's stdin, never in its arguments: a secret is in no process's argv.
Commands run as root; a remote login that is not root runs them with
`sudo -n`. A connection failure or timeout is a `TransientError` naming the
host; a command's own failure is returned to the caller as its exit status.
"""

from __future__ import annotations

import abc
import atexit
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from hxpc.engine.backend import TransientError
from hxpc.errors import BackendError

DEFAULT_TIMEOUT_S = 60.0
SSH_PERSIST_S = 60  # the master outlives a killed hxpc by at most this long
# A host that does not answer (a dropped SYN, or a TCP peer that never sends its banner) fails within this
# long instead of the system's TCP timeout (minutes); a connection that goes silent mid-command is declared
# dead after SSH_ALIVE_S x 3. Both are transient failures naming the host. `-o` options given here win over
# the user's ssh config, so these are the bounds hxpc promises.
SSH_CONNECT_TIMEOUT_S = 10
SSH_ALIVE_S = 10

# Writes go to a temporary name in the target's directory (same file system: the rename is atomic),
# created by mktemp with mode 0600, so a secret is never readable by others, not even for a moment.
# The content arrives on stdin, and a killed hxpc (or a cut connection) ends stdin early without
# stopping the remote shell: the size is checked before the rename, so a short file is never renamed
# into place. Temporary files that a killed shell left behind are removed once they are old.
_PUT = r"""set -eu
path=$1 mode=$2 owner=$3 dirmode=$4 size=$5
dir=$(dirname -- "$path")
[ -d "$dir" ] || mkdir -p -m "$dirmode" -- "$dir"
find "$dir" -maxdepth 1 -name '.hxpc.*' -mmin +10 -exec rm -f -- {} + 2>/dev/null || true
tmp=$(mktemp "$dir/.hxpc.XXXXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
got=$(wc -c < "$tmp")
if [ "$((got))" -ne "$size" ]; then echo "short write: $((got)) of $size bytes arrived" >&2; exit 1; fi
chown -- "$owner" "$tmp"
chmod -- "$mode" "$tmp"
mv -f -- "$tmp" "$path"
trap - EXIT
"""
_READ = 'if [ -e "$1" ]; then exec cat -- "$1"; else exit 3; fi'
_AS_ROOT = 'if [ "$(id -u)" -ne 0 ]; then exec sudo -n -- "$@"; fi; exec "$@"'


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace").strip()


class Transport(abc.ABC):
    """Run commands on one host. Subclasses say how an argv reaches it (`wrap`) and what a failure
    to connect looks like (`unreachable`); files and scripts are built on `run`."""

    name = "host"

    @abc.abstractmethod
    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The local argv that runs `argv` on the host."""

    def unreachable(self, result: CommandResult) -> bool:
        """Whether this failure is the connection's rather than the command's."""
        return False

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        """Run `argv` on the host with `input` on stdin; its exit status and output."""
        try:
            done = subprocess.run(self.wrap(argv), input=input or b"", capture_output=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise TransientError(f"{self.name}: `{_show(argv)}` timed out after {timeout:g}s") from exc
        except OSError as exc:
            raise BackendError(f"{self.name}: cannot run {self.wrap(argv)[0]}: {exc}") from exc
        result = CommandResult(done.returncode, done.stdout, done.stderr)
        if self.unreachable(result):
            raise TransientError(f"{self.name}: cannot reach the host: {result.err or f'exit {result.rc}'}")
        return result

    def sh(self, script: str, *args: str, input: bytes | None = None,
           timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        """Run a POSIX sh script with positional arguments (the script is in argv: never put secrets in it)."""
        return self.run(["sh", "-c", script, "hxpc", *args], input=input, timeout=timeout)

    def check(self, script: str, *args: str, input: bytes | None = None, what: str = "",
              timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        """`sh`, raising BackendError with the host's own message when the script fails."""
        result = self.sh(script, *args, input=input, timeout=timeout)
        if result.rc != 0:
            raise BackendError(f"{self.name}: {what or 'command'} failed (exit {result.rc}): "
                               f"{result.err or result.out.strip() or 'no output'}")
        return result

    def put_file(self, path: str, data: bytes, *, mode: int = 0o644, owner: str = "root:root",
                 dir_mode: int = 0o755) -> None:
        """Write `data` to `path` atomically (temporary name in the same directory, then `mv -f`)."""
        self.check(_PUT, path, f"{mode:04o}", owner, f"{dir_mode:04o}", str(len(data)), input=data,
                   what=f"writing {path}")

    def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        result = self.sh(_READ, path)
        if result.rc == 3:
            return None
        if result.rc != 0:
            raise BackendError(f"{self.name}: reading {path} failed: {result.err}")
        return result.stdout

    def close(self) -> None:  # noqa: B027 - a no-op by default: only ssh holds something to release
        """Release what the transport holds (an ssh master connection)."""


def _show(argv: Sequence[str]) -> str:
    text = shlex.join(argv)
    return text if len(text) <= 80 else text[:79] + "…"


class LocalTransport(Transport):
    """This machine; commands run with `sudo -n` when hxpc itself is not root."""

    name = "local"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        if os.geteuid() != 0:
            return ["sudo", "-n", "--", *argv]
        return list(argv)


class DockerExecTransport(Transport):
    """A container (`docker://<name>`), as root through `docker exec -i`; used by the tests."""

    def __init__(self, container: str, docker: str = "docker"):
        self.container, self.docker = container, docker
        self.name = f"docker://{container}"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return [self.docker, "exec", "-i", "-u", "0", self.container, *argv]

    def unreachable(self, result: CommandResult) -> bool:
        # the CLI's own failures (no such container, not running, daemon down) exit 1 or 125-127 with this prefix
        return result.rc in (1, 125, 126, 127) and (
            result.err.startswith("Error response from daemon") or "Cannot connect to the Docker daemon" in result.err)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class SshAddress:
    host: str
    user: str | None = None
    port: int | None = None


def parse_ssh_address(address: str) -> SshAddress:
    """`host`, `user@host`, `user@host:port`, `ssh://user@host:port`, `[v6addr]:port`."""
    rest = address.removeprefix("ssh://").rstrip("/")
    user = None
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        user = user or None
    port = None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = _port(tail[1:], address)
    elif rest.count(":") == 1:
        host, _, text = rest.partition(":")
        port = _port(text, address)
    else:
        host = rest  # a bare IPv6 address has several colons and no port
    if not host:
        raise BackendError(f"ssh address `{address}` names no host")
    return SshAddress(host, user, port)


def _port(text: str, address: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise BackendError(f"ssh address `{address}`: `{text}` is not a port")
    return int(text)


class SshTransport(Transport):
    """The system `ssh` client: BatchMode (never prompts), the user's config and agent, one master
    connection per host shared by every command of the run (ControlMaster in a private directory)."""

    def __init__(self, address: str, ssh_config: str | None = None, ssh: str = "ssh"):
        self.address = parse_ssh_address(address)
        self.ssh, self.ssh_config = ssh, ssh_config
        self.name = f"ssh://{address.removeprefix('ssh://')}"
        self._dir: str | None = None
        self._guard = threading.Lock()

    def _control_dir(self) -> str:
        with self._guard:
            if self._dir is None:
                # mkdtemp is 0700: nobody else can use (or hijack) the master socket
                self._dir = tempfile.mkdtemp(prefix="hxpc-ssh-")
                atexit.register(self.close)
            return self._dir

    def options(self) -> list[str]:
        opts = ["-F", self.ssh_config] if self.ssh_config else []
        opts += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}",
                 "-o", f"ServerAliveInterval={SSH_ALIVE_S}", "-o", "ServerAliveCountMax=3", "-o", "ControlMaster=auto",
                 "-o", f"ControlPath={self._control_dir()}/%C", "-o", f"ControlPersist={SSH_PERSIST_S}"]
        if self.address.port is not None:
            opts += ["-p", str(self.address.port)]
        if self.address.user is not None:
            opts += ["-l", self.address.user]
        return opts

    def wrap(self, argv: Sequence[str]) -> list[str]:
        # ssh hands the remote shell one string: quote every word; root or `sudo -n` as on the other transports
        remote = shlex.join(["sh", "-c", _AS_ROOT, "hxpc", *argv])
        return [self.ssh, *self.options(), "--", self.address.host, remote]

    def unreachable(self, result: CommandResult) -> bool:
        return result.rc == 255  # ssh's own failures; a remote command's status is passed through

    def close(self) -> None:
        with self._guard:
            directory, self._dir = self._dir, None
        if directory is None:
            return
        opts = ["-F", self.ssh_config] if self.ssh_config else []
        subprocess.run([self.ssh, *opts, "-o", f"ControlPath={directory}/%C", "-O", "exit", "--", self.address.host],
                       capture_output=True, timeout=10, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def transport_for(address: str | None, host: str, ssh_config: str | None = None) -> Transport:
    """The transport a host's `address` asks for: `local`, `docker://<container>`, else ssh (a host
    without an address is reached by its name). `ssh_config` falls back to `HXPC_SSH_CONFIG`."""
    address = address or host
    if address == "local":
        return LocalTransport()
    if address.startswith("docker://"):
        container = address.removeprefix("docker://").strip("/")
        if not container:
            raise BackendError(f"host `{host}`: `{address}` names no container")
        return DockerExecTransport(container)
    return SshTransport(address, ssh_config or os.environ.get("HXPC_SSH_CONFIG") or None)


__all__ = ["CommandResult", "DockerExecTransport", "LocalTransport", "SshAddress", "SshTransport", "Transport",
           "parse_ssh_address", "transport_for"]
