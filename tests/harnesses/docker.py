"""The compose target on a real Docker Engine: a test's project, its containers, and the Engine as a user reads it.

Every `DockerStack` has its own project name and free host ports in 20000-40000 bound to 127.0.0.1, and
`cleanup` removes whatever carries that project (containers, network, volumes, lock) however the test
ends. Services run `hxpc-test/busybox:1` (built by `.ci/build-test-images.sh`): busybox httpd on the
service's own port, `/health` answering "ok"; version 2 is the tag `hxpc-test/busybox:2` of the same
image. Health checks use 1 s timings so a gate takes seconds; a broken service asks for `/nope` (404), so
Docker reports it unhealthy; a "slow" gate asks for `/slow` with a 60 s start period, so Docker keeps the
container `starting` and the gate waits until it is interrupted.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
from conftest import require

from harnesses import Svc
from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import compile_env, spec_hash
from hxpc.compiler.pipeline import resolve_env
from hxpc.engine import plan_live
from hxpc.engine.apply import ApplyOptions, apply
from hxpc.engine.backends.docker import parse as dp
from hxpc.engine.backends.docker.backend import DockerBackend
from hxpc.engine.lock import LockHandle, new_lock_info
from hxpc.engine.plan import Plan
from hxpc.engine.render import render_json, render_text
from hxpc.engine.report import ApplyReport
from hxpc.sources import FileSources

IMAGE = "hxpc-test/busybox:1"
IMAGE2 = "hxpc-test/busybox:2"
ENV = "default"


def docker_client() -> docker.DockerClient:
    """A client of the local Engine with the test images, or skip (fail in CI) saying what is missing."""
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        require(f"no Docker Engine answers: {exc}; .ci/setup starts dockerd and builds the test images", False)
        raise
    try:
        client.api.inspect_image(IMAGE)
    except docker.errors.ImageNotFound:
        require(f"test image {IMAGE} is missing: run .ci/build-test-images.sh", False)
    client.api.tag(IMAGE, "hxpc-test/busybox", "2")  # a second tag of the same image: an image change
    return client


def free_base(span: int = 10, host: str = "127.0.0.1") -> int:
    """A base port with `span` free ports above it on `host` (0.0.0.0: every address)."""
    for _ in range(200):
        base = random.randrange(20000, 40000 - span)
        socks = []
        try:
            for p in range(base, base + span):
                s = socket.socket()
                socks.append(s)
                s.bind((host, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def svc(port: int, *, image: str = IMAGE, replicas: int = 1, env: Mapping[str, str] | None = None,
        path: str | None = "/health", start_period: str = "1s", **extra: Any) -> dict[str, Any]:
    """A busybox httpd service listening (and published) on `port` (+i per replica)."""
    out: dict[str, Any] = {"image": image, "command": ["/bin/httpd"], "args": ["-f", "-p", str(port), "-h", "/www"],
                           "ports": {"http": port}, "replicas": replicas, "env": dict(env or {}), **extra}
    if path is not None:
        out["health"] = {"http": {"path": path, "port": "http"}, "interval": "1s", "timeout": "1s", "retries": 2,
                         "start_period": start_period}
    return out


def get(port: int, path: str = "/health") -> str:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return str(response.read().decode())


class DockerStack:
    """One test's project: writes specs, plans and applies them, and reads the Engine like a user would."""

    name = "docker"
    detects_secret_rotation = False   # labels and plans hold a secret's name only, never its value

    def __init__(self, client: docker.DockerClient, tmp_path: Path):
        self.client = client
        self.api = client.api
        self.tmp = tmp_path
        self.project = f"hxt{uuid.uuid4().hex[:8]}"
        self.scope = f"{self.project}-{ENV}"
        self.port = free_base()
        self.spec = tmp_path / f"{self.project}.yaml"
        self.ports: dict[str, int] = {}
        self.shown: list[str] = []

    # -- the spec and the engine ----------------------------------------------------------------------------------

    def write_raw(self, services: dict[str, Any], secrets: Mapping[str, Any] | None = None) -> Path:
        doc: dict[str, Any] = {"apiVersion": "hxpc/v1", "project": self.project, "services": services,
                               "targets": {"compose": {}}}
        if secrets:
            doc["secrets"] = dict(secrets)
        self.spec.write_text(json.dumps(doc, indent=1))  # JSON is YAML
        return self.spec

    def port_of(self, name: str) -> int:
        return self.ports.setdefault(name, self.port + 3 * len(self.ports))

    def write(self, services: Mapping[str, Svc], secrets: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.write_raw({name: svc(self.port_of(name), image=IMAGE if s.version == 1 else IMAGE2,
                                  replicas=s.replicas, env=s.env,
                                  path=None if not s.health else "/nope" if s.broken else "/health",
                                  secrets=dict(s.secrets), depends_on=list(s.depends_on),
                                  **({"volumes": {"data": {"path": "/data"}}} if s.volume else {}))
                        for name, s in services.items()}, secrets)

    def backend(self) -> tuple[DockerBackend, Meta, Any]:
        resolved = resolve_env(FileSources(str(self.spec)), ENV)
        meta = Meta(resolved.stack.project, ENV, self.spec.name, spec_hash(resolved))
        return DockerBackend(resolved.stack, meta, self.client, bind_address="127.0.0.1"), meta, resolved.stack

    def plan(self) -> Plan:
        backend, meta, stack = self.backend()
        plan = plan_live({"compose": backend}, stack.waves, project=meta.project, env=ENV, spec_hash=meta.spec_hash)
        self.shown += [render_text(plan), render_json(plan)]
        return plan

    def apply(self, plan: Plan | None = None, **opts: Any) -> ApplyReport:
        backend, meta, _ = self.backend()
        progress = opts.pop("progress", None)
        report = apply(plan or self.plan(), {"compose": backend}, env=ENV, spec_hash=meta.spec_hash,
                       project=meta.project, options=ApplyOptions(handle_signals=False, backoff_s=0.1, **opts),
                       progress=progress)
        self.shown.append(report.render())
        return report

    # -- the Engine as a user reads it ----------------------------------------------------------------------------

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

    # -- the Harness ----------------------------------------------------------------------------------------------

    def desired(self) -> set[str]:
        return {str(k) for k in self.backend()[0].desired()}

    def addresses(self, name: str) -> set[str]:
        return {str(k) for k, d in self.backend()[0].desired().items() if d.workload == name}

    def bookkeeping(self) -> set[str]:
        return set()

    def _of(self, name: str) -> list[dict[str, Any]]:
        """hxpc's containers of service `name` (a container with Compose's labels alone is not hxpc's)."""
        owns = dp.Names(self.project, ENV).owns
        return [c for n, c in self.containers().items() if owns(c.get("Labels") or {})
                and (c.get("Labels") or {}).get(dp.LABEL_SERVICE) == name and not n.endswith(dp.ASIDE_SUFFIX)]

    def instances(self, name: str) -> set[str]:
        return {str(c["Id"]) for c in self._of(name)}

    def serving(self, name: str) -> bool:
        found = self._of(name)
        try:
            return bool(found) and all(c["State"] == "running" for c in found) and all(
                get(self.port_of(name) + i) == "ok\n" for i in range(len(found)))
        except OSError:
            return False

    def exists(self, name: str) -> bool:
        return bool(self._of(name))

    def add_stray(self) -> Any:
        stray = self.run_stray(f"{self.scope}-stray")
        compose_only = self.run_stray(f"{self.scope}-web-7", {dp.LABEL_PROJECT: self.scope, dp.LABEL_SERVICE: "web"})
        return {stray, compose_only}

    def stray_intact(self, stray: Any) -> bool:
        left = {str(c["Id"]): c for c in self.containers().values()}
        return all(cid in left and left[cid]["State"] == "running" for cid in stray)

    def put_in_the_way(self, name: str) -> str:
        self.run_stray(f"{self.scope}-{name}-1")
        return f"compose:{self.scope}/container/{name}-1"

    def change_outside(self, name: str) -> str:
        self.api.remove_container(f"{self.scope}-{name}-1", force=True)   # someone removed it by hand
        return f"compose:{self.scope}/container/{name}-1: no longer exists; it was removed outside this plan"

    def lock_held(self) -> bool:
        return self.lock_exists()

    def hold_lock(self) -> LockHandle:
        return self.backend()[0].lock(new_lock_info("0ther5pec", 600))

    def sees_secret(self, name: str, variable: str, value: str) -> bool:
        info = self.api.inspect_container(f"{self.scope}-{name}-1")
        return f"{variable}={value}" in info["Config"]["Env"]

    def written(self) -> str:
        labels = [c.get("Labels") for c in self.containers().values()]
        resolved = resolve_env(FileSources(str(self.spec)), ENV)
        artifacts = "".join(compile_env(resolved, self.spec.name).files.values())
        return "\n".join(self.shown) + json.dumps(labels) + artifacts

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

    # -- what only the Docker backend promises ---------------------------------------------------------------------

    def verify_fresh(self, report: ApplyReport) -> None:
        found = self.containers()
        web2 = found[f"{self.scope}-web-2"]["Labels"]
        assert (web2[dp.LABEL_PROJECT], web2[dp.LABEL_SERVICE], web2[dp.LABEL_NUMBER], web2[dp.LABEL_ONEOFF]) == \
            (self.scope, "web", "2", "False")
        assert len(web2[dp.LABEL_HASH]) == 16
        # what `docker compose -p <project>-<env> ps` asks the Engine for
        ps = self.api.containers(filters={"label": [f"{dp.LABEL_PROJECT}={self.scope}", f"{dp.LABEL_ONEOFF}=False"]})
        assert len(ps) == 3
        # and the real tool lists them as its own
        listed = subprocess.run(["docker", "compose", "-p", self.scope, "ps", "--format", "{{.Service}} {{.Name}}"],
                                capture_output=True, text=True, check=False)
        require(f"`docker compose` is not usable here (.ci/install-compose.sh builds it): {listed.stderr}",
                listed.returncode == 0)
        assert sorted(listed.stdout.split("\n")[:-1]) == [
            f"db {self.scope}-db-1", f"web {self.scope}-web-1", f"web {self.scope}-web-2"]
        # on the project network, a service answers to its name
        ran = self.client.containers.get(f"{self.scope}-db-1").exec_run(
            ["wget", "-q", "-O", "-", f"http://web:{self.port_of('web')}/health"])
        assert (ran.exit_code, ran.output) == (0, b"ok\n")
        info = self.api.inspect_container(f"{self.scope}-web-1")
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
        assert info["HostConfig"]["CapDrop"] == ["ALL"]
        assert info["Config"]["Healthcheck"]["Interval"] == 10**9
        assert info["State"]["Health"]["Status"] == "healthy"

    def verify_replan(self) -> None:
        """Nothing beyond the scenario's checks: planning is four list calls (bench/plan.py measures it)."""

    def verify_changed(self, plan: Plan, what: str) -> None:
        reasons = {a.key.name: (a.kind, a.reason) for a in plan.touched}
        if what == "version":
            assert reasons == {"web-1": ("replace", "image 1 -> 2"), "web-2": ("replace", "image 1 -> 2")}
        else:
            assert reasons == {"db-1": ("replace", "environment.MODE a -> b")}

    def verify_applied_change(self) -> None:
        assert self.containers()[f"{self.scope}-web-1"]["Image"] == IMAGE2
        assert not [n for n in self.containers() if n.endswith(dp.ASIDE_SUFFIX)]  # the old ones are gone

    def verify_pruned(self, name: str) -> None:
        assert self.api.networks(filters={"name": f"{self.scope}_default"})
        # a volume holds data: it outlives the service, as with `docker compose down` without -v
        assert self.api.inspect_volume(f"{self.scope}_{name}-data")

    def verify_rolled_back(self, report: ApplyReport, name: str, before: set[str]) -> None:
        result = report.results[f"compose:{self.scope}/container/{name}-1"]
        assert "Docker health check: unhealthy" in result.health
        assert self.instances(name) == before                     # the very same container, restored
        assert sorted(self.containers()) == [f"{self.scope}-{name}-1"]
        assert [a.kind for a in self.plan().touched] == ["replace"]

    def verify_secret(self, name: str, value: str) -> None:
        ran = self.client.containers.get(f"{self.scope}-{name}-1").exec_run(["cat", "/run/secrets/tok"])
        assert ran.output.decode() == value                        # where the compiled TOKEN_FILE points
