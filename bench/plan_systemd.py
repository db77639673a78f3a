"""Benchmark: `hxpc plan` for the systemd target against one host running N hxpc units (docker transport).

Starts one systemd container (the test image, see .ci/build-test-images.sh),
installs the compiled units of a generated N-service stack on it as apply
would leave them (files, enabled, started), then plans against it through a
transport that counts the commands it runs. Prints, per N, the wall time of
planning (best of 3) and the commands run on the host per plan: reading is one
command per host whatever N is, so the count must stay flat while N grows.
Run by bench/plan.py (its systemd case), or alone: python bench/plan_systemd.py [N ...]
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import spec_hash
from hxpc.compiler.pipeline import resolve_env
from hxpc.compiler.targets.systemd import emit
from hxpc.engine import plan_live
from hxpc.engine.backends.systemd.backend import SystemdBackend
from hxpc.engine.backends.systemd.transport import CommandResult, DockerExecTransport, Transport
from hxpc.sources import FileSources

IMAGE = "hxpc-test/systemd:bookworm"


class Counting(Transport):
    """Counts the commands sent through the transport it wraps."""

    def __init__(self, inner: Transport):
        self.inner, self.name, self.commands = inner, inner.name, 0

    def wrap(self, argv: Sequence[str]) -> list[str]:
        self.commands += 1
        return self.inner.wrap(argv)

    def unreachable(self, result: CommandResult) -> bool:
        return self.inner.unreachable(result)


def write_spec(directory: Path, n: int, container: str) -> Path:
    services = {f"s{i}": {"exec": ["/bin/busybox", "httpd", "-f", "-p", "${PORT_HTTP}", "-h", "/srv"],
                          "ports": {"http": 10000 + i}, "hosts": ["h1"], "env": {"INDEX": str(i)},
                          "health": {"http": {"path": "/health", "port": "http"}}} for i in range(n)}
    spec = {"apiVersion": "hxpc/v1", "project": "bench", "hosts": {"h1": {"address": f"docker://{container}"}},
            "services": services, "targets": {"systemd": {"hosts": ["h1"], "runtime": "native"}},
            "environments": {"test": {}}}
    path = directory / "bench.yaml"
    path.write_text(json.dumps(spec))
    return path


def install(container: str, files: dict[str, str]) -> None:
    """The compiled units on the host as apply leaves them, in one tar stream (setup, not measured)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path.split("/", 1)[1])
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    units = sorted(p.split("/", 1)[1] for p in files if "/" not in p.split("/", 1)[1])
    names = " ".join(units)
    script = (f"rm -f /etc/systemd/system/bench-*.service && tar -x -C /etc/systemd/system && "
              f"systemctl daemon-reload && systemctl enable --quiet {names} && systemctl start --no-block {names}")
    subprocess.run(["docker", "exec", "-i", container, "sh", "-c", script], input=buf.getvalue(), check=True)
    for _ in range(240):  # measure a settled host, not one busy starting N units
        out = subprocess.run(["docker", "exec", container, "systemctl", "list-units", "--all", "--plain",
                              "--no-legend", "bench-*"], capture_output=True, text=True).stdout
        if sum(" active running " in line for line in out.splitlines()) >= len(units):
            return
        time.sleep(0.5)
    raise SystemExit(f"the {len(units)} bench units did not all start")


def main(sizes: list[int] | None = None) -> None:
    sizes = sizes or [int(a) for a in sys.argv[1:]] or [10, 50, 200]
    container = f"hxpc-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["docker", "run", "-d", "--name", container, "--cap-add", "SYS_ADMIN", "--tmpfs", "/run",
                    "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", IMAGE],
                   check=True, capture_output=True)
    try:
        subprocess.run(["docker", "exec", container, "systemctl", "is-system-running", "--wait"], capture_output=True)
        # as in the tests: in an unprivileged container PrivateUsers= and ProtectProc=invisible cannot combine
        subprocess.run(["docker", "exec", container, "sh", "-c", "mkdir -p /etc/systemd/system/bench-.service.d && "
                        "printf '[Service]\\nProtectProc=default\\n' > /etc/systemd/system/bench-.service.d/test.conf"
                        " && mkdir -p /srv && echo ok > /srv/health"], check=True)
        print(f"{'N units':>8} {'plan wall (s), best of 3':>25} {'commands per host per plan':>27} {'changes':>8}")
        for n in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                resolved = resolve_env(FileSources(str(write_spec(Path(tmp), n, container))), "test")
                meta = Meta("bench", "test", "bench.yaml", spec_hash(resolved))
                install(container, emit(resolved.stack, meta))
                best, commands, changes = float("inf"), 0, 0
                for _ in range(3):
                    counting = Counting(DockerExecTransport(container))
                    backend = SystemdBackend(resolved.stack, meta, transports={"h1": counting})
                    start = time.perf_counter()
                    plan = plan_live({"systemd": backend}, resolved.stack.waves, project="bench", env="test",
                                     spec_hash=meta.spec_hash)
                    best = min(best, time.perf_counter() - start)
                    commands, changes = counting.commands, len(plan.touched)
                print(f"{n:>8} {best:>25.3f} {commands:>27} {changes:>8}")
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


if __name__ == "__main__":
    main()
