"""The pure half of the Docker Engine backend: desired objects from the Compose document, live objects
from recorded list payloads, and the Engine API payloads that create them.

No I/O here, so every function is tested against payloads recorded from a real daemon. A container's
normalized state is its Compose service (unescaped, as `docker compose` reads it) narrowed to one
replica: its own published ports, the env-var -> secret *references* (never values), and the project
network. That state is hashed into `com.docker.compose.config-hash` and kept whole, as canonical JSON,
in the `hxpc.dev/config` label: the Engine's container list returns labels but not `Config.Env`,
so one list call yields every container's full configuration for a field-level diff without an
inspect per container. A container's configuration cannot change after creation (`docker update`
aside, which hxpc does not track), so the label is faithful; a container without it (e.g. started by
`docker compose up` from the compiled file) is shown as of unknown configuration and replaced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hxpc.compiler.bundle import TARGET_LABEL
from hxpc.compiler.model import Replica, ResolvedStack
from hxpc.compiler.targets.compose import surge_blocker
from hxpc.engine.objects import DesiredObject, Gate, LiveObject, ObjectKey, Rollout, state_hash

TARGET = "compose"
LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_NUMBER = "com.docker.compose.container-number"
LABEL_ONEOFF = "com.docker.compose.oneoff"
LABEL_HASH = "com.docker.compose.config-hash"
LABEL_NETWORK = "com.docker.compose.network"
LABEL_VOLUME = "com.docker.compose.volume"
LABEL_CONFIG = "hxpc.dev/config"
LABEL_WORKLOAD = "hxpc.dev/workload"
LABEL_DEPENDS = "hxpc.dev/depends-on"
LABEL_REPLICA = "hxpc.dev/replica"
LABEL_LOCK = "hxpc.dev/lock"
# a replaced or deleted container waits under this name until its wave passed its health gate
ASIDE_SUFFIX = "-hxpc-old"
UNKNOWN_CONFIG = "unknown: not created by hxpc apply (no hxpc.dev/config label)"
# keys of a Compose service that are not the container's own configuration, or are narrowed per replica
_NOT_CONFIG = frozenset({"x-hxpc", "labels", "depends_on", "ports", "secrets", "deploy"})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|ns|s|m|h)")
_NS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_BYTES = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_RESTART = {"no": {"Name": "no"}, "always": {"Name": "always"},
            "on-failure": {"Name": "on-failure", "MaximumRetryCount": 0},
            "unless-stopped": {"Name": "unless-stopped"}}


@dataclass(frozen=True)
class Probe:
    """The spec's health check of one container, as the gate runs it against the Engine."""

    kind: str                   # http | tcp | exec
    host_port: int | None       # published port the http/tcp check connects to
    path: str
    command: tuple[str, ...]    # exec
    timeout_s: float


@dataclass(frozen=True)
class ContainerData:
    """What creating and probing a container needs beyond its state (`DesiredObject.extra`)."""

    name: str
    service: str
    labels: Mapping[str, str]
    probe: Probe | None
    volumes: Mapping[str, str]   # Compose volume key -> Engine volume name


@dataclass(frozen=True)
class NamedData:
    """The Engine name and labels of a network or volume (`DesiredObject.extra`)."""

    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Names:
    """How hxpc names things on a Docker Engine, as Compose v2 does for project `<project>-<env>`."""

    project: str
    env: str

    @property
    def compose_project(self) -> str:
        return f"{self.project}-{self.env}"

    @property
    def prefix(self) -> str:
        return f"{self.compose_project}-"

    @property
    def network(self) -> str:
        return f"{self.compose_project}_default"

    @property
    def lock(self) -> str:
        return f"hxpc-lock-{self.compose_project}"

    @property
    def owner_labels(self) -> dict[str, str]:
        """hxpc's labels for this project and environment, narrowed to the compose target: a systemd
        docker-runtime unit on the same Engine carries the same owner labels with `hxpc.dev/target=systemd`."""
        return {"app.kubernetes.io/managed-by": "hxpc", "hxpc.dev/project": self.project, "hxpc.dev/env": self.env,
                TARGET_LABEL: TARGET}

    @property
    def ownership(self) -> dict[str, str]:
        """Every label an object this backend owns carries: the owner labels and the Compose project."""
        return {**self.owner_labels, LABEL_PROJECT: self.compose_project}

    def container(self, key_name: str) -> str:
        return self.prefix + key_name

    def key(self, kind: str, name: str) -> ObjectKey:
        return ObjectKey(TARGET, self.compose_project, kind, name)

    def owns(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(labels.get(k) == v for k, v in self.ownership.items())


# -- desired objects ---------------------------------------------------------------------------------------------

def config_hash(state: Mapping[str, Any]) -> str:
    """The container's config hash: over its normalized state, which holds secret names, never values."""
    return state_hash(dict(state))


def replica_ports(specs: Iterable[str], position: int, bind: str | None) -> list[str]:
    """Compose short port syntax narrowed to the service's `position`th container (Compose deals a range
    out in order): `8080-8081:8080` -> `8081:8080` for the second."""
    out = []
    for spec in specs:
        host, _, container = str(spec).rpartition(":")
        first = int(host.split("-")[0])
        ip = f"[{bind}]:" if bind and ":" in bind else f"{bind}:" if bind else ""  # Compose brackets IPv6
        out.append(f"{ip}{first + position}:{container}")
    return out


def container_state(svc: Mapping[str, Any], position: int, bind: str | None) -> dict[str, Any]:
    """One container's configuration in Compose's own field names (the diff shows what compose.yaml says)."""
    state = {k: v for k, v in svc.items() if k not in _NOT_CONFIG}
    if svc.get("ports"):
        state["ports"] = replica_ports(svc["ports"], position, bind)
    secrets = svc.get("x-hxpc", {}).get("secrets") or {}
    if secrets:
        state["secrets"] = dict(sorted(secrets.items()))
    resources = (svc.get("deploy") or {}).get("resources")
    if resources:
        state["resources"] = resources
    return dict(sorted(state.items()))


def desired_objects(doc: Mapping[str, Any], stack: ResolvedStack, names: Names,
                    bind: str | None = None) -> dict[ObjectKey, DesiredObject]:
    """Every network, volume and container the (unescaped) Compose document wants, keyed like `parse_live`."""
    out: dict[ObjectKey, DesiredObject] = {}
    services: Mapping[str, Any] = doc.get("services") or {}
    if services:
        labels = {**names.owner_labels, LABEL_PROJECT: names.compose_project, LABEL_NETWORK: "default"}
        key = names.key("network", "default")
        out[key] = DesiredObject(key, {"driver": "bridge"}, None, replace_on=("*",),
                                 extra=NamedData(names.network, labels))
    volume_names: dict[str, str] = {}
    for vkey, vol in sorted((doc.get("volumes") or {}).items()):
        volume_names[vkey] = vol["name"]
        labels = {**vol.get("labels", {}), LABEL_PROJECT: names.compose_project, LABEL_VOLUME: vkey}
        key = names.key("volume", vkey)
        out[key] = DesiredObject(key, {"driver": "local"}, None, replace_on=("*",),
                                 extra=NamedData(vol["name"], labels))
    for service, svc in sorted(services.items()):
        x = svc["x-hxpc"]
        workload = stack.workloads[x["workload"]]
        # the position among the Compose service's containers, not the spec replica index: a GPU workload
        # split into one service per replica has one container per service, each number 1
        for position, replica in enumerate(x["replicas"]):
            index = int(replica["index"])
            state = container_state(svc, position, bind)
            digest = config_hash(state)
            key_name = f"{service}-{position + 1}"
            labels = {
                **names.owner_labels,
                LABEL_PROJECT: names.compose_project, LABEL_SERVICE: service, LABEL_NUMBER: str(position + 1),
                LABEL_ONEOFF: "False", LABEL_HASH: digest,
                LABEL_CONFIG: json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
                LABEL_WORKLOAD: workload.name, LABEL_REPLICA: str(index),
                LABEL_DEPENDS: ",".join(workload.depends_on),
            }
            probe = workload.probe
            check = None
            if probe is not None:
                host_port = replica["ports"].get(probe.port_name) if probe.port_name else None
                check = Probe(probe.kind, host_port, probe.path or "/", tuple(probe.command or ()),
                              probe.timeout_ms / 1000)
            gate = Gate(float(workload.startup_budget_s),
                        max(0.2, probe.interval_ms / 1000) if probe is not None else 1.0)
            key = names.key("container", key_name)
            placed = Replica(index, None, dict(replica["ports"]), tuple(int(d) for d in replica["devices"]))
            rollout = Rollout((key_name,), workload.max_unavailable, surge_blocker(workload, placed))
            out[key] = DesiredObject(
                key, state, workload.name, replace_on=("*",), gate=gate, rollout=rollout,
                extra=ContainerData(names.container(key_name), service, labels, check, volume_names))
    return out


# -- the Engine API payloads -------------------------------------------------------------------------------------

def duration_ns(text: str | int | float) -> int:
    """Compose durations (`1m30s`, `500ms`, `10s`) as nanoseconds, which the Engine API wants."""
    if isinstance(text, int | float):
        return int(text * 10**9)
    total, pos = 0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += int(float(m.group(1)) * _NS[m.group(2)])
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r}")
    return total


def size_bytes(text: str | int) -> int:
    """Docker's byte units (`64m`, `2g`, `512b`): binary whatever their spelling."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"(\d+)([bkmgt]?)b?", text.strip().lower())
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) * _BYTES[m.group(2) or "b"]


def port_bindings(ports: Iterable[str]) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, str]]]]:
    """`[ip:]host:container[/proto]` -> (ExposedPorts, PortBindings)."""
    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in ports:
        parts = spec.rsplit(":", 2)
        container = parts[-1] if "/" in parts[-1] else f"{parts[-1]}/tcp"
        host_ip = parts[0].strip("[]") if len(parts) == 3 else ""
        exposed[container] = {}
        bindings.setdefault(container, []).append({"HostIp": host_ip, "HostPort": parts[-2]})
    return exposed, bindings


def device_requests(resources: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`deploy.resources.reservations.devices` as the Engine's DeviceRequests (what `--gpus` sends)."""
    out = []
    for dev in (resources.get("reservations") or {}).get("devices") or []:
        request: dict[str, Any] = {"Driver": dev.get("driver", ""), "Capabilities": [list(dev.get("capabilities", []))],
                                   "Options": dict(dev.get("options") or {})}
        if dev.get("device_ids"):
            request["DeviceIDs"] = [str(d) for d in dev["device_ids"]]
            request["Count"] = 0
        else:
            request["Count"] = int(dev.get("count", -1))  # -1: all GPUs, as `--gpus all`
        out.append(request)
    return out


def healthcheck(hc: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"Test": list(hc["test"])}
    for field, api in (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod")):
        if field in hc:
            out[api] = duration_ns(hc[field])
    if "retries" in hc:
        out["Retries"] = int(hc["retries"])
    return out


def container_config(state: Mapping[str, Any], labels: Mapping[str, str], network: str,
                     volume_names: Mapping[str, str], secret_env: Mapping[str, str] | None = None,
                     service: str = "") -> dict[str, Any]:
    """The `POST /containers/create` body for a normalized state; secret values only in `Env`, at apply."""
    env = [f"{k}={v}" for k, v in sorted((state.get("environment") or {}).items())]
    env += [f"{k}={v}" for k, v in sorted((secret_env or {}).items())]
    exposed, bindings = port_bindings(state.get("ports") or [])
    resources = state.get("resources") or {}
    limits = resources.get("limits") or {}
    host: dict[str, Any] = {
        "NetworkMode": network,
        "PortBindings": bindings,
        "RestartPolicy": _RESTART.get(str(state.get("restart", "no")), {"Name": "no"}),
        "CapDrop": list(state.get("cap_drop") or []),
        "CapAdd": list(state.get("cap_add") or []),
        "SecurityOpt": list(state.get("security_opt") or []),
        "Mounts": [_mount(m, volume_names) for m in state.get("volumes") or []],
    }
    if "cpus" in limits:
        host["NanoCpus"] = round(float(limits["cpus"]) * 10**9)
    if "memory" in limits:
        host["Memory"] = size_bytes(limits["memory"])
    if "shm_size" in state:
        host["ShmSize"] = size_bytes(state["shm_size"])
    if state.get("read_only"):
        host["ReadonlyRootfs"] = True
    requests = device_requests(resources)
    if requests:
        host["DeviceRequests"] = requests
    aliases = [service] if service else []
    for alias in ((state.get("networks") or {}).get("default") or {}).get("aliases") or []:
        if alias not in aliases:
            aliases.append(alias)
    config: dict[str, Any] = {
        "Image": state["image"], "Env": env, "Labels": dict(labels), "ExposedPorts": exposed, "HostConfig": host,
        "NetworkingConfig": {"EndpointsConfig": {network: {"Aliases": aliases}}},
    }
    if "user" in state:  # the spec's security.run_as_user (else the image's own USER)
        config["User"] = str(state["user"])
    if "entrypoint" in state:
        config["Entrypoint"] = list(state["entrypoint"])
    if "command" in state:
        config["Cmd"] = list(state["command"])
    if "healthcheck" in state:
        config["Healthcheck"] = healthcheck(state["healthcheck"])
    return config


def _mount(m: Mapping[str, Any], volume_names: Mapping[str, str]) -> dict[str, Any]:
    kind = m.get("type", "volume")
    source = volume_names.get(m["source"], m["source"]) if kind == "volume" else m["source"]
    return {"Type": kind, "Source": source, "Target": m["target"], "ReadOnly": bool(m.get("read_only", False))}


def normalize_image(ref: str) -> str:
    """`busybox` -> `busybox:latest`, `docker.io/library/x:1` -> `x:1`: how the Engine lists RepoTags."""
    if "@" in ref:
        return ref
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


def present_images(images: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Normalized RepoTags and RepoDigests of an images list -> image id."""
    out: dict[str, str] = {}
    for image in images:
        for ref in (image.get("RepoTags") or []) + (image.get("RepoDigests") or []):
            if ref and ref != "<none>:<none>" and ref != "<none>@<none>":
                out[normalize_image(ref)] = str(image.get("Id", ""))
    return out


# -- live objects ------------------------------------------------------------------------------------------------

def _container_name(c: Mapping[str, Any]) -> str:
    names = [str(n).lstrip("/") for n in c.get("Names") or []]
    plain = [n for n in names if "/" not in n]  # legacy links add `/other/alias` names
    return (plain or names or [str(c.get("Id", ""))[:12]])[0]


def recorded_state(labels: Mapping[str, str], image: str) -> dict[str, Any]:
    """The configuration a container was created with, from its labels; the Engine's own `Image` wins
    (it shows the image id when the tag now names another image, which is a change worth a replace)."""
    text = labels.get(LABEL_CONFIG)
    state: dict[str, Any] | None = None
    if text:
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict) and config_hash(loaded) == labels.get(LABEL_HASH):
            state = loaded
    if state is None:
        return {"image": image, "config": UNKNOWN_CONFIG}
    state["image"] = image or state.get("image")
    return state


def parse_live(raw: Mapping[str, Any], names: Names, volumes_wanted: Iterable[str] = ()) -> dict[ObjectKey, LiveObject]:
    """Live objects from `{"containers": [...], "networks": [...], "volumes": [...]}` list payloads.

    Containers named `<project>-<env>-*` are keyed by the rest of their name, owned or not (an unowned one
    with a desired name is a clash); owned ones named otherwise keep their whole name. Only the project
    network and the volumes the spec still names are objects: a volume holds data, so one the spec no
    longer names is left alone, as `docker compose down` without `-v` leaves it."""
    out: dict[ObjectKey, LiveObject] = {}
    seen: set[str] = set()
    for c in raw.get("containers") or []:
        cid = str(c.get("Id", ""))
        if cid in seen:
            continue  # listed by both the label and the name query
        seen.add(cid)
        labels: Mapping[str, str] = c.get("Labels") or {}
        name = _container_name(c)
        owned = names.owns(labels)
        if LABEL_LOCK in labels or (not owned and not name.startswith(names.prefix)):
            continue
        key_name = name[len(names.prefix):] if name.startswith(names.prefix) else name
        key = names.key("container", key_name)
        depends = tuple(d for d in labels.get(LABEL_DEPENDS, "").split(",") if d)
        out[key] = LiveObject(key, recorded_state(labels, str(c.get("Image", ""))), owned,
                              labels.get(LABEL_WORKLOAD) or labels.get(LABEL_SERVICE), depends, version=cid,
                              running=c.get("State") == "running", status=str(c.get("Status") or c.get("State", "")))
    for n in raw.get("networks") or []:
        if n.get("Name") != names.network:
            continue
        key = names.key("network", "default")
        out[key] = LiveObject(key, {"driver": n.get("Driver", "")}, names.owns(n.get("Labels")), None,
                              version=str(n.get("Id", "")), status=str(n.get("Driver", "")))
    wanted = set(volumes_wanted)
    vprefix = f"{names.compose_project}_"
    for v in raw.get("volumes") or []:
        vname = str(v.get("Name", ""))
        vkey = vname[len(vprefix):] if vname.startswith(vprefix) else ""
        if vkey not in wanted:
            continue
        key = names.key("volume", vkey)
        out[key] = LiveObject(key, {"driver": v.get("Driver", "")}, names.owns(v.get("Labels")), None,
                              version=str(v.get("CreatedAt", "")) or None, status=str(v.get("Driver", "")))
    return out


def lock_labels(names: Names, payload: Mapping[str, str]) -> dict[str, str]:
    return {LABEL_LOCK: names.compose_project, **{f"{LABEL_LOCK}.{k}": v for k, v in payload.items()}}


def lock_payload(labels: Mapping[str, str]) -> dict[str, str]:
    prefix = f"{LABEL_LOCK}."
    return {k[len(prefix):]: v for k, v in labels.items() if k.startswith(prefix)}
