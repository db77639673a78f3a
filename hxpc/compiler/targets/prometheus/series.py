"""The series hxpc's monitoring selects and records: where workloads run, their label selectors, recorded names.

Every series hxpc reads is selected by the `project`, `env` and
`service`/`model` labels the scrape configs attach, so the same rules and
dashboards work behind static targets and ServiceMonitors; only the GPU
selectors differ (host and device index from the placement, or the pod for
kubernetes). The recorded series' names are here too, because the `grafana`
target's dashboards read them; the rules that record them are in
`rules`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hxpc.compiler import targets
from hxpc.compiler.targets import Platform

if TYPE_CHECKING:
    from hxpc.compiler.model import ResolvedStack, Workload
    from hxpc.compiler.spec import Monitoring


def platforms(stack: ResolvedStack) -> list[Platform]:
    """Where each target the stack compiles to runs its workloads, in registry order."""
    return [e.deploy().platform(config, stack) for e, config in targets.configured(stack.spec)]


def host_platform(stack: ResolvedStack) -> Platform | None:
    """The first target that runs workloads on hosts (scraped as static targets)."""
    return next((p for p in platforms(stack) if p.kind == "hosts"), None)


def cluster_platform(stack: ResolvedStack) -> Platform | None:
    """The first target that runs workloads on a cluster (scraped through ServiceMonitors)."""
    return next((p for p in platforms(stack) if p.kind == "cluster"), None)


def rules_platform(stack: ResolvedStack) -> Platform | None:
    """The platform `rules.yaml` (and its test) is written for: hosts first, else the cluster."""
    return host_platform(stack) or cluster_platform(stack)


def host_address(stack: ResolvedStack, host: str) -> str:
    """The name Prometheus reaches a host by: the host part of its ssh address, else its spec name."""
    spec = stack.spec.hosts.get(host)
    address = spec.address if spec is not None else None
    if not address or address == "local" or address.startswith("docker://"):
        return host
    address = address.removeprefix("ssh://").rsplit("@", 1)[-1]
    address = address.split("]")[0] + "]" if address.startswith("[") else address.split(":")[0]
    return address or host


def scraped(stack: ResolvedStack) -> list[Workload]:
    """Services with `metrics` and every model (vLLM serves /metrics), by name."""
    return [stack.workloads[n] for n in sorted(stack.workloads) if stack.workloads[n].metrics is not None]


def slo_services_in_front(stack: ResolvedStack, w: Workload) -> list[str]:
    """The services with an SLO (and metrics) that depend on `w` directly: their SLO alerts see its failures."""
    return [s.name for s in scraped(stack) if s.kind == "service" and s.slo is not None and w.name in s.depends_on]


def owner(stack: ResolvedStack, w: Workload) -> dict[str, str]:
    return {"project": stack.project, "env": stack.env, w.kind: w.name}


def sel(labels: dict[str, str], *extra: str) -> str:
    """A PromQL selector: the labels as equality matchers, then any `extra` matchers verbatim."""
    parts = [f'{k}="{_escape(v)}"' for k, v in labels.items()]
    parts += [e for e in extra if e]
    return "{" + ",".join(parts) + "}"


def _escape(value: str) -> str:
    if "\\" not in value and '"' not in value:
        return value
    return value.replace("\\", "\\\\").replace('"', '\\"')


def gpu_selectors(stack: ResolvedStack, w: Workload, platform: Platform) -> list[dict[str, str]]:
    """Label matchers (label -> `=value` or `=~regex`) for the DCGM series of the GPUs `w` uses."""
    if w.gpus == 0:
        return []
    if platform.kind == "cluster":
        # Deployment pods are <name>-<hash>-<id>, StatefulSet pods <name>-<i>
        return [{"namespace": f"={platform.namespace}", "pod": f"=~{w.name}-[a-z0-9]+-[a-z0-9]+|{w.name}-[0-9]+"}]
    if platform.placement is None:
        return []  # compose without `host`: the GPUs are not known
    devices: dict[str, set[int]] = {}
    for replica in platform.placement.replicas.get(w.name, ()):
        if replica.host is not None and replica.gpu_devices:
            devices.setdefault(replica.host, set()).update(replica.gpu_devices)
    return [{"job": f"={dcgm_job(stack)}", "host": f"={h}", "gpu": "=~" + "|".join(str(d) for d in sorted(devices[h]))}
            for h in sorted(devices)]


def matchers(selector: dict[str, str]) -> str:
    """A PromQL selector from a `gpu_selectors` entry."""
    out = []
    for label, spec in selector.items():
        op, value = ("=~", spec[2:]) if spec.startswith("=~") else ("=", spec[1:])
        out.append(f'{label}{op}"{_escape(value)}"')
    return "{" + ",".join(out) + "}"


def dcgm_job(stack: ResolvedStack) -> str:
    return f"{stack.project}-{stack.env}-dcgm"


def scrape_interval(mon: Monitoring) -> str:
    """`monitoring.scrape_interval` as a Prometheus duration, in whole seconds (at least 1s)."""
    return f"{mon.scrape_interval // 1000 or 1}s"


def num(x: float) -> str:
    return f"{x:.6g}"


# recorded series: the names dashboards may read
REC_SLO_REQUESTS = "service:slo_requests:rate5m"
REC_SLO_LATENCY_P99 = "service:slo_latency_seconds:p99_rate5m"
REC_VLLM_REQUESTS = "model:vllm_requests:rate5m"
REC_VLLM_FAILED = "model:vllm_request_failures:ratio_rate5m"  # one series per failure `signal` the release has
REC_VLLM_KV_USAGE = "model:vllm_kv_cache_usage:ratio"  # per replica (instance), the fullest engine
REC_VLLM_GEN_TOKENS = "model:vllm_generation_tokens:rate5m"
REC_VLLM_PROMPT_TOKENS = "model:vllm_prompt_tokens:rate5m"
REC_GPU_UTIL = "model:dcgm_gpu_utilization:percent"
REC_GPU_TEMP = "model:dcgm_gpu_temperature:celsius"
REC_GPU_MEM = "model:dcgm_fb_used:ratio"
REC_GPU_XID = "model:dcgm_xid_errors:last"  # the last XID code per GPU, without the labels that follow it


def rec_slo_ratio(window: str) -> str:
    return f"service:slo_errors:ratio_rate{window}"


def rec_slo_burn(window: str) -> str:
    return f"service:slo_burn_rate:{window}"


def rec_quantile(base: str, q: str) -> str:
    return f"model:{base.removeprefix('vllm:')}:p{q}_rate5m"

