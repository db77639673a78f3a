"""The target registry: every artifact set hxpc compiles, one entry each, and what a target module provides.

`REGISTRY` lists the targets in the order they are compiled and reported. An
entry names the target (its folder under `<env>/`, `targets/` and `golden/`),
the module that emits it, whether it deploys workloads (then the spec's
`targets.<name>` is an instance of the module's `Config`) or is monitoring
compiled beside them, which engine backend applies it, and whether it renders
Jinja templates from `targets/<name>/`. A deploying module also answers the
questions the rest of the compiler asks of a target: where it places replicas
(`placement`), what it needs of the spec (`check`) and how Prometheus finds
its workloads (`platform`). Nothing outside a target's module names it:
spec.py, model.py, checks.py, compile.py, the templates, monitoring and the
engine all read this registry. Modules are imported when first asked for, and
mypy checks each one against `Target` or `DeployTarget` (the `TYPE_CHECKING`
block at the end), which costs nothing at start-up. A new target is one module
and one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast, runtime_checkable

from hxpc.records import record

if TYPE_CHECKING:
    from hxpc.compiler.bundle import Meta
    from hxpc.compiler.load import KeyPath
    from hxpc.compiler.model import Placement, ResolvedStack, Workload
    from hxpc.compiler.spec import Stack

C = TypeVar("C")
HostsOf = Callable[["Workload"], tuple[str, ...]]


@record
class Placing:
    """How a target places replicas: on which hosts each workload's replicas run (round-robin).

    `default_hosts` is where a workload that names no `hosts` runs. With `on_spec_hosts` false every
    replica shares one host that is not in the spec (a Docker Engine with no host named): its ports
    must not clash, but it has no GPU budget to check and no devices to hand out.
    """

    hosts_of: HostsOf
    default_hosts: tuple[str, ...] = ()
    on_spec_hosts: bool = True


@record
class Problem:
    """Something a target needs that the spec lacks: an HX code, the message, and where (a key path)."""

    code: str
    message: str
    path: KeyPath
    key: bool = False
    hint: str | None = None


@record
class Platform:
    """Where a target's workloads run, as far as scraping and GPU selectors care: `hosts` (static scrape
    targets at each replica's host port) or a `cluster` (ServiceMonitors and pod selectors)."""

    kind: Literal["hosts", "cluster"]
    name: str
    placement: Placement | None = None   # hosts: replicas with hosts, ports and GPU devices
    namespace: str | None = None          # cluster: where the workloads run


class Target(Protocol):
    """What every target module provides: its artifacts, by path relative to `<env>/<target>/`.

    A module may also define `warnings(stack) -> list[Problem]`: what it compiles but cannot fully honour,
    printed by `hxpc compile` as warnings (`bundle.target_warnings` calls it).
    """

    def emit(self, stack: ResolvedStack, meta: Meta) -> dict[str, str]: ...


@runtime_checkable
class Warns(Protocol):
    """Optional for a target module: what compiles but is not fully honoured (a model whose server exports no
    signal for an alert), reported as warnings at their place in the spec; compile goes on."""

    def warnings(self, stack: ResolvedStack) -> Iterable[Problem]: ...


class DeployTarget(Target, Protocol[C]):
    """A target that runs the workloads, configured by `targets.<name>` in the spec (a `Config`)."""

    Config: type[C]

    def placement(self, config: C) -> Placing | None:
        """How replicas are placed on hosts; None when the target places nothing on the spec's hosts."""
        ...

    def check(self, config: C, stack: Stack, workloads: Mapping[str, Workload]) -> Iterable[Problem]:
        """What this target needs of the spec that the spec lacks (HX3xx/HX4xx)."""
        ...

    def platform(self, config: C, stack: ResolvedStack) -> Platform:
        """Where monitoring finds this target's workloads."""
        ...


@record
class TargetEntry:
    name: str
    module: str
    deploys: bool = True          # False: monitoring, compiled when `monitoring` is set beside a deploying target
    backend: str | None = None    # the engine backend that applies it (hxpc.engine.backends.<backend>)
    templates: bool = False       # renders Jinja templates from targets/<name>/

    def target(self) -> Target:
        return cast("Target", importlib.import_module(self.module))

    def deploy(self) -> DeployTarget[Any]:
        if not self.deploys:
            raise TypeError(f"target `{self.name}` does not deploy workloads")
        return cast("DeployTarget[Any]", importlib.import_module(self.module))


REGISTRY: tuple[TargetEntry, ...] = (
    TargetEntry("systemd", "hxpc.compiler.targets.systemd", backend="systemd", templates=True),
    TargetEntry("compose", "hxpc.compiler.targets.compose", backend="docker"),
    TargetEntry("kubernetes", "hxpc.compiler.targets.kubernetes", backend="kubernetes"),
    TargetEntry("prometheus", "hxpc.compiler.targets.prometheus", deploys=False),
    TargetEntry("grafana", "hxpc.compiler.targets.grafana", deploys=False),
)


def names() -> tuple[str, ...]:
    return tuple(e.name for e in REGISTRY)


def entry(name: str) -> TargetEntry:
    for e in REGISTRY:
        if e.name == name:
            return e
    raise KeyError(name)


def deploying() -> tuple[TargetEntry, ...]:
    return tuple(e for e in REGISTRY if e.deploys)


def configured(stack: Stack) -> Iterator[tuple[TargetEntry, Any]]:
    """Each deploying target the stack compiles to, in registry order, with its `targets.<name>` config."""
    for e in deploying():
        config = getattr(stack.targets, e.name)
        if config is not None:
            yield e, config


def config_of(stack: Stack, cls: type[C]) -> C | None:
    """The stack's config of the target whose `Config` is `cls`, typed; None when that target is absent."""
    for _, config in configured(stack):
        if isinstance(config, cls):
            return config
    return None


def compiled(stack: Stack) -> list[str]:
    """The targets the stack compiles to: its deploying targets, then monitoring beside them."""
    chosen = [e.name for e, _ in configured(stack)]
    if stack.monitoring is not None and chosen:
        chosen += [e.name for e in REGISTRY if not e.deploys]
    return chosen


def missing_field(stack: Stack, field: str, needed_by: str, code: str, hint: str | None = None) -> Iterator[Problem]:
    """A problem for every service without `field` (`image` or `exec`), which `needed_by` needs."""
    for name, svc in stack.services.items():
        if getattr(svc, field) is None:
            yield Problem(code, f"service `{name}` has no `{field}`, which {needed_by} needs", ("services", name),
                          key=True, hint=hint)


def surge_problems(target: str, workloads: Mapping[str, Workload],
                   blocker: Callable[[Workload], str]) -> Iterator[Problem]:
    """HX314 for every workload asking for `update.max_unavailable: 0` whose replicas cannot start beside their
    old selves on `target`: `blocker` says why ("" when they can)."""
    for w in workloads.values():
        reason = blocker(w) if w.max_unavailable == 0 and w.replicas else ""
        if reason:
            section = "models" if w.kind == "model" else "services"
            yield Problem("HX314", f"{w.kind} `{w.name}` asks for update.max_unavailable 0, but on the {target} "
                                   f"target a new replica cannot start beside its old one: it {reason}",
                          (section, w.name, "update", "max_unavailable"),
                          hint="set `max_unavailable: 1` (replicas are then replaced one at a time, each stopped "
                               "before its replacement starts), or drop what it holds exclusively")


if TYPE_CHECKING:
    # mypy checks every module against the protocol its entry promises; nothing here runs
    from hxpc.compiler.targets import compose, grafana, kubernetes, prometheus, systemd

    _systemd: DeployTarget[systemd.SystemdTarget] = systemd
    _compose: DeployTarget[compose.ComposeTarget] = compose
    _kubernetes: DeployTarget[kubernetes.KubernetesTarget] = kubernetes
    _monitoring: tuple[Target, ...] = (prometheus, grafana)
    _warns: Warns = prometheus
