"""Benchmark: an update of N replicas by `hxpc apply` (rolling) beside `docker compose up -d` (recreate).

For each N a service of N busybox httpd replicas, each published on its own host port, answering
`GET /version` with its version and taking `--start` seconds to listen after it starts (a real service's
warm-up, shortened), with an http health check. Both tools first bring up version v1, then change one
`env` value to v2; during the update a client GETs every replica every 50 ms (tests/rollcheck.py).
hxpc applies the spec to the Docker Engine (the engine's own `apply`, as `hxpc apply` runs it, with
`update.max_unavailable` 1); Compose runs `docker compose -p <project> up -d --wait` on the compose file
`hxpc compile` writes for the same spec, which recreates every changed container at once. Printed per N,
side by side: wall time of the update (Compose's `--wait` covers its health checks, as hxpc's gates do),
the fewest replicas that answered in any poll, and the longest stretch during which none did. Each tool
gets its own project and ports; everything is removed afterwards. Needs `hxpc-test/busybox:1` and the
`docker compose` plugin.

Run: python bench/rolling.py [--start S] [N ...]   (default: --start 2, N 3 6)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker

from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import compile_env, spec_hash
from hxpc.compiler.pipeline import resolve_env
from hxpc.engine import plan_live
from hxpc.engine.apply import ApplyOptions, apply
from hxpc.engine.backends.docker.backend import DockerBackend
from hxpc.sources import FileSources

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harnesses.docker import free_base  # the tests' own port picker
from rollcheck import Poller, fetch, wait_until  # the client the rolling tests use

IMAGE = "hxpc-test/busybox:1"
ENV = "default"
SCRIPT = ('mkdir -p /tmp/www && echo ok > /tmp/www/health && echo "$VERSION" > /tmp/www/version && '
          'sleep "$START" && exec httpd -f -p "$PORT" -h /tmp/www')


def write_spec(path: Path, project: str, n: int, port: int, version: str, start: float) -> Path:
    service = {"image": IMAGE, "command": ["/bin/sh"], "args": ["-c", SCRIPT], "replicas": n,
               "ports": {"http": port}, "env": {"VERSION": version, "START": str(start), "PORT": str(port)},
               "update": {"max_unavailable": 1},
               "health": {"http": {"path": "/health", "port": "http"}, "interval": "1s", "timeout": "1s",
                          "retries": 2, "start_period": f"{int(start) + 1}s"}}
    path.write_text(json.dumps({"apiVersion": "hxpc/v1", "project": project, "services": {"web": service},
                                "targets": {"compose": {}}}))
    return path


def urls(port: int, n: int) -> list[str]:
    return [f"http://127.0.0.1:{port + i}/version" for i in range(n)]


def hxpc_update(spec: Path, client: docker.DockerClient) -> None:
    resolved = resolve_env(FileSources(str(spec)), ENV)
    meta = Meta(resolved.stack.project, ENV, spec.name, spec_hash(resolved))
    backend = DockerBackend(resolved.stack, meta, client, bind_address="127.0.0.1")
    plan = plan_live({"compose": backend}, resolved.stack.waves, project=meta.project, env=ENV,
                     spec_hash=meta.spec_hash)
    apply(plan, {"compose": backend}, env=ENV, spec_hash=meta.spec_hash, project=meta.project,
          options=ApplyOptions(handle_signals=False))


def compose_update(spec: Path, project: str, workdir: Path) -> None:
    bundle = compile_env(resolve_env(FileSources(str(spec)), ENV), spec.name, ["compose"])
    compose_file = workdir / "compose.yaml"
    compose_file.write_text(bundle.files[f"{ENV}/compose/compose.yaml"])
    done = subprocess.run(["docker", "compose", "-p", project, "-f", str(compose_file), "up", "-d", "--wait"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"docker compose up failed: {done.stderr.strip()}")


def measure(name: str, n: int, start: float, tmp: Path, client: docker.DockerClient) -> dict[str, Any]:
    project = f"hxb{uuid.uuid4().hex[:6]}"
    port = free_base(n)
    spec = tmp / f"{project}.yaml"
    targets = urls(port, n)

    def update(version: str) -> None:
        write_spec(spec, project, n, port, version, start)
        if name == "hxpc":
            hxpc_update(spec, client)
        else:
            compose_update(spec, f"{project}-compose", tmp)

    try:
        update("v1")
        wait_until(lambda: [fetch(u) for u in targets] == ["v1"] * n, 120, f"{name}: {n} replicas serving v1")
        began = time.monotonic()
        with Poller(targets) as poller:
            update("v2")
            took = time.monotonic() - began
            wait_until(lambda: [fetch(u) for u in targets] == ["v2"] * n, 120, f"{name}: {n} replicas serving v2")
        return {"took": took, "min": poller.min_serving, "none": poller.longest_gap(), "rounds": len(poller.rounds)}
    finally:
        cleanup(client, project)


def cleanup(client: docker.DockerClient, project: str) -> None:
    api = client.api
    for label in (f"hxpc.dev/project={project}", f"com.docker.compose.project={project}-compose"):
        for c in api.containers(all=True, filters={"label": label}):
            api.remove_container(c["Id"], force=True)
        for net in api.networks(filters={"label": label}):
            api.remove_network(net["Id"])
        for vol in (api.volumes(filters={"label": label}) or {}).get("Volumes") or []:
            api.remove_volume(vol["Name"], force=True)
    for c in api.containers(all=True, filters={"name": f"^/hxpc-lock-{project}-"}):
        api.remove_container(c["Id"], force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=float, default=2.0, help="seconds a replica takes to listen")
    parser.add_argument("sizes", nargs="*", type=int, default=[3, 6])
    args = parser.parse_args()
    client = docker.from_env()
    print(f"one env value changed on a service of N replicas, each taking {args.start:g}s to start; "
          "a client polls every replica every 50 ms")
    print(f"{'N':>3}  {'':<28} {'update (s)':>10} {'fewest serving':>15} {'longest with none (s)':>22}")
    for n in args.sizes:
        for name, label in (("hxpc", "hxpc apply (rolling)"), ("compose", "docker compose up -d --wait")):
            with tempfile.TemporaryDirectory() as tmp:
                got = measure(name, n, args.start, Path(tmp), client)
            print(f"{n:>3}  {label:<28} {got['took']:>10.1f} {got['min']:>10} of {n:<3} {got['none']:>22.2f}",
                  flush=True)
    client.close()


if __name__ == "__main__":
    main()
