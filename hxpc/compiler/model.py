"""The resolved stack: what the targets compile, with every decision already made.

Services and models become `Workload`s of one shape (a model is a vLLM server
with derived flags, port `http`, `GET /health` and `GET /metrics`). Replicas
are placed round-robin over their hosts, each replica gets its host ports
(`port + i`) and its GPU device indices, assigned per host in spec order
(models first, then services), and the dependency graph is cut into apply
waves. Nothing here reads files or talks to live systems.
"""

from __future__ import annotations

import graphlib
import math
from collections.abc import Iterable
from dataclasses import field
from typing import TYPE_CHECKING, Literal

from hxpc.compiler import targets
from hxpc.compiler.architecture import ModelShape, ModelShapes, ShapeProblem
from hxpc.compiler.capacity import weights
from hxpc.records import record

if TYPE_CHECKING:
    # types only: the targets' spec classes import this module while spec.py builds `targets:`
    from hxpc.compiler.spec import Health, LlmModel, Security, Service, Slo, Stack, Volume

Kind = Literal["service", "model"]


@record
class Probe:
    """A resolved health check: ports are numbers, timings are milliseconds."""

    kind: Literal["http", "tcp", "exec"]
    port: int | None
    port_name: str | None
    path: str | None
    command: tuple[str, ...] | None
    interval_ms: int
    timeout_ms: int
    retries: int
    start_period_ms: int


@record
class Replica:
    index: int
    host: str | None
    host_ports: dict[str, int]
    gpu_devices: tuple[int, ...]


@record
class Workload:
    name: str
    kind: Kind
    image: str | None
    exec: tuple[str, ...] | None
    command: tuple[str, ...] | None
    args: tuple[str, ...]
    ports: dict[str, int]
    env: dict[str, str]
    secrets: dict[str, str]
    cpu_millis: int | None
    memory_bytes: int | None
    gpus: int
    replicas: int
    depends_on: tuple[str, ...]
    probe: Probe | None
    metrics: tuple[int, str] | None
    volumes: dict[str, Volume]
    restart: str
    startup_budget_s: int
    slo: Slo | None
    hosts: tuple[str, ...]
    max_unavailable: int = 1      # replicas a change replaces at once (`update.max_unavailable`)
    model: LlmModel | None = None
    security: Security | None = None
    shape: ModelShape | ShapeProblem | None = None
    """a model's architecture (hxpc.compiler.architecture), or why it is not known"""

    @property
    def known_shape(self) -> ModelShape | None:
        return self.shape if isinstance(self.shape, ModelShape) else None

    @property
    def weights_bytes_per_gpu(self) -> float:
        if self.model is None:
            return 0.0
        return weights(self.model, self.known_shape).per_gpu_bytes


@record
class Placement:
    """Where every replica runs for one target (systemd hosts, or the compose host)."""

    target: str
    replicas: dict[str, tuple[Replica, ...]] = field(default_factory=dict)

    def on_host(self, host: str) -> list[tuple[str, Replica]]:
        return [(name, r) for name, reps in self.replicas.items() for r in reps if r.host == host]


@record
class ResolvedStack:
    project: str
    env: str
    spec: Stack
    workloads: dict[str, Workload]
    waves: tuple[tuple[str, ...], ...]
    placements: dict[str, Placement]

    @property
    def primary_placement(self) -> Placement | None:
        """The first target's placement in registry order, else the placement the spec's `hosts` declare."""
        return next(iter(self.placements.values()), None)


def startup_budget_s(model: LlmModel | None, health: Health | None) -> int:
    """How long a replica may take to start before it counts as failed.

    Models load weights (and may download them) before /health answers: five
    minutes plus ten seconds per billion parameters, so a 70B model gets
    ~17 minutes instead of systemd's 90 s default. Services get their health
    check's start period plus a full round of retries, at least 60 s.
    """
    if model is not None:
        return 300 + math.ceil(model.params_b * 10)
    if health is None:
        return 60
    window = health.start_period + health.interval * health.retries
    return max(60, math.ceil(window / 1000))


def vllm_args(model: LlmModel) -> tuple[str, ...]:
    """The vLLM OpenAI server's flags, in SPEC.md's order, then `extra_args`.

    Flags whose field is at vLLM's default are left out, so that a spec that does not use them compiles as before.
    """
    args = ["--model", model.source]
    if model.revision:
        args += ["--revision", model.revision]
    if model.served_name:
        args += ["--served-model-name", model.served_name]
    args += ["--dtype", model.dtype]
    if model.quantization:
        args += ["--quantization", model.quantization]
        if model.quantization == "bitsandbytes":  # vLLM before 0.7 needs both; later ones accept both
            args += ["--load-format", "bitsandbytes"]
    if model.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", model.kv_cache_dtype]
    if model.max_model_len:
        args += ["--max-model-len", str(model.max_model_len)]
    if model.max_num_batched_tokens:
        args += ["--max-num-batched-tokens", str(model.max_num_batched_tokens)]
    if model.max_num_seqs:
        args += ["--max-num-seqs", str(model.max_num_seqs)]
    if model.enforce_eager:
        args.append("--enforce-eager")
    args += ["--tensor-parallel-size", str(model.tensor_parallel),
             "--gpu-memory-utilization", f"{model.gpu_memory_utilization:g}",
             "--host", "0.0.0.0", "--port", str(model.port)]
    return (*args, *model.extra_args)


def _probe(health: Health, ports: dict[str, int]) -> Probe:
    if health.http is not None:
        kind, port_name, path, command = "http", health.http.port, health.http.path, None
    elif health.tcp is not None:
        kind, port_name, path, command = "tcp", health.tcp.port, None, None
    else:
        kind, port_name, path, command = "exec", None, None, tuple(health.exec or ())
    return Probe(kind, ports.get(port_name) if port_name else None, port_name, path, command,  # type: ignore[arg-type]
                 health.interval, health.timeout, health.retries, health.start_period)


def _service(name: str, svc: Service, default_hosts: tuple[str, ...]) -> Workload:
    ports = dict(svc.ports)
    return Workload(
        name=name, kind="service", image=svc.image,
        exec=tuple(svc.exec) if svc.exec else None,
        command=tuple(svc.command) if svc.command is not None else None,
        args=tuple(svc.args or ()), ports=ports, env=dict(sorted(svc.env.items())),
        secrets=dict(sorted(svc.secrets.items())), cpu_millis=svc.resources.cpu,
        memory_bytes=svc.resources.memory, gpus=svc.resources.gpus, replicas=svc.replicas,
        depends_on=tuple(svc.depends_on), probe=_probe(svc.health, ports) if svc.health else None,
        metrics=(ports[svc.metrics.port], svc.metrics.path) if svc.metrics and svc.metrics.port in ports else None,
        volumes=dict(svc.volumes), restart=svc.restart, startup_budget_s=startup_budget_s(None, svc.health),
        slo=svc.slo, hosts=tuple(svc.hosts) if svc.hosts is not None else default_hosts,
        max_unavailable=svc.update.max_unavailable, security=svc.security,
    )


def _model(name: str, m: LlmModel, default_hosts: tuple[str, ...], shapes: ModelShapes) -> Workload:
    budget = startup_budget_s(m, None)
    ports = {"http": m.port}
    probe = Probe("http", m.port, "http", "/health", None, 10_000, 5_000, 3, budget * 1000)
    return Workload(
        name=name, kind="model", image=m.image, exec=None, command=None, args=vllm_args(m),
        ports=ports, env=dict(sorted(m.env.items())), secrets=dict(sorted(m.secrets.items())),
        cpu_millis=m.resources.cpu, memory_bytes=m.resources.memory, gpus=m.tensor_parallel,
        replicas=m.replicas, depends_on=tuple(m.depends_on), probe=probe, metrics=(m.port, "/metrics"),
        volumes={}, restart=m.restart, startup_budget_s=budget, slo=None,
        hosts=tuple(m.hosts) if m.hosts is not None else default_hosts, max_unavailable=m.update.max_unavailable,
        model=m, shape=shapes.of(m), security=m.security,
    )


def placings(stack: Stack) -> dict[str, targets.Placing]:
    """How each target the stack compiles to places replicas, in registry order (targets that place none left out)."""
    out = {}
    for entry, config in targets.configured(stack):
        placing = entry.deploy().placement(config)
        if placing is not None:
            out[entry.name] = placing
    return out


def workloads_of(stack: Stack, shapes: ModelShapes | None = None) -> dict[str, Workload]:
    """Models first, then services, each in spec order: the order GPUs are handed out in."""
    default_hosts = next((p.default_hosts for p in placings(stack).values() if p.default_hosts), ())
    shapes = shapes or ModelShapes()
    out = {name: _model(name, m, default_hosts, shapes) for name, m in stack.models.items()}
    for name, svc in stack.services.items():
        out.setdefault(name, _service(name, svc, default_hosts))
    return out


def place(target: str, workloads: Iterable[Workload], hosts_of: targets.HostsOf) -> Placement:
    """Round-robin replicas over hosts; host port `port + i`; GPUs in order per host."""
    next_device: dict[str, int] = {}
    replicas: dict[str, tuple[Replica, ...]] = {}
    for w in workloads:
        hosts = hosts_of(w)
        placed = []
        for i in range(w.replicas):
            host = hosts[i % len(hosts)] if hosts else None
            devices: tuple[int, ...] = ()
            if host is not None and w.gpus:
                start = next_device.get(host, 0)
                devices = tuple(range(start, start + w.gpus))
                next_device[host] = start + w.gpus
            placed.append(Replica(i, host, {p: n + i for p, n in w.ports.items()}, devices))
        replicas[w.name] = tuple(placed)
    return Placement(target, replicas)


def placements_of(stack: Stack, workloads: dict[str, Workload]) -> dict[str, Placement]:
    """Each target's placement on the spec's hosts; with none, where the workloads' own `hosts` put them."""
    out = {name: place(name, workloads.values(), p.hosts_of) for name, p in placings(stack).items() if p.on_spec_hosts}
    if not out:
        out["declared"] = place("declared", workloads.values(), lambda w: w.hosts)
    return out


def waves_of(workloads: dict[str, Workload]) -> tuple[tuple[str, ...], ...]:
    """Apply waves: each wave depends only on earlier ones; names sorted within a wave."""
    sorter = graphlib.TopologicalSorter({n: [d for d in w.depends_on if d in workloads]
                                         for n, w in workloads.items()})
    sorter.prepare()  # raises CycleError; validation reports cycles before this runs
    waves: list[tuple[str, ...]] = []
    while sorter.is_active():
        ready = tuple(sorted(sorter.get_ready()))
        waves.append(ready)
        sorter.done(*ready)
    return tuple(waves)


def resolve(stack: Stack, env: str, shapes: ModelShapes | None = None) -> ResolvedStack:
    workloads = workloads_of(stack, shapes)
    return ResolvedStack(stack.project, env, stack, workloads, waves_of(workloads),
                         placements_of(stack, workloads))
