"""The Docker Engine backend of the compose target: read, change and probe a project's containers.

`DockerBackend(resolved, meta)` wants exactly what `compose_document` compiles (see `parse` for
the pure half: desired state, parsing of list payloads, Engine API bodies). It talks to the Engine
through the `docker` SDK's low-level client (`docker.from_env()`, so `DOCKER_HOST`, `DOCKER_TLS_VERIFY`
and `DOCKER_CERT_PATH` work as with the CLI). Planning reads with four list calls whatever the number of
containers: containers by hxpc's ownership labels, containers by the project's name prefix (to find
unowned ones in the way), the project network, and the project's volumes. Decisions:

- Containers are created as Compose v2 creates them (names `<project>-<env>-<service>-<n>`, Compose's
  project/service/container-number/oneoff/config-hash labels, network `<project>-<env>_default` with the
  service name as alias), so `docker compose -p <project>-<env> ps` lists them. The config hash is hxpc's
  own (over the normalized state), so `docker compose up` on the compiled file would recreate them once.
- A container is immutable: any change replaces it. The old one is stopped and renamed
  `<name>-hxpc-old` (freeing its name and host ports), the new one created and started; rollback removes
  the new one, renames the old one back and starts it; `end_wave`, called once the wave passed its
  health gate (or was rolled back), removes the old ones that were not restored. A delete is a
  stop-and-rename committed the same way, so it can be undone.
- Each container is one replica of its workload (`Rollout`), so the engine rolls a service's containers
  a few at a time (hxpc.engine.rolling). One that publishes a host port or holds GPUs is replaced as
  above (stop-first); any other starts beside the old one (start-first): the old one is renamed aside
  while it runs, keeping its network alias, so both answer until the new one passed its gate and `retire`
  stops the old one, which then waits for `end_wave` like any replaced container.
- Secrets are resolved in `prepare` (before anything is touched; every missing one is named) from the
  environment variable or file the spec names, and reach the container only as the env var the spec
  maps them to (visible in `docker inspect`'s `Config.Env`, as with `docker run -e`) and as the file
  `/run/secrets/<secret>` the compiled `<VAR>_FILE` points to. Labels, the config hash, plans and logs
  carry only the secret's name, so changing a secret's value alone does not recreate a container:
  remove it (or change anything else) to roll a new value out.
- Images are checked in `prepare` with one images list call; an absent image is pulled, and one that
  cannot be pulled fails the apply before anything is touched.
- Volumes hold data: one the spec no longer names is left in place (like `docker compose down` without
  `-v`) and never planned for deletion.
- Ports are published on every interface, as Compose does, unless `bind_address` narrows them (the tests
  bind 127.0.0.1). The health gate probes `<engine host>:<host port>` (127.0.0.1 for a local socket).
- The lock is a container named `hxpc-lock-<project>-<env>`, created and never started: creating a
  container under a taken name fails with 409 inside the daemon's name reservation, so it is atomic,
  and it is removed by id, so a holder can never remove a lock that changed hands. A volume would need
  no image, but creating a volume under an existing name silently returns the existing one and removal
  goes by name only; networks are not unique by name at all. The container needs an image, never run:
  one of the stack's own images when present, else any local image (one `images` call). Labels cannot
  change, so a renewal is a file copied into the never-started container (`RENEWED_FILE`), read back
  only when the lock is contended.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import docker
import docker.errors
import requests.exceptions

from hxpc.compiler.bundle import Meta
from hxpc.compiler.model import ResolvedStack
from hxpc.compiler.targets.compose import compose_document, unescape_document
from hxpc.engine.backend import ActionContext, HealthResult, TransientError, Undo
from hxpc.engine.backends.docker import parse as dp
from hxpc.engine.lock import LockInfo, PrimitiveLock, acquire
from hxpc.engine.objects import DesiredObject, LiveState, ObjectKey
from hxpc.engine.plan import Action
from hxpc.engine.rolling import Step
from hxpc.engine.secrets import read_secrets
from hxpc.errors import BackendError

T = TypeVar("T")
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# 500s that are the caller's fault: retrying cannot help
_PERMANENT_500 = ("port is already allocated", "address already in use", "no such image", "invalid reference")
STOP_TIMEOUT_S = 10


def translate(exc: BaseException, what: str) -> BackendError:
    """A docker SDK or transport failure as TransientError (may pass on retry) or BackendError (will not)."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, docker.errors.APIError):
        message = str(exc.explanation or exc)
        status = exc.status_code
        if status in _TRANSIENT_STATUS and not any(p in message.lower() for p in _PERMANENT_500):
            return TransientError(f"{what}: Docker Engine answered HTTP {status}: {message}")
        return BackendError(f"{what}: {message}" + (f" (HTTP {status})" if status else ""))
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout |
                  requests.exceptions.ChunkedEncodingError | ConnectionError | TimeoutError):
        return TransientError(f"{what}: cannot reach the Docker Engine: {type(exc).__name__}: {exc}")
    return BackendError(f"{what}: {exc}")


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, docker.errors.APIError) and exc.status_code == 404


def _conflict(exc: BaseException) -> bool:
    return isinstance(exc, docker.errors.APIError) and exc.status_code == 409


class _Gone(Exception):
    """The container an action was planned against no longer exists."""


# What rollback needs (`Undo.data`), one class per kind of change.
@dataclass(frozen=True)
class Aside:
    """A stopped container renamed `<name>-hxpc-old` by a replace or a delete, and whether it was running."""

    old: str
    name: str
    was_running: bool


@dataclass(frozen=True)
class RemoveNew:
    """Undo a create: remove the new container."""

    new: str


@dataclass(frozen=True)
class BringBack:
    """Undo a replace (`new` set) or a delete: remove the new container, rename the old one back, start it."""

    aside: Aside
    new: str | None = None


@dataclass(frozen=True)
class StopAgain:
    """Undo a restart of a stopped container."""

    id: str


@dataclass(frozen=True)
class RemoveNetwork:
    id: str
    name: str


@dataclass(frozen=True)
class RemoveVolume:
    name: str


def _container(want: DesiredObject) -> dp.ContainerData:
    assert isinstance(want.extra, dp.ContainerData), want.key
    return want.extra


def _named(want: DesiredObject) -> dp.NamedData:
    assert isinstance(want.extra, dp.NamedData), want.key
    return want.extra


RENEWED_FILE = "hxpc-lock-renewed.json"


def _same_lock(held: Mapping[str, str], payload: Mapping[str, str]) -> bool:
    """Whether `held` is the lock `payload` describes: by lock id (a renewal changes the rest), else whole."""
    if payload.get("lock_id"):
        return held.get("lock_id") == payload.get("lock_id")
    return dict(held) == dict(payload)


class DockerLock:
    """The lock primitive: a never-started container named `hxpc-lock-<project>-<env>` (see the module)."""

    def __init__(self, backend: DockerBackend):
        self.backend = backend
        self.names = backend.names

    def try_create(self, payload: Mapping[str, str]) -> bool:
        config = {"Image": self.backend.lock_image(), "Entrypoint": ["/hxpc-lock-is-never-started"], "Cmd": [],
                  "Labels": dp.lock_labels(self.names, payload), "NetworkDisabled": True,
                  "HostConfig": {"NetworkMode": "none"}}
        try:
            self.backend.call(f"creating lock {self.names.lock}", self.backend.api.create_container_from_config,
                              config, self.names.lock, raw=True)
        except docker.errors.APIError as exc:
            if _conflict(exc):
                return False
            raise translate(exc, f"creating lock {self.names.lock}") from exc
        return True

    def _current(self) -> tuple[str, dict[str, str]] | None:
        found = self.backend.call("reading the lock", self.backend.api.containers, all=True,
                                  filters={"name": f"^/{self.names.lock}$"})
        for c in found:
            if f"/{self.names.lock}" in (c.get("Names") or []):
                return str(c["Id"]), dp.lock_payload(c.get("Labels") or {})
        return None

    def read(self) -> Mapping[str, str] | None:
        current = self._current()
        if current is None:
            return None
        cid, payload = current
        try:
            stream, _ = self.backend.api.get_archive(cid, f"/{RENEWED_FILE}")
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.extractfile(RENEWED_FILE)
                renewed = json.loads(member.read()) if member is not None else {}
            ours = isinstance(renewed, dict) and renewed.get("lock_id") == payload.get("lock_id")
            if ours and renewed.get("renewed"):
                payload = {**payload, "renewed": str(renewed["renewed"])}
        except (docker.errors.APIError, tarfile.TarError, ValueError, KeyError):
            pass  # never renewed (404), or removed meanwhile: the labels are the lock
        except (requests.exceptions.RequestException, OSError) as exc:
            raise translate(exc, "reading the lock") from exc
        return payload

    def renew(self, payload: Mapping[str, str]) -> bool:
        current = self._current()
        if current is None or not _same_lock(current[1], payload):
            return False
        data = json.dumps({"lock_id": payload.get("lock_id", ""), "renewed": payload.get("renewed", "")}).encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            entry = tarfile.TarInfo(RENEWED_FILE)
            entry.size, entry.mode = len(data), 0o444
            tar.addfile(entry, io.BytesIO(data))
        self.backend.call("renewing the lock", self.backend.api.put_archive, current[0], "/", buf.getvalue())
        return True

    def remove(self, payload: Mapping[str, str]) -> None:
        current = self._current()
        if current is None or not _same_lock(current[1], payload):
            return  # gone, or someone else's by now
        try:
            self.backend.call("removing the lock", self.backend.api.remove_container, current[0], force=True, raw=True)
        except docker.errors.APIError as exc:
            if not _not_found(exc):
                raise translate(exc, "removing the lock") from exc


class DockerBackend:
    """The compose target on a Docker Engine. `client` defaults to `docker.from_env()`, made on first use;
    `bind_address` publishes ports on one address only (None: every interface, as Compose does)."""

    target = dp.TARGET

    def __init__(self, resolved: ResolvedStack, meta: Meta, client: docker.DockerClient | None = None, *,
                 bind_address: str | None = None, environ: Mapping[str, str] | None = None):
        self.stack = resolved
        self.meta = meta
        self.names = dp.Names(meta.project, meta.env)
        self.bind_address = bind_address
        self._client = client
        self._environ = environ if environ is not None else os.environ
        self._desired: dict[ObjectKey, DesiredObject] | None = None
        self._secrets: dict[str, str] = {}
        self._uncommitted: dict[ObjectKey, Undo] = {}
        self._guard = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------------------------
    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env()
            except docker.errors.DockerException as exc:
                raise BackendError(f"cannot reach the Docker Engine (DOCKER_HOST or the local socket): {exc}") from exc
        return self._client

    @property
    def api(self) -> Any:
        return self.client.api

    def call(self, what: str, fn: Callable[..., T], *args: Any, raw: bool = False, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)`, its failures translated; `raw` lets APIError through for the caller to judge."""
        try:
            return fn(*args, **kwargs)
        except docker.errors.APIError as exc:
            if raw:
                raise
            raise translate(exc, what) from exc
        except (requests.exceptions.RequestException, OSError, docker.errors.DockerException) as exc:
            raise translate(exc, what) from exc

    @property
    def probe_host(self) -> str:
        """Where published ports answer: the Engine's host for tcp://, this machine for a local socket."""
        if self.bind_address and self.bind_address not in ("0.0.0.0", "::"):
            return self.bind_address
        url = urlparse(str(getattr(self.api, "base_url", "")))
        host = url.hostname or "localhost"
        return "127.0.0.1" if url.scheme.startswith("http+") or host == "localhost" else host

    # -- the Backend protocol ---------------------------------------------------------------------------------
    def desired(self) -> dict[ObjectKey, DesiredObject]:
        if self._desired is None:
            doc = unescape_document(compose_document(self.stack, self.meta))
            self._desired = dp.desired_objects(doc, self.stack, self.names, self.bind_address)
        return self._desired

    def read_raw(self, keys: Collection[ObjectKey] | None = None) -> dict[str, Any]:
        kinds = {k.kind for k in keys} if keys is not None else {"container", "network", "volume"}
        raw: dict[str, Any] = {"containers": [], "networks": [], "volumes": []}
        if "container" in kinds:
            owned = [f"{k}={v}" for k, v in self.names.ownership.items()]
            raw["containers"] = (
                self.call("listing containers", self.api.containers, all=True, filters={"label": owned})
                + self.call("listing containers", self.api.containers, all=True,
                            filters={"name": f"^/{self.names.prefix}"}))
        if "network" in kinds:
            raw["networks"] = self.call("listing networks", self.api.networks, filters={"name": self.names.network})
        if "volume" in kinds:
            found = self.call("listing volumes", self.api.volumes, filters={"name": f"{self.names.compose_project}_"})
            raw["volumes"] = (found or {}).get("Volumes") or []
        return raw

    def parse(self, raw: Mapping[str, Any]) -> LiveState:
        wanted = [k.name for k in self.desired() if k.kind == "volume"]
        return dp.parse_live(raw, self.names, wanted)

    def lock(self, info: LockInfo) -> PrimitiveLock:
        return acquire(DockerLock(self), info, f"{self.names.compose_project} on the Docker Engine")

    def lock_primitives(self) -> dict[str, DockerLock]:
        return {f"{self.names.compose_project} on the Docker Engine": DockerLock(self)}

    def prepare(self, actions: Sequence[Action]) -> None:
        """Before anything is touched: every secret the changed containers need, and their images."""
        wanted = self.desired()
        states = [wanted[a.key] for a in actions
                  if a.key.kind == "container" and a.kind in ("create", "replace") and a.key in wanted]
        self.resolve_secrets(sorted({s for d in states for s in (d.state.get("secrets") or {}).values()}))
        self.ensure_images(sorted({str(d.state["image"]) for d in states}))

    def apply_action(self, action: Action, ctx: ActionContext) -> Undo | None:
        kind = action.key.kind
        if kind == "container":
            undo = self._container_action(action, ctx)
        elif kind == "network":
            undo = self._network_action(action, ctx)
        else:
            undo = self._volume_action(action, ctx)
        if undo is not None:
            with self._guard:
                self._uncommitted[action.key] = undo
        return undo

    def rollback(self, undo: Undo) -> None:
        with self._guard:
            # forgotten before trying: a rollback that fails keeps the previous container for a human
            self._uncommitted.pop(undo.key, None)
        match undo.data:
            case RemoveNew(new=new):
                self._remove_container(new, f"removing new {undo.key}")
            case BringBack(aside=aside, new=new):
                if new is not None:
                    self._remove_container(new, f"removing new {undo.key}")
                self._restore(aside)
            case StopAgain(id=cid):
                self.call(f"stopping {undo.key}", self.api.stop, cid, timeout=STOP_TIMEOUT_S)
            case RemoveNetwork(id=nid, name=name):
                self._ignore_missing(f"removing network {name}", self.api.remove_network, nid)
            case RemoveVolume(name=name):
                self._ignore_missing(f"removing volume {name}", self.api.remove_volume, name)
            case other:
                raise TypeError(f"no rollback for {other!r}")

    # -- rolling (hxpc.engine.rolling.Rolling) -----------------------------------------------------------------
    def roll(self, action: Action, ctx: ActionContext, step: Step) -> Undo | None:
        """Replace this container (one replica): stop-first as any replace, or start-first beside the old one."""
        live = ctx.live
        if not step.start_first or action.key.kind != "container" or live is None or live.version is None:
            return self.apply_action(action, ctx)
        want = ctx.desired or self.desired()[action.key]
        name = _container(want).name
        try:
            old = self._set_aside(live.version, name, bool(live.running), str(action.key), stop=False)
        except _Gone:
            return self.apply_action(action, ctx)
        try:
            new = self._create(want)
        except BaseException:
            self._restore(old)  # this step failed: the executor will not roll it back, so undo it here
            raise
        undo = Undo(action.key, f"remove the new {name}, rename the previous one back and start it",
                    BringBack(old, new))
        with self._guard:
            self._uncommitted[action.key] = undo
        return undo

    def retire(self, undo: Undo) -> None:
        """The new container passed its gate: stop the old one it started beside (removed at `end_wave`)."""
        if isinstance(undo.data, BringBack):
            self._ignore_missing(f"stopping the previous {undo.key}", self.api.stop, undo.data.aside.old,
                                 timeout=STOP_TIMEOUT_S)

    def replica_health(self, key: ObjectKey, replicas: Sequence[str], deadline: float) -> HealthResult:
        return self.health(key, deadline)  # a container is one replica

    def restored_health(self, undo: Undo, deadline: float) -> HealthResult:
        """The container a rollback brought back, by its own Docker health check (the previous version's,
        baked into it), else by running: the desired probe may be the one that failed."""
        if not isinstance(undo.data, BringBack) or not undo.data.aside.was_running:
            return HealthResult(True, "nothing brought back to wait for")
        info = self._inspect(undo.data.aside.old, undo.data.aside.name)
        if isinstance(info, HealthResult):
            return info
        state = info.get("State") or {}
        if not state.get("Running"):
            return _not_running(state, str(((info.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name")))
        status = (state.get("Health") or {}).get("Status")
        return HealthResult(status in (None, "healthy"), f"Docker: {status or 'running'}")

    def _inspect(self, ref: str, name: str) -> dict[str, Any] | HealthResult:
        """The container's inspect payload, or the unhealthy round its absence is."""
        try:
            info: dict[str, Any] = self.call(f"inspecting {name}", self.api.inspect_container, ref, raw=True)
        except docker.errors.APIError as exc:
            if _not_found(exc):
                return HealthResult(False, f"container {name} does not exist", final=True)
            raise translate(exc, f"inspecting {name}") from exc
        return info

    def begin_wave(self, actions: Sequence[Action]) -> None:
        """Nothing to batch: each action is its own API calls."""

    def end_wave(self, actions: Sequence[Action]) -> None:
        """The wave is over; what it did and was not rolled back stays, so the containers set aside by its
        replaces and deletes go for good (the next plan would prune any left by a failure here)."""
        with self._guard:
            done = [self._uncommitted.pop(a.key) for a in actions if a.key in self._uncommitted]
        failed = []
        for undo in done:
            if isinstance(undo.data, BringBack):
                try:
                    self._remove_container(undo.data.aside.old, f"removing the previous {undo.key}")
                except BackendError as exc:
                    failed.append(str(exc))
        if failed:
            raise BackendError("; ".join(failed))

    def health(self, key: ObjectKey, deadline: float) -> HealthResult:
        want = self.desired().get(key)
        if key.kind != "container" or want is None:
            return HealthResult(True, "")
        info = self._inspect(_container(want).name, _container(want).name)
        if isinstance(info, HealthResult):
            return info
        state = info.get("State") or {}
        if not state.get("Running"):
            return _not_running(state, str(want.state.get("restart", "no")))
        docker_health = (state.get("Health") or {}).get("Status")
        if docker_health == "unhealthy":
            log = (state.get("Health") or {}).get("Log") or [{}]
            said = str(log[-1].get("Output", "")).strip().splitlines()
            return HealthResult(False, "Docker health check: unhealthy" + (f" ({said[-1][:200]})" if said else ""),
                                final=True)
        probe = _container(want).probe
        ok, detail = self._probe(info, probe, deadline) if probe else (True, "running")
        if docker_health and docker_health != "healthy":
            return HealthResult(False, f"Docker health check: {docker_health}; {detail}")
        return HealthResult(ok, detail if not docker_health else f"Docker: {docker_health}; {detail}")

    # -- preflight --------------------------------------------------------------------------------------------
    def resolve_secrets(self, names: Sequence[str]) -> None:
        found, problems = read_secrets([n for n in names if n not in self._secrets], self.stack.spec.secrets,
                                       self._environ)
        self._secrets.update(found)
        if problems:
            raise BackendError("missing secrets; nothing was changed:\n" + "\n".join(f"  {p}" for p in problems))

    def ensure_images(self, images: Sequence[str]) -> None:
        if not images:
            return
        present = dp.present_images(self.call("listing images", self.api.images))
        problems = []
        for image in images:
            if dp.normalize_image(image) in present:
                continue
            error = self._pull(image)
            if error:
                problems.append(f"image {image} is not on the Docker Engine and cannot be pulled: {error}")
        if problems:
            raise BackendError("missing images; nothing was changed:\n" + "\n".join(f"  {p}" for p in problems))

    def _pull(self, image: str) -> str:
        repo, tag = image, None
        if "@" not in image and ":" in image.rsplit("/", 1)[-1]:
            repo, tag = image.rsplit(":", 1)
        try:
            for line in self.api.pull(repo, tag=tag, stream=True, decode=True):
                if isinstance(line, dict) and line.get("error"):
                    return str(line["error"])
        except docker.errors.APIError as exc:
            return str(exc.explanation or exc)
        except (requests.exceptions.RequestException, OSError) as exc:
            return str(exc)
        return ""

    def lock_image(self) -> str:
        """An image id for the never-started lock container: the stack's own first, else any local one."""
        present = dp.present_images(self.call("listing images", self.api.images))
        for want in sorted({str(d.state["image"]) for d in self.desired().values() if "image" in d.state}):
            if dp.normalize_image(want) in present:
                return present[dp.normalize_image(want)]
        if present:
            return sorted(present.values())[0]
        raise BackendError("the apply lock is a never-started container and needs some local image; "
                           "none is present: `docker pull` one of the stack's images first")

    # -- containers -------------------------------------------------------------------------------------------
    def _container_action(self, action: Action, ctx: ActionContext) -> Undo | None:
        key = action.key
        if action.kind == "delete":
            live = ctx.live
            if live is None or live.version is None:
                return None  # already gone: nothing to do, nothing to undo
            name = self.names.container(key.name)
            if name.endswith(dp.ASIDE_SUFFIX):  # left by an apply that died: nothing to restore it for
                self._remove_container(live.version, f"removing {key}")
                return None
            try:
                aside = self._set_aside(live.version, name, bool(live.running), str(key))
            except _Gone:
                return None  # removed since it was read (e.g. by a replace clearing a stale set-aside one)
            return Undo(key, f"rename {name}{dp.ASIDE_SUFFIX} back and start it", BringBack(aside))
        want = ctx.desired or self.desired()[key]
        name = _container(want).name
        if action.kind == "restart":
            assert ctx.live is not None and ctx.live.version is not None
            self.call(f"starting {name}", self.api.start, ctx.live.version)
            return Undo(key, f"stop {name} again", StopAgain(ctx.live.version))
        if action.kind == "create" or ctx.live is None or ctx.live.version is None:
            return Undo(key, f"remove the new {name}", RemoveNew(self._create(want)))
        # replace (and update, which containers never need: any change replaces them)
        try:
            old = self._set_aside(ctx.live.version, name, bool(ctx.live.running), str(key))
        except _Gone:
            return Undo(key, f"remove the new {name}", RemoveNew(self._create(want)))
        try:
            new = self._create(want)
        except BaseException:
            self._restore(old)  # this action failed: the executor will not roll it back, so undo it here
            raise
        return Undo(key, f"remove the new {name}, rename the previous one back and start it", BringBack(old, new))

    def _create(self, want: DesiredObject) -> str:
        data = _container(want)
        name = data.name
        secret_refs: Mapping[str, str] = want.state.get("secrets") or {}
        self.resolve_secrets(sorted(set(secret_refs.values())))  # a no-op after prepare
        env = {var: self._secrets[secret] for var, secret in secret_refs.items()}
        config = dp.container_config(want.state, data.labels, self.names.network, data.volumes, env, data.service)
        try:
            cid = str(self.call(f"creating {name}", self.api.create_container_from_config, config, name,
                                raw=True)["Id"])
        except docker.errors.APIError as exc:
            if not _conflict(exc):
                raise translate(exc, f"creating {name}") from exc
            cid = self._adopt(name, want)  # a retried create whose first attempt went through
        try:
            if secret_refs:
                self._put_secret_files(cid, {s: self._secrets[s] for s in set(secret_refs.values())}, name)
            self.call(f"starting {name}", self.api.start, cid)
        except BaseException:
            self._remove_container(cid, f"removing {name} after a failed start")
            raise
        return cid

    def _adopt(self, name: str, want: DesiredObject) -> str:
        info = self.call(f"inspecting {name}", self.api.inspect_container, name)
        labels = (info.get("Config") or {}).get("Labels") or {}
        if not self.names.owns(labels) or labels.get(dp.LABEL_HASH) != _container(want).labels[dp.LABEL_HASH]:
            raise BackendError(f"creating {name}: a container of that name already exists and is not the one "
                               "this plan creates")
        return str(info["Id"])

    def _put_secret_files(self, cid: str, files: Mapping[str, str], name: str) -> None:
        """`/run/secrets/<secret>`, where the compiled `<VAR>_FILE` points, as Compose itself provides it."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for secret, value in sorted(files.items()):
                data = value.encode()
                entry = tarfile.TarInfo(f"run/secrets/{secret}")
                entry.size, entry.mode, entry.mtime = len(data), 0o444, 0
                tar.addfile(entry, io.BytesIO(data))
        self.call(f"writing secret files into {name}", self.api.put_archive, cid, "/", buf.getvalue())

    def _set_aside(self, cid: str, name: str, running: bool, what: str, stop: bool = True) -> Aside:
        """Stop the container (unless `stop` is false: start-first) and rename it out of the way; what
        `_restore` needs to bring it back."""
        aside = name + dp.ASIDE_SUFFIX
        if stop:
            try:
                self.call(f"stopping {what}", self.api.stop, cid, timeout=STOP_TIMEOUT_S, raw=True)
            except docker.errors.APIError as exc:
                if _not_found(exc):
                    raise _Gone(what) from exc
                raise translate(exc, f"stopping {what}") from exc
        try:
            self.call(f"renaming {what}", self.api.rename, cid, aside, raw=True)
        except docker.errors.APIError as exc:
            if _not_found(exc):
                raise _Gone(what) from exc
            if not _conflict(exc):
                raise translate(exc, f"renaming {what}") from exc
            self._clear_aside(aside, cid, what)
            self.call(f"renaming {what}", self.api.rename, cid, aside)
        return Aside(cid, name, running)

    def _clear_aside(self, aside: str, cid: str, what: str) -> None:
        """A previous apply died holding `aside` (or a retry already renamed it): remove it if ours."""
        info = self.call(f"inspecting {aside}", self.api.inspect_container, aside)
        if info["Id"] == cid:
            return
        if not self.names.owns((info.get("Config") or {}).get("Labels")):
            raise BackendError(f"renaming {what}: {aside} exists and is not hxpc's; remove it by hand")
        self._remove_container(str(info["Id"]), f"removing the stale {aside}")

    def _restore(self, aside: Aside) -> None:
        old, name = aside.old, aside.name
        info = self.call(f"inspecting {name}", self.api.inspect_container, old)
        if str(info.get("Name", "")).lstrip("/") != name:
            self.call(f"renaming {name} back", self.api.rename, old, name)
        if aside.was_running:
            self.call(f"starting {name}", self.api.start, old)

    def _remove_container(self, cid: str, what: str) -> None:
        self._ignore_missing(what, self.api.remove_container, cid, force=True)

    def _ignore_missing(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            self.call(what, fn, *args, raw=True, **kwargs)
        except docker.errors.APIError as exc:
            if not _not_found(exc):
                raise translate(exc, what) from exc

    # -- networks and volumes ---------------------------------------------------------------------------------
    def _network_action(self, action: Action, ctx: ActionContext) -> Undo | None:
        name = self.names.network
        if action.kind == "create":
            want = ctx.desired or self.desired()[action.key]
            made = self.call(f"creating network {name}", self.api.create_network, name, driver=want.state["driver"],
                             labels=dict(_named(want).labels), check_duplicate=True)
            return Undo(action.key, f"remove network {name}", RemoveNetwork(str(made["Id"]), name))
        if action.kind == "delete":
            if ctx.live is not None and ctx.live.version:
                self._ignore_missing(f"removing network {name}", self.api.remove_network, ctx.live.version)
            return None
        raise BackendError(f"network {name} exists with driver {ctx.live.state.get('driver') if ctx.live else '?'};"
                           " hxpc does not replace a network containers may use: remove it by hand")

    def _volume_action(self, action: Action, ctx: ActionContext) -> Undo | None:
        want = ctx.desired or self.desired().get(action.key)
        if action.kind == "create" and want is not None:
            name = _named(want).name
            self.call(f"creating volume {name}", self.api.create_volume, name, driver=want.state["driver"],
                      labels=dict(_named(want).labels))
            return Undo(action.key, f"remove volume {name}", RemoveVolume(name))
        raise BackendError(f"volume {action.key.name} would have to be {action.kind}d, which loses its data; "
                           "hxpc never does that: remove it by hand")

    # -- health -----------------------------------------------------------------------------------------------
    def _probe(self, info: Mapping[str, Any], probe: dp.Probe, deadline: float) -> tuple[bool, str]:
        timeout = max(0.2, min(probe.timeout_s, deadline - time.monotonic()))
        kind = probe.kind
        if kind == "exec":
            return self._probe_exec(str(info["Id"]), list(probe.command))
        port = probe.host_port
        if port is None:
            return True, "no published port to probe"
        host = self.probe_host
        if kind == "tcp":
            try:
                socket.create_connection((host, int(port)), timeout=timeout).close()
            except OSError as exc:
                return False, f"tcp {host}:{port}: {exc.strerror or exc}"
            return True, f"tcp {host}:{port} accepts connections"
        path = probe.path or "/"
        where = f"GET http://{host}:{port}{path}"
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            conn.request("GET", path, headers={"User-Agent": "hxpc-health"})
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException) as exc:
            return False, f"{where}: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}"
        finally:
            conn.close()
        return 200 <= status < 400, f"{where}: HTTP {status}"

    def _probe_exec(self, cid: str, command: list[str]) -> tuple[bool, str]:
        made = self.call("exec health check", self.api.exec_create, cid, command)
        output = self.call("exec health check", self.api.exec_start, made["Id"])
        code = self.call("exec health check", self.api.exec_inspect, made["Id"]).get("ExitCode")
        text = (output or b"").decode(errors="replace").strip().splitlines()
        tail = f" ({text[-1][:200]})" if text else ""
        return code == 0, f"`{' '.join(command)}` exited {code}{tail}"


def _not_running(state: Mapping[str, Any], restart: str) -> HealthResult:
    code = state.get("ExitCode")
    if state.get("Restarting"):
        return HealthResult(False, f"restarting (last exit code {code})")
    status = str(state.get("Status", "not running"))
    # Docker brings it back only under these policies: otherwise waiting longer cannot help
    comes_back = restart in ("always", "unless-stopped") or (restart == "on-failure" and code not in (0, None))
    error = str(state.get("Error") or "")
    detail = f"{status} (exit code {code})" + (f": {error}" if error else "")
    return HealthResult(False, detail, final=not comes_back and status in ("exited", "dead", "created"))


__all__ = ["DockerBackend", "DockerLock", "translate"]
