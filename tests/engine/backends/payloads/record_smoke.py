"""Re-records `smoke-default.json` from a real Docker Engine: the payload `docker/test_parse.py` plans against.

Run from the repository root, with a Docker Engine reachable (DOCKER_HOST or the local socket) and the test
image built (`.ci/build-test-images.sh`): `python tests/engine/backends/payloads/record_smoke.py`. It applies
`smoke.yaml` (env `default`, ports published on 127.0.0.1: 8080, 8081 and 8090 must be free) through the
engine's plan and apply (one action at a time), then leaves the Engine in the state the parse tests describe: `web-2`
stopped, an owned container without hxpc's config label as `web-1-hxpc-old` (what a killed apply leaves),
an unowned `smoke-default-web-3` (Compose's project label only) and `smoke-default-stray` started, and an
unrelated volume `smoke-default_other`. It writes `DockerBackend.read_raw()` plus the Engine's image list
(narrowed to the spec's images: nothing else on the recording machine matters to the backend), keys sorted,
and removes everything it made however it ends. Ids, timestamps and statuses stay as recorded: no test
depends on their values. It refuses to start if anything of `smoke-default` is already on the Engine.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import docker
import docker.errors

from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import spec_hash
from hxpc.compiler.pipeline import resolve_env
from hxpc.engine import plan_live
from hxpc.engine.apply import ApplyOptions, apply
from hxpc.engine.backends.docker import parse as dp
from hxpc.engine.backends.docker.backend import DockerBackend
from hxpc.sources import FileSources

HERE = Path(__file__).resolve().parent
SPEC = HERE / "smoke.yaml"
OUT = HERE / "smoke-default.json"
ENV = "default"
BIND = "127.0.0.1"
IMAGE = "hxpc-test/busybox:1"
PORTS = (8080, 8081, 8090)                      # what smoke.yaml publishes
OTHER_VOLUME = "smoke-default_other"
# the secret's value goes into the container's environment only, never into what is recorded
ENVIRON = {"SMOKE_TOKEN": "recorded-smoke-token"}


class Recorder:
    """One recording: the backend for smoke.yaml, the objects made outside it, and their removal."""

    def __init__(self, client: docker.DockerClient):
        resolved = resolve_env(FileSources(str(SPEC)), ENV)
        # the same Meta the parse tests build, so the desired state (and its hash labels) agree
        self.meta = Meta(resolved.stack.project, ENV, SPEC.name, spec_hash(resolved))
        self.stack = resolved.stack
        self.backend = DockerBackend(resolved.stack, self.meta, client, bind_address=BIND, environ=ENVIRON)
        self.names = self.backend.names
        self.api: Any = client.api
        self.made: list[str] = []               # containers created by hand, removed even if unlabelled

    # -- what is there ------------------------------------------------------------------------------------------
    def containers(self) -> dict[str, str]:
        """Every container of this project, owned or not, its lock included: id -> name."""
        found = self.api.containers(all=True, filters={"name": f"^/{self.names.prefix}"})
        found += self.api.containers(all=True, filters={"name": f"^/{self.names.lock}$"})
        found += self.api.containers(all=True, filters={"label": [f"{k}={v}" for k, v
                                                                  in self.names.owner_labels.items()]})
        return {c["Id"]: c["Names"][0].lstrip("/") for c in found}

    def networks(self) -> list[str]:
        return [n["Name"] for n in self.api.networks(filters={"name": self.names.network})
                if n["Name"] == self.names.network]

    def volumes(self) -> list[str]:
        found = (self.api.volumes(filters={"name": f"{self.names.compose_project}_"}) or {}).get("Volumes") or []
        return [v["Name"] for v in found if v["Name"].startswith(f"{self.names.compose_project}_")]

    def preflight(self) -> None:
        self.api.inspect_image(IMAGE)           # ImageNotFound: run .ci/build-test-images.sh
        left = sorted(self.containers().values()) + self.networks() + self.volumes()
        if left:
            sys.exit(f"refusing to record: {', '.join(left)} already on the Docker Engine; remove them first")
        for port in PORTS:
            with socket.socket() as s:
                # as docker-proxy binds: a previous run's connections in TIME_WAIT do not make a port taken
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((BIND, port))
                except OSError as exc:
                    sys.exit(f"refusing to record: {BIND}:{port} is taken ({exc.strerror})")

    # -- the procedure ------------------------------------------------------------------------------------------
    def apply(self) -> None:
        plan = plan_live({dp.TARGET: self.backend}, self.stack.waves, project=self.meta.project, env=ENV,
                         spec_hash=self.meta.spec_hash)
        report = apply(plan, {dp.TARGET: self.backend}, env=ENV, spec_hash=self.meta.spec_hash,
                       project=self.meta.project,
                       # one at a time: the Engine lists containers newest first, so the recorded order is stable
                       options=ApplyOptions(parallelism=1, handle_signals=False))
        if report.outcome != "success":
            raise RuntimeError(f"apply of {SPEC.name} did not succeed:\n{report.render()}")

    def create(self, name: str, labels: dict[str, str], *, start: bool) -> None:
        made = self.api.create_container(IMAGE, name=name, labels=labels)
        self.made.append(str(made["Id"]))
        if start:
            self.api.start(made["Id"])

    def disturb(self) -> None:
        """The hand-made changes the parse tests expect, in the order (and so creation times) they were made."""
        # stopped: busybox httpd runs as PID 1 and ignores SIGTERM, so it is killed (Exited (137))
        self.api.stop(self.names.container("web-2"), timeout=1)
        self.create(self.names.container("web-1" + dp.ASIDE_SUFFIX),
                    {**self.names.owner_labels, dp.LABEL_PROJECT: self.names.compose_project,
                     dp.LABEL_SERVICE: "web", dp.LABEL_WORKLOAD: "web"}, start=False)
        self.create(self.names.container("web-3"), {dp.LABEL_PROJECT: self.names.compose_project}, start=True)
        self.create(self.names.container("stray"), {}, start=True)
        self.api.create_volume(OTHER_VOLUME)

    def record(self) -> dict[str, Any]:
        raw = self.backend.read_raw()
        wanted = {dp.normalize_image(str(d.state["image"])) for d in self.backend.desired().values()
                  if "image" in d.state}
        raw["images"] = [i for i in self.api.images()
                         if wanted & {dp.normalize_image(t) for t in i.get("RepoTags") or []}]
        return raw

    def cleanup(self) -> None:
        """Remove all of it; one failure does not stop the rest (nor hide why the recording failed)."""
        failed = []
        steps = [(self.api.remove_container, cid, {"force": True}) for cid in set(self.made) | set(self.containers())]
        steps += [(self.api.remove_network, name, {}) for name in self.networks()]
        steps += [(self.api.remove_volume, name, {"force": True}) for name in self.volumes()]
        for fn, what, kwargs in steps:      # containers first: a network or volume in use cannot go
            try:
                fn(what, **kwargs)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                failed.append(f"{what}: {exc}")
        if failed:
            print("cleanup left behind:\n  " + "\n  ".join(failed), file=sys.stderr)


def main() -> None:
    client = docker.from_env()
    recorder = Recorder(client)
    recorder.preflight()
    try:
        recorder.apply()
        recorder.disturb()
        raw = recorder.record()
    finally:
        recorder.cleanup()
        client.close()
    OUT.write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}: "
          f"{len(raw['containers'])} container entries, {len(raw['networks'])} network(s), "
          f"{len(raw['volumes'])} volume(s), {len(raw['images'])} image(s)")


if __name__ == "__main__":
    main()
