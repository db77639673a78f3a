"""Semantic checks of a schema-valid stack: references, cycles, GPU budgets, KV caches, ports, targets.

Each check yields Diagnostics pointing at the span of the merged value that is
wrong (which may sit in an overlay file); all checks run, and the caller
reports every problem at once. The arithmetic of the GPU checks is spelled out
in the messages so that a reader can verify it by hand. Whether a model server
would start (its KV cache) is kvcheck.py's, run here per host and model.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterator

from hxpc.compiler import targets
from hxpc.compiler.architecture import ModelShapes
from hxpc.compiler.capacity import weights
from hxpc.compiler.kvcheck import check_model_on_host
from hxpc.compiler.load import KeyPath
from hxpc.compiler.merge import Merged
from hxpc.compiler.model import Placement, Workload, place, placements_of, placings, workloads_of
from hxpc.compiler.quantities import format_size
from hxpc.compiler.spec import Stack
from hxpc.diagnostics import Diagnostic, Severity, suggest
from hxpc.limits import MAX_TOTAL_REPLICAS

MAX_PORT = 65535


def _section(w: Workload) -> str:
    return "models" if w.kind == "model" else "services"


class _Checker:
    def __init__(self, stack: Stack, merged: Merged, shapes: ModelShapes):
        self.stack, self.merged = stack, merged
        self.workloads = workloads_of(stack, shapes)
        self.found: list[Diagnostic] = []

    def error(self, code: str, message: str, path: KeyPath, *, key: bool = False, hint: str | None = None,
              notes: tuple[tuple[KeyPath, str], ...] = (), severity: Severity = "error") -> None:
        note_spans = tuple((s, m) for p, m in notes if (s := self.merged.span(p)) is not None)
        self.found.append(Diagnostic(code, message, self.merged.span(path, key=key), hint=hint, severity=severity,
                                     notes=note_spans))

    def run(self) -> list[Diagnostic]:
        self.names()
        self.references()
        self.cycles()
        self.targets()
        for placement in placements_of(self.stack, self.workloads).values():
            self.gpus(placement)
            self.ports(placement)
        for name, placing in placings(self.stack).items():
            if not placing.on_spec_hosts:  # e.g. one Docker Engine: no GPU budget, but its ports are shared
                self.ports(place(name, self.workloads.values(), placing.hosts_of))
        return self.found

    def names(self) -> None:
        for name in self.stack.services:
            if name in self.stack.models:
                self.error("HX312", f"`{name}` is both a model and a service", ("services", name), key=True,
                           hint="rename one: depends_on would not know which is meant",
                           notes=((("models", name), "the model is declared here"),))

    def references(self) -> None:
        s = self.stack
        for w in self.workloads.values():
            base = (_section(w), w.name)
            for i, dep in enumerate(w.depends_on):
                if dep not in self.workloads:
                    self.error("HX301",
                               f"{w.kind} `{w.name}` depends on `{dep}`, which is neither a service nor a model",
                               (*base, "depends_on", i), hint=suggest(dep, self.workloads))
            for var, secret in w.secrets.items():
                if secret not in s.secrets:
                    self.error("HX302", f"secret `{secret}` (for {var} of `{w.name}`) is not declared under `secrets`",
                               (*base, "secrets", var), hint=suggest(secret, s.secrets))
            declared_hosts = s.services[w.name].hosts if w.kind == "service" else s.models[w.name].hosts
            for i, host in enumerate(declared_hosts or ()):
                if host not in s.hosts:
                    self.error("HX303", f"host `{host}` of `{w.name}` is not declared under `hosts`",
                               (*base, "hosts", i), hint=suggest(host, s.hosts))
            if w.kind == "service":
                self.port_refs(w.name)

    def port_refs(self, name: str) -> None:
        svc = self.stack.services[name]
        base: KeyPath = ("services", name)
        refs: list[tuple[str, KeyPath]] = []
        if svc.health and svc.health.http:
            refs.append((svc.health.http.port, (*base, "health", "http", "port")))
        if svc.health and svc.health.tcp:
            refs.append((svc.health.tcp.port, (*base, "health", "tcp", "port")))
        if svc.metrics:
            refs.append((svc.metrics.port, (*base, "metrics", "port")))
        for port, path in refs:
            if port not in svc.ports:
                self.error("HX304", f"port `{port}` of service `{name}` is not declared under its `ports`", path,
                           hint=suggest(port, svc.ports) or "declare it, e.g. `ports: {http: 8080}`")

    def cycles(self) -> None:
        graph = {n: [d for d in w.depends_on if d in self.workloads] for n, w in self.workloads.items()}
        try:
            graphlib.TopologicalSorter(graph).prepare()
        except graphlib.CycleError as exc:
            cycle: list[str] = list(exc.args[1])  # [a, b, ..., a]
            # start at the name that comes first in the spec, so the message is stable
            order = list(self.workloads)
            ring = cycle[:-1]
            first = min(range(len(ring)), key=lambda i: order.index(ring[i]))
            ring = ring[first:] + ring[:first]
            # graphlib lists the cycle against the edge direction; read it as "depends on"
            ring = [ring[0], *reversed(ring[1:])]
            if all(ring[(i + 1) % len(ring)] in graph[ring[i]] for i in range(len(ring))):
                shown = " -> ".join([*ring, ring[0]])
            else:  # pragma: no cover - defensive: keep graphlib's order
                shown = " -> ".join(cycle)
            w = self.workloads[ring[0]]
            dep_index = list(w.depends_on).index(ring[1 % len(ring)])
            self.error("HX305", f"dependency cycle: {shown}", (_section(w), w.name, "depends_on", dep_index),
                       hint="remove one of these dependencies; apply needs an order to start them in")

    def targets(self) -> None:
        """What each target the stack compiles to needs of it (an image, a runtime's command, its hosts)."""
        for entry, config in targets.configured(self.stack):
            for p in entry.deploy().check(config, self.stack, self.workloads):
                self.error(p.code, p.message, p.path, key=p.key, hint=p.hint)

    def _gpu_path(self, w: Workload) -> KeyPath:
        if w.kind == "model":
            return ("models", w.name, "tensor_parallel")
        return ("services", w.name, "resources", "gpus")

    def gpus(self, placement: Placement) -> None:
        for host_name, host in self.stack.hosts.items():
            users = [(n, r) for n, r in placement.on_host(host_name) if self.workloads[n].gpus]
            if not users:
                continue
            available = host.gpus.count if host.gpus else 0
            needed: dict[str, int] = {}
            for name, _ in users:
                needed[name] = needed.get(name, 0) + self.workloads[name].gpus
            total = sum(needed.values())
            if total > available:
                parts = ", ".join(f"{n} {self._gpu_formula(n, placement, host_name)}" for n in needed)
                path: KeyPath = ("hosts", host_name, "gpus", "count") if host.gpus else ("hosts", host_name)
                takers = tuple((self._gpu_path(self.workloads[n]), f"`{n}` takes {k}") for n, k in needed.items())
                self.error("HX306", f"host `{host_name}` has {available} GPU(s) but {total} are placed on it "
                                    f"({placement.target}): {parts}", path, key=host.gpus is None,
                           hint="lower replicas or tensor_parallel, or spread `hosts` over more machines",
                           notes=takers)
            if host.gpus is None:
                continue
            for name in dict.fromkeys(n for n, _ in users):
                w = self.workloads[name]
                if w.model is None:
                    continue
                m = w.model
                stored = weights(m, w.known_shape)
                room = host.gpus.memory * m.gpu_memory_utilization
                gpu_note = ((("hosts", host_name, "gpus", "memory"), f"GPU memory of `{host_name}`"),)
                if stored.per_gpu_bytes > room:
                    self.error(
                        "HX307",
                        f"model `{name}` does not fit on `{host_name}`: {stored.formula} = "
                        f"{stored.per_gpu_bytes / 1e9:.1f} GB per GPU > {format_size(host.gpus.memory)} x "
                        f"{m.gpu_memory_utilization:g} = {room / 1e9:.1f} GB usable",
                        ("models", name, "params_b"),
                        hint="raise tensor_parallel, quantize the model, or place it on larger GPUs", notes=gpu_note)
                    continue
                for p in check_model_on_host(name, w, host_name, host.gpus):
                    self.error(p.code, p.message, p.path, hint=p.hint, severity=p.severity,
                               notes=gpu_note if p.code != "HX320" else ())

    def _gpu_formula(self, name: str, placement: Placement, host: str) -> str:
        w = self.workloads[name]
        here = sum(1 for r in placement.replicas[name] if r.host == host)
        what = "tensor_parallel" if w.kind == "model" else "gpus"
        return f"({what} {w.gpus} x {here} replica{'s' if here != 1 else ''})"

    def ports(self, placement: Placement) -> None:
        taken: dict[tuple[str, int], tuple[str, int, str]] = {}
        reported: set[tuple[str, str, str, str]] = set()
        for name, reps in placement.replicas.items():
            w = self.workloads[name]
            for r in reps:
                if r.host is None:
                    continue
                for port_name, port in r.host_ports.items():
                    if port > MAX_PORT:
                        if (name, port_name, "", "range") not in reported:
                            reported.add((name, port_name, "", "range"))
                            self.error("HX208", f"`{name}` replica {r.index} would listen on host port {port} "
                                                f"({port_name} + {r.index}), above {MAX_PORT}",
                                       self._port_path(w, port_name),
                                       hint="replica i listens on port + i: lower the port or the replicas")
                        continue
                    owner = taken.get((r.host, port))
                    if owner is None:
                        taken[(r.host, port)] = (name, r.index, port_name)
                        continue
                    other, other_index, other_port = owner
                    pair = (name, port_name, other, other_port)
                    if pair in reported:  # further replicas of the same clash add nothing
                        continue
                    reported.add(pair)
                    ow = self.workloads[other]
                    self.error("HX308", f"host port {port} on `{r.host}` is taken twice ({placement.target}): "
                                        f"`{name}` replica {r.index} ({port_name}) and `{other}` replica "
                                        f"{other_index} ({other_port})", self._port_path(w, port_name),
                               hint="replica i listens on port + i; leave room between the ports of "
                                    "services that share a host",
                               notes=((self._port_path(ow, other_port), f"`{other}` uses it"),))

    @staticmethod
    def _port_path(w: Workload, port_name: str) -> KeyPath:
        return ("models", w.name, "port") if w.kind == "model" else ("services", w.name, "ports", port_name)


def _too_many_replicas(stack: Stack, merged: Merged) -> Diagnostic | None:
    """Every replica is placed, given host ports and GPUs: their total bounds the work, checked before any is."""
    counts = {("models", n): m.replicas for n, m in stack.models.items()}
    counts.update({("services", n): s.replicas for n, s in stack.services.items()})
    total = sum(counts.values())
    if total <= MAX_TOTAL_REPLICAS:
        return None
    largest = max(counts, key=counts.__getitem__)
    return Diagnostic("HX315", f"this environment has {total:,} replicas in all; hxpc places at most "
                               f"{MAX_TOTAL_REPLICAS:,}", merged.span((*largest, "replicas")),
                      hint=f"`{largest[1]}` has the most ({counts[largest]:,}); split the stack or lower the replicas")


def semantic_checks(stack: Stack, merged: Merged, shapes: ModelShapes | None = None) -> Iterator[Diagnostic]:
    too_many = _too_many_replicas(stack, merged)
    if too_many is not None:
        yield too_many
        return
    yield from _Checker(stack, merged, shapes or ModelShapes()).run()
