"""The Compose target: one `compose.yaml` per environment, and the document it holds as data.

`compose_document(stack, meta)` builds the Compose Specification document
(project `<project>-<env>`, one service per spec service or model, named
volumes, file/environment secrets) and `emit` writes it with hxpc's header.
The Docker apply backend creates containers from exactly this document, so
each service also carries what Compose itself has no field for under the
`x-hxpc` extension key: the workload it belongs to, the env-var -> secret
mapping to inject at apply time, and every replica's host ports and GPU
devices. Decisions the spec leaves open, each taken to keep the file correct
when run by `docker compose up` as well as by `hxpc apply`:

- GPUs: with `targets.compose.host`, replicas get the placement's device ids.
  Compose applies one `device_ids` list to every replica of a service, so a
  GPU workload with replicas > 1 is split into one service per replica
  (`<name>-<i>`, `deploy.replicas: 1`, its own devices and host ports), each
  answering to the spec name through a network alias and all of them awaited
  by dependents. Without a host, `count: <gpus>` (Docker hands out GPUs
  0..count-1, so workloads may share GPUs: name a host to pin them).
  `CUDA_VISIBLE_DEVICES` is not set: the container only sees its devices,
  renumbered from 0, so host indices would point at GPUs it does not have.
- Secrets: Compose can only mount them as files (`/run/secrets/<secret>`),
  so a service gets `<VAR>_FILE=/run/secrets/<secret>` (the convention of the
  official postgres/mysql/... images; `HF_TOKEN` gets `HF_TOKEN_PATH`, which
  huggingface_hub reads) unless its `env` sets that variable itself, and
  `x-hxpc.secrets` records `VAR: secret` for apply to inject the value into
  `VAR` itself. Values never appear; top-level secrets name only their source.
- Health checks: `exec` runs as `CMD`. A model's HTTP check uses the vLLM
  image's python3. Other http/tcp checks cannot assume a tool in the image, so
  they are `CMD-SHELL` scripts from `hxpc.compiler.probes` (the systemd health
  gate runs the same ones), which use the first tool they find; an image
  without `/bin/sh` needs an `exec` check.
- Volumes are named `<name>-<volume>` (Docker volume `<project>-<env>_<key>`).
  Docker's local driver has no size limit, so `size` is kept as the volume's
  `hxpc.dev/size` label (a capacity note, not a quota) rather than refused,
  which would make every Kubernetes-sized spec uncompilable for compose.
  Replicas of one service share its volumes, as on systemd.
- Models get `shm_size` (NCCL and vLLM's worker queues need far more than
  Docker's 64 MiB /dev/shm) rather than `ipc: host`, which would share the
  host's IPC namespace; a hub model gets the shared `hf_cache` volume so a
  recreated container does not download its weights again, and a model whose
  source is a local path gets that path bind-mounted read-only.
- Every container drops all capabilities and adds back only the five that
  common images' entrypoints need to chown their data and switch user
  (postgres, redis), with `no-new-privileges`. `restart: never` is `"no"`.
- `$` in any value is written `$$`: Compose would otherwise interpolate it
  (`unescape_document` undoes that for consumers that bypass Compose).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any

from hxpc.compiler import probes, yamlout
from hxpc.compiler.bundle import TARGET_LABEL, Meta, TargetError, object_hash
from hxpc.compiler.fieldtypes import SPEC_CONFIG, Name
from hxpc.compiler.model import Probe, Replica, ResolvedStack, Workload
from hxpc.compiler.quantities import cores, format_duration, format_size
from hxpc.compiler.targets import Placing, Platform, Problem, missing_field, surge_problems
from hxpc.diagnostics import Diagnostic, suggest
from hxpc.records import record

if TYPE_CHECKING:
    from hxpc.compiler.spec import Stack

TARGET = "compose"
# where every container publishes its ports when no host is named: one Docker Engine
ENGINE_HOST = "the Docker Engine"


@record(kw_only=True)
class ComposeTarget:
    """One Docker Compose file."""

    __pydantic_config__ = SPEC_CONFIG
    host: Name | None = None
    """the host whose GPU budget the compose stack uses"""


Config = ComposeTarget


def placement(config: ComposeTarget) -> Placing:
    """Every replica on the named host; with none named, on one Docker Engine whose ports they share."""
    host = config.host
    if host is None:
        return Placing(lambda w: (ENGINE_HOST,), on_spec_hosts=False)
    return Placing(lambda w: (host,))


def check(config: ComposeTarget, stack: Stack, workloads: Mapping[str, Workload]) -> Iterator[Problem]:
    yield from missing_field(stack, "image", "the compose target", "HX309",
                             hint="add `image:` or drop the target for this environment")
    yield from surge_problems(TARGET, workloads, surge_blocker)
    if config.host is not None and config.host not in stack.hosts:
        yield Problem("HX303", f"compose target host `{config.host}` is not declared under `hosts`",
                      ("targets", TARGET, "host"), hint=suggest(config.host, stack.hosts))


def surge_blocker(w: Workload, replica: Replica | None = None) -> str:
    """Why a new container of `w` (of `replica`, when given) cannot start beside the one it replaces on the
    Docker Engine, "" when it can: a published host port stays taken until the old container stops, and its
    GPUs stay in use."""
    reasons = []
    if w.ports:
        ports = sorted(replica.host_ports.values()) if replica is not None else sorted(w.ports.values())
        reasons.append(f"publishes host port {', '.join(str(p) for p in ports)}" if replica is not None
                       else f"publishes its ports on the host ({', '.join(str(p) for p in ports)} + replica index)")
    if w.gpus:
        devices = replica.gpu_devices if replica is not None else ()
        reasons.append(f"holds GPU {','.join(str(d) for d in devices)}" if devices else f"holds {w.gpus} GPU(s)")
    return " and ".join(reasons)


def platform(config: ComposeTarget, stack: ResolvedStack) -> Platform:
    return Platform("hosts", TARGET, stack.placements.get(TARGET))


FILE = "compose.yaml"
HASH_LABEL = "hxpc.dev/hash"
SECRETS_DIR = "/run/secrets"
# `_` never occurs in a generated `<name>-<volume>` key (both are DNS labels), so this cannot collide
HF_CACHE_VOLUME = "hf_cache"
HF_CACHE_PATH = "/root/.cache/huggingface"  # vllm/vllm-openai runs as root with the default HF_HOME
# variables whose file-path companion is not `<VAR>_FILE`
FILE_VARS = {"HF_TOKEN": "HF_TOKEN_PATH"}
CAP_ADD = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID")
RESTART = {"always": "always", "on-failure": "on-failure", "never": "no"}
SHM_MIN_GIB, SHM_GIB_PER_GPU = 2, 1


def emit(stack: ResolvedStack, meta: Meta) -> dict[str, str]:
    return {FILE: meta.header() + yamlout.dump(compose_document(stack, meta))}


def compose_document(stack: ResolvedStack, meta: Meta) -> dict[str, Any]:
    """The Compose document as data, `$` already escaped as `$$` the way Compose reads it."""
    plan = _plan(stack)
    host_set = TARGET in stack.placements
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    used_secrets: set[str] = set()
    for name, workload, replicas, split in plan.units:
        services[name] = _service(workload, replicas, split, stack, plan.members, meta, host_set)
        used_secrets.update(workload.secrets.values())
        for vname, volume in sorted(workload.volumes.items()):
            labels = _owner_labels(meta)
            if volume.size is not None:
                labels["hxpc.dev/size"] = format_size(volume.size)
            volumes[f"{workload.name}-{vname}"] = {"name": f"{meta.project}-{meta.env}_{workload.name}-{vname}",
                                                   "labels": labels}
        if workload.model is not None and not workload.model.source.startswith("/"):
            volumes[HF_CACHE_VOLUME] = {"name": f"{meta.project}-{meta.env}_{HF_CACHE_VOLUME}",
                                        "labels": _owner_labels(meta)}
    doc: dict[str, Any] = {"name": f"{meta.project}-{meta.env}", "services": services}
    if volumes:
        doc["volumes"] = _escape(volumes)
    if used_secrets:
        doc["secrets"] = _escape({s: _secret_source(stack, s) for s in sorted(used_secrets)})
    return doc


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """`value` with `change` applied to every string in it (mapping keys stay as they are)."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, change) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, change) for v in value]
    return value


def unescape_document(value: Any) -> Any:
    """What Compose reads from the document: `$$` back to `$` in every string value."""
    return _map_strings(value, lambda text: text.replace("$$", "$"))


def _owner_labels(meta: Meta) -> dict[str, str]:
    # the target label keeps the Docker backend off a systemd docker-runtime unit's container on the same Engine
    return {**meta.owner_labels, TARGET_LABEL: "compose"}


@record(frozen=False)
class _Plan:
    """Which Compose services exist: (name, workload, its replicas, split?) and each workload's services."""

    units: list[tuple[str, Workload, tuple[Replica, ...], bool]] = field(default_factory=list)
    members: dict[str, list[str]] = field(default_factory=dict)


def _plan(stack: ResolvedStack) -> _Plan:
    placed = stack.placements.get(TARGET)
    plan = _Plan()
    problems: list[Diagnostic] = []
    for w in stack.workloads.values():
        if not w.image:  # validation reports HX309 first; this guards callers that skip it
            problems.append(_limit(w, "image", f"{w.kind} `{w.name}` has no `image`, which the compose target needs"))
            continue
        replicas = placed.replicas[w.name] if placed is not None else tuple(
            Replica(i, None, {p: n + i for p, n in w.ports.items()}, ()) for i in range(w.replicas))
        if placed is not None and w.gpus and w.replicas > 1:
            names = [f"{w.name}-{r.index}" for r in replicas]
            plan.units.extend((n, w, (r,), True) for n, r in zip(names, replicas, strict=True))
        else:
            names = [w.name]
            plan.units.append((w.name, w, replicas, False))
        plan.members[w.name] = names
    seen: dict[str, Workload] = {}
    for name, w, _, split in plan.units:
        first = seen.setdefault(name, w)
        if first is w:
            continue
        # only a split replica `<a>-<i>` can meet a spec name, and only one that is not split itself
        splitter, other = (w, first) if split else (first, w)
        problems.append(_collision("service", name, other, splitter, (
            f"compose runs each GPU replica of `{splitter.name}` as its own service `{splitter.name}-<i>`"),
            hint=f"rename `{other.name}` or `{splitter.name}`, or set replicas: 1 on `{splitter.name}` "
            "and declare its replicas as separate entries"))
    # `<name>-<volume>` is ambiguous (`a` + `b-c` and `a-b` + `c`): two workloads would share one data volume
    volume_owners: dict[str, tuple[Workload, str]] = {}
    for w in stack.workloads.values():
        for vname in sorted(w.volumes):
            key = f"{w.name}-{vname}"
            owner, owner_volume = volume_owners.setdefault(key, (w, vname))
            if owner is not w:
                problems.append(_collision("volume", key, owner, w, (
                    f"volume `{owner_volume}` of `{owner.name}` and volume `{vname}` of `{w.name}`")))
    if problems:
        raise TargetError(problems)
    return plan


def _limit(w: Workload, key: str, message: str) -> Diagnostic:
    section = "models" if w.kind == "model" else "services"
    return Diagnostic("HX401", f"{message} (field `{section}.{w.name}.{key}`, target compose)")


def _collision(what: str, name: str, first: Workload, second: Workload, why: str,
               hint: str | None = None) -> Diagnostic:
    """Two workloads generate one name: the second would silently replace or share the first's object."""
    return Diagnostic("HX405", f"{first.kind} `{first.name}` and {second.kind} `{second.name}` both generate "
                      f"the {what} `{name}` ({why}; target compose)",
                      hint=hint or f"rename `{first.name}` or `{second.name}`, or one of the volumes")


def _service(w: Workload, replicas: tuple[Replica, ...], split: bool, stack: ResolvedStack,
             members: dict[str, list[str]], meta: Meta, host_set: bool) -> dict[str, Any]:
    svc: dict[str, Any] = {"image": w.image}
    if w.command is not None:
        svc["entrypoint"] = list(w.command)
    if w.args:
        svc["command"] = list(w.args)
    env = dict(w.env)
    for var, secret in w.secrets.items():
        env.setdefault(FILE_VARS.get(var, f"{var}_FILE"), f"{SECRETS_DIR}/{secret}")
    if env:
        svc["environment"] = dict(sorted(env.items()))
    if w.secrets:
        svc["secrets"] = sorted(set(w.secrets.values()))
    if w.ports:
        by_port = sorted(w.ports.items(), key=lambda kv: (kv[1], kv[0]))
        svc["ports"] = [_port(replicas, pname, port) for pname, port in by_port]
    svc["deploy"] = _deploy(w, replicas, host_set)
    if w.probe is not None:
        svc["healthcheck"] = _healthcheck(w, w.probe)
    depends = _depends_on(w, stack, members)
    if depends:
        svc["depends_on"] = depends
    mounts: list[dict[str, Any]] = [{"type": "volume", "source": f"{w.name}-{vname}", "target": v.path}
              for vname, v in sorted(w.volumes.items())]
    if w.model is not None:
        # NCCL between tensor-parallel ranks and vLLM's worker queues live in /dev/shm; tmpfs pages count
        # against the memory limit only when used, so a generous cap costs nothing until it is needed
        svc["shm_size"] = f"{max(SHM_MIN_GIB, SHM_GIB_PER_GPU * w.gpus)}g"
        if w.model.source.startswith("/"):
            mounts.append({"type": "bind", "source": w.model.source, "target": w.model.source, "read_only": True})
        else:
            mounts.append({"type": "volume", "source": HF_CACHE_VOLUME, "target": HF_CACHE_PATH})
    if mounts:
        svc["volumes"] = mounts
    if split:
        svc["networks"] = {"default": {"aliases": [w.name]}}
    svc["restart"] = RESTART[w.restart]
    user = w.security.container_user() if w.security is not None else None
    if user is not None:
        svc["user"] = user
    if w.security is not None and w.security.read_only_root_filesystem is not None:
        svc["read_only"] = w.security.read_only_root_filesystem
    svc["cap_drop"] = ["ALL"]
    svc["cap_add"] = list(CAP_ADD)
    svc["security_opt"] = ["no-new-privileges:true"]
    svc["x-hxpc"] = {
        "workload": w.name,
        "kind": w.kind,
        "secrets": dict(sorted(w.secrets.items())),
        "replicas": [{"index": r.index, "ports": dict(sorted(r.host_ports.items())),
                      "devices": list(r.gpu_devices)} for r in replicas],
    }
    svc["labels"] = _owner_labels(meta)
    svc = _escape(svc)
    svc["labels"][HASH_LABEL] = object_hash(svc)
    return svc


def _port(replicas: tuple[Replica, ...], name: str, port: int) -> str:
    """Replica i publishes `port + i`: one range for the service, which Compose deals out per replica."""
    if len(replicas) <= 1:
        return f"{replicas[0].host_ports[name] if replicas else port}:{port}"
    first = replicas[0].host_ports[name]
    return f"{first}-{first + len(replicas) - 1}:{port}"


def _deploy(w: Workload, replicas: tuple[Replica, ...], host_set: bool) -> dict[str, Any]:
    deploy: dict[str, Any] = {"replicas": len(replicas)}
    limits: dict[str, Any] = {}
    if w.cpu_millis is not None:
        # text, not a number: compose-go (docker compose v2) refuses an integer here ("unexpected value
        # type int for cpus") although the Compose Specification schema allows one
        limits["cpus"] = cores(w.cpu_millis)
    if w.memory_bytes is not None:
        limits["memory"] = _docker_bytes(w.memory_bytes)
    resources: dict[str, Any] = {}
    if limits:
        resources["limits"] = limits
    if w.gpus:
        device: dict[str, Any] = {"driver": "nvidia", "capabilities": ["gpu"]}
        if host_set and len(replicas) == 1:
            device["device_ids"] = [str(d) for d in replicas[0].gpu_devices]
        else:  # no host budget to pin against (or no replica at all)
            device["count"] = w.gpus
        resources["reservations"] = {"devices": [device]}
    if resources:
        deploy["resources"] = resources
    # what `hxpc apply` does on a change, as Swarm reads it (`docker compose up` recreates every container at once)
    deploy["update_config"] = {"parallelism": max(1, w.max_unavailable),
                               "order": "stop-first" if surge_blocker(w) else "start-first",
                               "failure_action": "rollback"}
    return deploy


def _docker_bytes(size: int) -> str:
    """Docker's byte units are binary whatever their spelling (`1g` = 1 GiB); exact, else plain bytes."""
    for unit, factor in (("t", 2**40), ("g", 2**30), ("m", 2**20), ("k", 2**10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}b"


def _healthcheck(w: Workload, probe: Probe) -> dict[str, Any]:
    seconds = probes.timeout_s(probe.timeout_ms)
    if probe.kind == "exec":
        test = ["CMD", *(probe.command or ())]
    elif probe.port is None:
        raise TargetError([_limit(w, "health", f"the health check of `{w.name}` names no known port")])
    elif probe.kind == "http" and w.kind == "model":
        test = ["CMD", "python3", "-c", probes.PY_HTTP, probes.url(probe.port, probe.path), str(seconds)]
    elif probe.kind == "http":
        test = ["CMD-SHELL", probes.http_script(probe.port, probe.path, seconds)]
    else:
        test = ["CMD-SHELL", probes.tcp_script(probe.port, seconds)]
    return {"test": test, "interval": format_duration(probe.interval_ms), "timeout": format_duration(probe.timeout_ms),
            "retries": probe.retries, "start_period": format_duration(probe.start_period_ms)}


def _depends_on(w: Workload, stack: ResolvedStack, members: dict[str, list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dep in w.depends_on:
        target = stack.workloads.get(dep)
        if target is None or dep not in members:
            continue  # validation reports unknown dependencies (HX301)
        if target.replicas == 0:
            # scaled to zero in this environment: nothing to wait for, and Compose must not refuse to start
            cond: dict[str, Any] = {"condition": "service_started", "required": False}
        else:
            cond = {"condition": "service_healthy" if target.probe is not None else "service_started"}
        for name in members[dep]:
            out[name] = dict(cond)
    return out


def _secret_source(stack: ResolvedStack, name: str) -> dict[str, str]:
    secret = stack.spec.secrets[name]
    return {"environment": secret.env} if secret.env is not None else {"file": secret.file or ""}


def _escape(value: Any) -> Any:
    return _map_strings(value, lambda text: text.replace("$", "$$"))
