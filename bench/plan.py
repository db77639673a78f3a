"""Benchmark: `plan` against live systems: a Docker Engine with N containers, and a systemd host with N units.

For each N a generated spec of N busybox services (no published ports, no health check) is applied
once, then planned three times against the live Engine. Prints the best wall time of a plan (reading
the Engine, parsing, diffing: it is I/O-bound, so wall time is what a user waits) and the Docker API
requests one plan made, counted at the SDK's HTTP session. Planning must make a constant number of
calls (one list per kind of object), not one per container. Everything the bench created is removed
afterwards, also on failure. Needs `hxpc-test/busybox:1` (`.ci/build-test-images.sh`).
The systemd case (bench/plan_systemd.py) plans against one systemd host with N units and counts the
commands run per host. The kubernetes case (bench/plan_kubernetes.py) plans N services against a real API
server beside `kubectl diff --server-side` (default N: 10 100 500). Run:
python bench/plan.py [docker|systemd|kubernetes] [N ...]   (default: docker and systemd, 10 50 200)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import docker

from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import spec_hash
from hxpc.compiler.pipeline import resolve_env
from hxpc.engine import plan_live
from hxpc.engine.apply import ApplyOptions, apply
from hxpc.engine.backends.docker.backend import DockerBackend
from hxpc.sources import FileSources

IMAGE = "hxpc-test/busybox:1"
ENV = "default"


class CountingClient:
    """Counts every HTTP request the SDK's low-level client sends (method and path, version stripped)."""

    def __init__(self, client: docker.DockerClient):
        self.client = client
        self.calls: Counter[str] = Counter()
        session = client.api
        send = session.request

        def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            path = urlparse(url).path
            self.calls[f"{method} /{path.split('/', 2)[-1]}"] += 1
            return send(method, url, *args, **kwargs)

        session.request = counted  # instance attribute: every _get/_post of the APIClient goes through it


def write_spec(directory: Path, project: str, n: int) -> Path:
    services = {f"s{i:04d}": {"image": IMAGE, "replicas": 1, "env": {"INDEX": str(i)}} for i in range(n)}
    spec = directory / f"{project}.yaml"
    spec.write_text(json.dumps({"apiVersion": "hxpc/v1", "project": project, "services": services,
                                "targets": {"compose": {}}}))
    return spec


def cleanup(client: docker.DockerClient, project: str) -> None:
    api = client.api
    for c in api.containers(all=True, filters={"label": f"hxpc.dev/project={project}"}):
        api.remove_container(c["Id"], force=True)
    for c in api.containers(all=True, filters={"name": f"^/hxpc-lock-{project}-"}):
        api.remove_container(c["Id"], force=True)
    for net in api.networks(filters={"label": f"hxpc.dev/project={project}"}):
        api.remove_network(net["Id"])


def bench(n: int, tmp: Path) -> tuple[float, float, Counter[str], int]:
    client = docker.from_env()
    project = f"bench{uuid.uuid4().hex[:6]}"
    try:
        spec = write_spec(tmp, project, n)
        resolved = resolve_env(FileSources(str(spec)), ENV)
        stack = resolved.stack
        meta = Meta(stack.project, ENV, spec.name, spec_hash(resolved))
        backend = DockerBackend(stack, meta, client)
        first = plan_live({"compose": backend}, stack.waves, project=project, env=ENV, spec_hash=meta.spec_hash)
        began = time.monotonic()
        apply(first, {"compose": backend}, env=ENV, spec_hash=meta.spec_hash, project=project,
              options=ApplyOptions(parallelism=16, handle_signals=False))
        applied = time.monotonic() - began
        best = float("inf")
        calls: Counter[str] = Counter()
        for _ in range(3):
            counting = CountingClient(docker.from_env())  # connecting (version negotiation) is not counted
            counting.calls.clear()
            backend = DockerBackend(stack, meta, counting.client)
            start = time.monotonic()
            plan = plan_live({"compose": backend}, stack.waves, project=project, env=ENV, spec_hash=meta.spec_hash)
            best = min(best, time.monotonic() - start)
            calls = counting.calls
            counting.client.close()
            if plan.has_changes:
                raise SystemExit(f"N={n}: the plan after apply is not empty: {plan.summary_line()}")
        live = len(client.api.containers(filters={"label": f"hxpc.dev/project={project}"}))
        return applied, best, calls, live
    finally:
        cleanup(client, project)
        client.close()


def main() -> None:
    args = sys.argv[1:]
    case = args.pop(0) if args and args[0] in ("docker", "systemd", "kubernetes") else "all"
    sizes = [int(a) for a in args] or [10, 50, 200]
    if case == "kubernetes":
        print("kubernetes target, a real API server (tests/kubecluster.py):")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import plan_kubernetes

        plan_kubernetes.main([int(a) for a in args] or [10, 100, 500])
        return
    if case in ("docker", "all"):
        print("compose target, Docker Engine:")
        docker_case(sizes)
    if case in ("systemd", "all"):
        print("systemd target, one host through the docker transport:")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import plan_systemd

        plan_systemd.main(sizes)


def docker_case(sizes: list[int]) -> None:
    print(f"{'N':>5} {'running':>8} {'apply (s)':>10} {'plan (s)':>9} {'API calls/plan':>15}  calls")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            applied, best, calls, live = bench(n, Path(tmp))
        detail = ", ".join(f"{k} x{v}" for k, v in sorted(calls.items()))
        print(f"{n:>5} {live:>8} {applied:>10.1f} {best:>9.3f} {sum(calls.values()):>15}  {detail}", flush=True)


if __name__ == "__main__":
    main()
