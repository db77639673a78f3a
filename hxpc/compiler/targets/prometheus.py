"""The `prometheus` target: scrape configs or ServiceMonitors, alerting and recording rules, and their tests.

Files, relative to `<env>/prometheus/`: `scrape_configs.yaml` (systemd or
compose: a job per scraped service and model, a static target per replica at
`host:hostport`, and a DCGM exporter job per GPU host), `rules.yaml` (one rule
group per workload, then `monitoring.rules`), `rules.test.yaml` (a
`promtool test rules` file: for every generated alert, synthetic series that
make it fire and series that keep it silent), and for kubernetes
`servicemonitors.yaml` and `prometheusrule.yaml`. Every series hxpc reads is
selected by the `project`, `env` and `service`/`model` labels the scrape
configs attach, so the same rules work behind static targets and
ServiceMonitors; only the GPU selectors differ (host and device index from the
placement, or the pod for kubernetes). Metric names come from `vllm_metrics`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hxpc.compiler import yamlout
from hxpc.compiler.bundle import Meta, TargetError, object_hash
from hxpc.compiler.model import Placement, ResolvedStack, Workload
from hxpc.compiler.spec import Slo
from hxpc.compiler.targets import vllm_metrics as vm
from hxpc.diagnostics import Diagnostic

# The SRE workbook's multi-window, multi-burn-rate alerts: (burn factor, long window, short window).
FAST_BURN = ((14.4, "1h", "5m"), (6.0, "6h", "30m"))
SLOW_BURN = ((3.0, "1d", "2h"), (1.0, "3d", "6h"))
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

# Fixed thresholds for models: the spec has no per-model knobs for these (yet).
QUEUE_BACKLOG = 10  # waiting requests per replica, sustained
KV_CACHE_FULL = 0.95
TTFT_P99_SECONDS = 5
FAILED_RATIO = 0.05
GPU_TEMP_CELSIUS = 85
GPU_IDLE_PERCENT = 20

_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MATCHER = re.compile(r'^([a-zA-Z_][a-zA-Z0-9_]*)(=|!=|=~|!~)"((?:[^"\\]|\\.)*)"$')
_GROUP_KEYS = frozenset({"name", "interval", "rules", "limit", "query_offset"})
_RULE_KEYS = frozenset({"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"})


# ---------------------------------------------------------------- platforms and selectors


@dataclass(frozen=True)
class Platform:
    """Where the workloads run, as far as scraping and GPU selectors care."""

    name: str  # systemd | compose | kubernetes
    placement: Placement | None = None  # replicas with hosts, ports and GPU devices
    namespace: str | None = None


def host_platform(stack: ResolvedStack) -> Platform | None:
    targets = stack.spec.targets
    if targets.systemd is not None:
        return Platform("systemd", stack.placements.get("systemd"))
    if targets.compose is not None:
        return Platform("compose", stack.placements.get("compose"))
    return None


def kube_platform(stack: ResolvedStack) -> Platform | None:
    kube = stack.spec.targets.kubernetes
    if kube is None:
        return None
    return Platform("kubernetes", namespace=kube.namespace or f"{stack.project}-{stack.env}")


def rules_platform(stack: ResolvedStack) -> Platform | None:
    """The platform `rules.yaml` (and its test) is written for: hosts first, else kubernetes."""
    return host_platform(stack) or kube_platform(stack)


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


def owner(stack: ResolvedStack, w: Workload) -> dict[str, str]:
    return {"project": stack.project, "env": stack.env, w.kind: w.name}


def sel(labels: dict[str, str], *extra: str) -> str:
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
    if platform.name == "kubernetes":
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
    out = []
    for label, spec in selector.items():
        op, value = ("=~", spec[2:]) if spec.startswith("=~") else ("=", spec[1:])
        out.append(f'{label}{op}"{_escape(value)}"')
    return "{" + ",".join(out) + "}"


def dcgm_job(stack: ResolvedStack) -> str:
    return f"{stack.project}-{stack.env}-dcgm"


def slo_error_budget(slo: Slo) -> float:
    return round(1 - slo.availability / 100, 10)


def num(x: float) -> str:
    return f"{x:.6g}"


# recorded series: the names dashboards may read
REC_SLO_REQUESTS = "service:slo_requests:rate5m"
REC_SLO_LATENCY_P99 = "service:slo_latency_seconds:p99_rate5m"
REC_VLLM_REQUESTS = "model:vllm_requests:rate5m"
REC_VLLM_FAILED = "model:vllm_request_failures:ratio_rate5m"
REC_VLLM_GEN_TOKENS = "model:vllm_generation_tokens:rate5m"
REC_VLLM_PROMPT_TOKENS = "model:vllm_prompt_tokens:rate5m"
REC_GPU_UTIL = "model:dcgm_gpu_utilization:percent"
REC_GPU_TEMP = "model:dcgm_gpu_temperature:celsius"
REC_GPU_MEM = "model:dcgm_fb_used:ratio"
REC_GPU_XID = "model:dcgm_xid_errors:last"


def rec_slo_ratio(window: str) -> str:
    return f"service:slo_errors:ratio_rate{window}"


def rec_slo_burn(window: str) -> str:
    return f"service:slo_burn_rate:{window}"


def rec_quantile(base: str, q: str) -> str:
    return f"model:{base.removeprefix('vllm:')}:p{q}_rate5m"


# ---------------------------------------------------------------- rules and their tests


@dataclass
class _Case:
    """A promtool test for one alert: series that make it fire, and series that keep it silent."""

    alert: str
    labels: dict[str, str]
    annotations: dict[str, str]
    fire: list[tuple[str, str]]
    quiet: list[tuple[str, str]]
    eval_minutes: int


@dataclass
class _Group:
    name: str
    rules: list[dict[str, Any]] = field(default_factory=list)


class _RuleBuilder:
    """Builds the rule groups and their test cases for one platform."""

    def __init__(self, stack: ResolvedStack, platform: Platform):
        self.stack = stack
        self.platform = platform
        mon = stack.spec.monitoring
        self.alerts = mon.alerts if mon is not None else False
        self.runbooks = mon.runbooks if mon is not None else None
        self.groups: list[_Group] = []
        self.cases: list[_Case] = []
        self.fors: dict[str, int] = {}  # alert name -> its `for`, in minutes

    # -- shared pieces

    def where(self, w: Workload) -> str:
        if self.platform.name == "kubernetes":
            return f"namespace {self.platform.namespace}"
        placement = self.platform.placement
        if placement is None:
            return f"compose project {self.stack.project}-{self.stack.env}"
        hosts = sorted({r.host for r in placement.replicas.get(w.name, ()) if r.host})
        return ("host " if len(hosts) == 1 else "hosts ") + ", ".join(hosts)

    def instance(self, w: Workload) -> str:
        placement = self.platform.placement
        port = w.metrics[0] if w.metrics else 80
        if placement is not None and self.platform.name != "kubernetes":
            for r in placement.replicas.get(w.name, ()):
                if r.host is not None:
                    return f"{host_address(self.stack, r.host)}:{port + r.index}"
        return f"10.0.0.10:{port}"

    def alert(self, group: _Group, case_labels: dict[str, str], name: str, expr: str, severity: str, for_: str,
              summary: str, description: str) -> dict[str, str] | None:
        if not self.alerts:
            return None
        annotations = {"summary": summary, "description": description}
        if self.runbooks:
            annotations["runbook_url"] = f"{self.runbooks}{name}"
        rule: dict[str, Any] = {"alert": name, "expr": expr, "labels": {"severity": severity},
                                "annotations": annotations}
        if for_ != "0m":
            rule["for"] = for_
        self.fors[name] = int(for_.removesuffix("m"))
        group.rules.append(rule)
        labels = {**case_labels, "severity": severity}
        return {k: _render(v, labels) for k, v in annotations.items()}

    def case(self, annotations: dict[str, str] | None, name: str, labels: dict[str, str], severity: str,
             fire: list[tuple[str, str]], quiet: list[tuple[str, str]]) -> None:
        if annotations is not None:
            # long enough for the `for` to pass after the first samples, and for rates to have two samples
            self.cases.append(_Case(name, {**labels, "severity": severity}, annotations, fire, quiet,
                                    max(8, self.fors[name] + 3)))

    # -- per workload

    def workload(self, w: Workload) -> None:
        group = _Group(f"hxpc.{w.name}")
        self.health(group, w)
        if w.kind == "model":
            self.vllm(group, w)
            self.gpus(group, w)
        elif w.slo is not None:
            self.slo(group, w, w.slo)
        # the owner labels on every rule: they are on the results anyway, and they keep rules of different
        # workloads distinct for `promtool check rules`' duplicate-rule lint
        for rule in group.rules:
            rule["labels"] = {w.kind: w.name, **rule.get("labels", {})}
        if group.rules:
            self.groups.append(group)

    def health(self, g: _Group, w: Workload) -> None:
        o = owner(self.stack, w)
        by = f"project, env, {w.kind}, instance"
        inst = self.instance(w)
        series = sel({**o, "instance": inst, "job": f"{self.stack.project}-{self.stack.env}-{w.name}"})
        labels = {**o, "instance": inst}
        env = self.stack.env
        s = sel(o)
        ann = self.alert(g, labels, "HxpcTargetDown", f"max by ({by}) (up{s}) == 0", "critical", "5m",
                         f"{w.kind} {w.name} is down in {env}",
                         f"Prometheus cannot scrape {w.kind} {w.name} (environment {env}) at "
                         f"{{{{ $labels.instance }}}} on {self.where(w)} for 5 minutes.")
        self.case(ann, "HxpcTargetDown", labels, "critical", [(f"up{series}", "0x25")], [(f"up{series}", "1x25")])
        expr = (f"max by ({by}) (changes(process_start_time_seconds{s}[15m])) > 2 "
                f"or max by ({by}) (changes(up{s}[15m])) > 4")
        ann = self.alert(g, labels, "HxpcTargetFlapping", expr, "warning", "0m",
                         f"{w.kind} {w.name} is restarting or flapping in {env}",
                         f"{w.kind} {w.name} (environment {env}) at {{{{ $labels.instance }}}} on {self.where(w)} "
                         "restarted more than twice or went up and down more than four times in 15 minutes.")
        self.case(ann, "HxpcTargetFlapping", labels, "warning",
                  [(f"up{series}", " ".join("1" if i % 2 == 0 else "0" for i in range(26)))],
                  [(f"up{series}", "1x25")])

    def vllm(self, g: _Group, w: Workload) -> None:
        m = vm.for_image(w.image)
        o = owner(self.stack, w)
        env, where = self.stack.env, self.where(w)
        s = sel(o)
        by = "project, env, model"
        inst = self.instance(w)
        series_labels = {**o, "instance": inst}
        # recording rules: throughput, request rate, failures, latency percentiles
        g.rules.append({"record": REC_VLLM_GEN_TOKENS, "expr": f"sum by ({by}) (rate({m.generation_tokens}{s}[5m]))"})
        g.rules.append({"record": REC_VLLM_PROMPT_TOKENS, "expr": f"sum by ({by}) (rate({m.prompt_tokens}{s}[5m]))"})
        g.rules.append({"record": REC_VLLM_REQUESTS, "expr": f"sum by ({by}) (rate({m.requests_finished}{s}[5m]))"})
        scope = m.failures_scope
        g.rules.append({"record": REC_VLLM_FAILED,
                        "expr": f"sum by ({by}) (rate({m.failures_metric}{sel(o, m.failures_matcher, scope)}[5m])) "
                                f"/ sum by ({by}) (rate({m.failures_metric}{sel(o, scope)}[5m]))"})
        for base in (m.ttft_seconds, m.e2e_seconds):
            for q in ("50", "90", "99"):
                g.rules.append({"record": rec_quantile(base, q),
                                "expr": f"histogram_quantile(0.{q}, sum by (le, {by}) (rate({base}_bucket{s}[5m])))"})
        per = "project, env, model, instance"
        labels = {**o, "instance": inst}
        ser = sel(series_labels)
        ann = self.alert(g, labels, "HxpcVllmQueueBacklog",
                         f"max by ({per}) ({m.requests_waiting}{s}) > {QUEUE_BACKLOG}", "warning", "10m",
                         f"model {w.name} has a request backlog in {env}",
                         f"More than {QUEUE_BACKLOG} requests have been waiting for 10 minutes at model {w.name} "
                         f"(environment {env}), replica {{{{ $labels.instance }}}} on {where}.")
        self.case(ann, "HxpcVllmQueueBacklog", labels, "warning", [(f"{m.requests_waiting}{ser}", "20x25")],
                  [(f"{m.requests_waiting}{ser}", "0x25")])
        ann = self.alert(g, labels, "HxpcVllmKvCacheNearlyFull",
                         f"max by ({per}) ({m.kv_cache_usage}{s}) > {KV_CACHE_FULL}", "warning", "10m",
                         f"model {w.name} KV cache nearly full in {env}",
                         f"The KV cache of model {w.name} (environment {env}) at {{{{ $labels.instance }}}} on "
                         f"{where} has been over {KV_CACHE_FULL:.0%} for 10 minutes; requests get preempted.")
        self.case(ann, "HxpcVllmKvCacheNearlyFull", labels, "warning", [(f"{m.kv_cache_usage}{ser}", "0.99x25")],
                  [(f"{m.kv_cache_usage}{ser}", "0.5x25")])
        ann = self.alert(g, o, "HxpcVllmTimeToFirstTokenHigh",
                         f"{rec_quantile(m.ttft_seconds, '99')}{s} > {TTFT_P99_SECONDS}", "warning", "10m",
                         f"model {w.name} is slow to first token in {env}",
                         f"The p99 time to first token of model {w.name} (environment {env}, on {where}) "
                         f"has been over {TTFT_P99_SECONDS}s for 10 minutes.")
        self.case(ann, "HxpcVllmTimeToFirstTokenHigh", o, "warning",
                  _histogram(f"{m.ttft_seconds}_bucket", series_labels, [1, 5, 10], slow=True, above=5),
                  _histogram(f"{m.ttft_seconds}_bucket", series_labels, [1, 5, 10], slow=False, above=5))
        ann = self.alert(g, o, "HxpcVllmRequestsFailing", f"{REC_VLLM_FAILED}{s} > {FAILED_RATIO}", "warning", "10m",
                         f"model {w.name} fails requests in {env}",
                         f"More than {FAILED_RATIO:.0%} of the requests to model {w.name} (environment {env}, "
                         f"on {where}) have failed for 10 minutes.")
        bad, good = _satisfy(m.failures_matcher)
        scope_labels = dict([_satisfy(scope)[0]]) if scope else {}
        ok_series = f"{m.failures_metric}{sel({**series_labels, **scope_labels, **dict([good])})}"
        bad_series = f"{m.failures_metric}{sel({**series_labels, **scope_labels, **dict([bad])})}"
        self.case(ann, "HxpcVllmRequestsFailing", o, "warning",
                  [(ok_series, "0+90x25"), (bad_series, "0+10x25")], [(ok_series, "0+90x25"), (bad_series, "0x25")])

    def gpus(self, g: _Group, w: Workload) -> None:
        selectors = gpu_selectors(self.stack, w, self.platform)
        if not selectors:
            return
        o = owner(self.stack, w)
        env, where = self.stack.env, self.where(w)
        for dsel in selectors:
            d = matchers(dsel)
            for record, expr in ((REC_GPU_UTIL, f"{vm.DCGM_GPU_UTIL}{d}"), (REC_GPU_TEMP, f"{vm.DCGM_GPU_TEMP}{d}"),
                                 (REC_GPU_MEM, f"{vm.DCGM_FB_USED}{d} / ({vm.DCGM_FB_USED}{d} + {vm.DCGM_FB_FREE}{d})"),
                                 (REC_GPU_XID, f"{vm.DCGM_XID_ERRORS}{d}")):
                g.rules.append({"record": record, "expr": expr, "labels": dict(o)})
        s = sel(o)
        per = "project, env, model, instance, gpu"
        # synthetic DCGM series for the first selector
        concrete = {k: _example(v) for k, v in selectors[0].items()}
        dinst = (f"{host_address(self.stack, concrete['host'])}:{vm.DCGM_PORT}" if "host" in concrete
                 else f"10.0.0.20:{vm.DCGM_PORT}")
        dl = {**concrete, "instance": dinst}
        if "project" not in dl and self.platform.name != "kubernetes":
            dl = {"project": self.stack.project, "env": env, **dl}
        labels = {**o, "instance": dinst, "gpu": concrete.get("gpu", "0")}
        if "gpu" not in dl:
            dl["gpu"] = "0"
        ds = sel(dl)
        mem_full = min(0.99, (w.model.gpu_memory_utilization if w.model else 0.9) + 0.05)
        ann = self.alert(g, labels, "HxpcGpuXidError", f"max by ({per}) ({REC_GPU_XID}{s}) > 0", "critical", "0m",
                         f"GPU XID error under model {w.name} in {env}",
                         f"GPU {{{{ $labels.gpu }}}} at {{{{ $labels.instance }}}} ({where}), used by model {w.name} "
                         f"(environment {env}), reported an XID error: the GPU may need a reset.")
        self.case(ann, "HxpcGpuXidError", labels, "critical", [(f"{vm.DCGM_XID_ERRORS}{ds}", "0x5 79x20")],
                  [(f"{vm.DCGM_XID_ERRORS}{ds}", "0x25")])
        ann = self.alert(g, labels, "HxpcGpuMemoryNearlyFull", f"max by ({per}) ({REC_GPU_MEM}{s}) > {num(mem_full)}",
                         "warning", "15m", f"GPU memory nearly full under model {w.name} in {env}",
                         f"GPU {{{{ $labels.gpu }}}} at {{{{ $labels.instance }}}} ({where}), used by model {w.name} "
                         f"(environment {env}), has had more than {mem_full:.0%} of its memory in use for 15 minutes.")
        used, free = (f"{vm.DCGM_FB_USED}{ds}", f"{vm.DCGM_FB_FREE}{ds}")
        self.case(ann, "HxpcGpuMemoryNearlyFull", labels, "warning", [(used, "80000x25"), (free, "100x25")],
                  [(used, "70000x25"), (free, "10000x25")])
        ann = self.alert(g, labels, "HxpcGpuTemperatureHigh",
                         f"max by ({per}) ({REC_GPU_TEMP}{s}) > {GPU_TEMP_CELSIUS}", "warning", "10m",
                         f"GPU running hot under model {w.name} in {env}",
                         f"GPU {{{{ $labels.gpu }}}} at {{{{ $labels.instance }}}} ({where}), used by model {w.name} "
                         f"(environment {env}), has been above {GPU_TEMP_CELSIUS}°C for 10 minutes.")
        self.case(ann, "HxpcGpuTemperatureHigh", labels, "warning", [(f"{vm.DCGM_GPU_TEMP}{ds}", "92x25")],
                  [(f"{vm.DCGM_GPU_TEMP}{ds}", "60x25")])
        waiting = vm.for_image(w.image).requests_waiting
        expr = (f"avg by (project, env, model) ({REC_GPU_UTIL}{s}) < {GPU_IDLE_PERCENT} "
                f"and on (project, env, model) sum by (project, env, model) ({waiting}{s}) > 0")
        ann = self.alert(g, o, "HxpcGpuIdleWhileQueued", expr, "warning", "10m",
                         f"model {w.name} queues requests while its GPUs idle in {env}",
                         f"The GPUs of model {w.name} (environment {env}, on {where}) have been under "
                         f"{GPU_IDLE_PERCENT}% busy for 10 minutes while requests wait: the server may be stuck.")
        vseries = f"{waiting}{sel({**o, 'instance': self.instance(w)})}"
        self.case(ann, "HxpcGpuIdleWhileQueued", o, "warning",
                  [(f"{vm.DCGM_GPU_UTIL}{ds}", "2x25"), (vseries, "5x25")],
                  [(f"{vm.DCGM_GPU_UTIL}{ds}", "2x25"), (vseries, "0x25")])

    def slo(self, g: _Group, w: Workload, slo: Slo) -> None:
        o = owner(self.stack, w)
        env, where = self.stack.env, self.where(w)
        by = "project, env, service"
        s = sel(o)
        req = slo.requests_metric
        g.rules.append({"record": REC_SLO_REQUESTS, "expr": f"sum by ({by}) (rate({req}{s}[5m]))"})
        s_err = sel(o, slo.errors_selector)
        for window in SLO_WINDOWS:
            g.rules.append({"record": rec_slo_ratio(window),
                            "expr": f"sum by ({by}) (rate({req}{s_err}[{window}])) "
                                    f"/ sum by ({by}) (rate({req}{s}[{window}]))"})
        budget = slo_error_budget(slo)
        for window in ("1h", "6h"):
            g.rules.append({"record": rec_slo_burn(window), "expr": f"{rec_slo_ratio(window)}{s} / {num(budget)}"})
        inst = {**o, "instance": self.instance(w)}
        bad, good = _satisfy(slo.errors_selector)
        ok_series, bad_series = f"{req}{sel({**inst, **dict([good])})}", f"{req}{sel({**inst, **dict([bad])})}"
        for name, severity, pairs, kind in (("HxpcErrorBudgetFastBurn", "critical", FAST_BURN, "fast"),
                                            ("HxpcErrorBudgetSlowBurn", "warning", SLOW_BURN, "slow")):
            usable = [(f, lw, sw) for f, lw, sw in pairs if f * budget < 1]  # a ratio never exceeds 1
            if not usable:
                continue
            expr = " or ".join(f"({rec_slo_ratio(lw)}{s} > {num(f * budget)} and {rec_slo_ratio(sw)}{s} "
                               f"> {num(f * budget)})" for f, lw, sw in usable)
            windows = " or ".join(f"{lw}/{sw} at {num(f)}x" for f, lw, sw in usable)
            ann = self.alert(g, o, name, expr, severity, "0m",
                             f"service {w.name} burns its error budget {kind} in {env}",
                             f"Service {w.name} (environment {env}, on {where}) is spending its "
                             f"{num(slo.availability)}% availability error budget too fast ({windows} burn rate).")
            ratio = (usable[0][0] * budget + 1) / 2
            self.case(ann, name, o, severity,
                      [(ok_series, f"0+{num(100 * (1 - ratio))}x40"), (bad_series, f"0+{num(100 * ratio)}x40")],
                      [(ok_series, "0+100x40"), (bad_series, "0x40")])
        if slo.latency_p99 is None:
            return
        limit = slo.latency_p99 / 1000
        bucket = f"{slo.latency_metric}_bucket"
        g.rules.append({"record": REC_SLO_LATENCY_P99,
                        "expr": f"histogram_quantile(0.99, sum by (le, {by}) (rate({bucket}{s}[5m])))"})
        ann = self.alert(g, o, "HxpcLatencyP99High", f"{REC_SLO_LATENCY_P99}{s} > {num(limit)}", "warning", "10m",
                         f"service {w.name} is slower than its p99 objective in {env}",
                         f"The p99 latency of service {w.name} (environment {env}, on {where}) has been over "
                         f"{num(limit)}s for 10 minutes.")
        edges = [limit / 2, limit, limit * 2, limit * 4]
        self.case(ann, "HxpcLatencyP99High", o, "warning", _histogram(bucket, inst, edges, slow=True, above=limit),
                  _histogram(bucket, inst, edges, slow=False, above=limit))


def _histogram(bucket: str, labels: dict[str, str], edges: list[float], *, slow: bool,
               above: float) -> list[tuple[str, str]]:
    """Cumulative buckets where every observation lands just above `above` (slow) or in the lowest bucket."""
    out = []
    for edge in [*edges, None]:
        le = "+Inf" if edge is None else num(edge)
        filled = (edge is None or edge > above) if slow else True
        out.append((f"{bucket}{sel({**labels, 'le': le})}", "0+10x25" if filled else "0x25"))
    return out


_TEMPLATE_LABEL = re.compile(r"\{\{ \$labels\.([a-zA-Z_]+) \}\}")


def _render(template: str, labels: dict[str, str]) -> str:
    if "{{" not in template:
        return template
    return _TEMPLATE_LABEL.sub(lambda m: labels.get(m.group(1), ""), template)


_CANDIDATES = ("500", "5xx", "abort", "error", "failure", "true", "200", "2xx", "stop", "ok", "success", "false", "x",
               "/v1/chat/completions")


def _satisfy(matcher: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """A (label, value) that the matcher selects, and one it does not, for synthetic series."""
    m = _MATCHER.match(matcher)
    if m is None:
        raise ValueError(f"not a label matcher: {matcher}")
    label, op, value = m.group(1), m.group(2), m.group(3).encode().decode("unicode_escape")

    def selects(candidate: str) -> bool:
        if op in ("=", "!="):
            return (candidate == value) == (op == "=")
        try:
            hit = re.fullmatch(value, candidate) is not None
        except re.error:
            hit = False
        return hit == (op == "=~")

    literal = [value] if op == "=" else []
    yes = next((c for c in (*literal, *_CANDIDATES) if selects(c)), value)
    no = next((c for c in _CANDIDATES if not selects(c)), "")
    return (label, yes), (label, no)


def _example(spec: str) -> str:
    """A concrete label value matching a selector value (`=v` or `=~a|b`)."""
    if spec.startswith("=~"):
        first = spec[2:].split("|")[0]
        return first.replace("[a-z0-9]+", "5d8f9c7b6", 1).replace("[a-z0-9]+", "x2x9z").replace("[0-9]+", "0")
    return spec[1:]


def _tests_file(cases: list[_Case]) -> dict[str, Any]:
    """Two tests per alert name: every workload's firing series together, then every workload's quiet ones.

    Workloads' series differ in their owner labels, so they do not disturb each
    other; batching keeps the file (and promtool's run) linear in alert kinds,
    not in workloads times alerts.
    """
    by_alert: dict[str, list[_Case]] = {}
    for c in cases:
        by_alert.setdefault(c.alert, []).append(c)
    tests: list[dict[str, Any]] = []
    for alert, group in by_alert.items():
        eval_time = f"{max(c.eval_minutes for c in group)}m"
        for fires in (True, False):
            tests.append({
                "name": f"{alert} {'fires' if fires else 'stays silent'}",
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for c in group for s, v in (c.fire if fires else c.quiet)],
                "alert_rule_test": [{"eval_time": eval_time, "alertname": alert, "exp_alerts": [
                    {"exp_labels": c.labels, "exp_annotations": c.annotations} for c in group] if fires else []}],
            })
    return {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}


# ---------------------------------------------------------------- monitoring.rules


def check_user_rules(groups: list[dict[str, Any]], taken: set[str]) -> list[Diagnostic]:
    """A structural check of `monitoring.rules`; promtool (in the tests) does the full one."""
    problems: list[Diagnostic] = []

    def bad(where: str, message: str, hint: str | None = None) -> None:
        problems.append(Diagnostic("HX402", f"monitoring.rules{where}: {message}", hint=hint))

    seen = set(taken)
    for i, group in enumerate(groups):
        at = f"[{i}]"
        unknown = sorted(set(group) - _GROUP_KEYS)
        if unknown:
            bad(at, f"unknown key `{unknown[0]}` in a rule group", "a group has `name`, `interval` and `rules`")
        name = group.get("name")
        if not isinstance(name, str) or not name:
            bad(at, "a rule group needs a `name`")
        elif name in seen:
            bad(at, f"rule group `{name}` is defined twice", "names starting with `hxpc.` are hxpc's own")
        else:
            seen.add(name)
        if "interval" in group and not _is_duration(group["interval"]):
            bad(at, f"`interval` `{group['interval']}` is not a Prometheus duration", "e.g. `30s`, `1m`")
        rules = group.get("rules")
        if not isinstance(rules, list):
            bad(at, "a rule group needs a `rules` list")
            continue
        for j, rule in enumerate(rules):
            problems.extend(_check_rule(f"{at}.rules[{j}]", rule))
    return problems


def _check_rule(at: str, rule: object) -> Iterator[Diagnostic]:
    def bad(message: str, hint: str | None = None) -> Diagnostic:
        return Diagnostic("HX402", f"monitoring.rules{at}: {message}", hint=hint)

    if not isinstance(rule, dict):
        yield bad("a rule must be a mapping with `alert` or `record`, and `expr`")
        return
    unknown = sorted(set(rule) - _RULE_KEYS)
    if unknown:
        yield bad(f"unknown key `{unknown[0]}` in a rule")
    if ("alert" in rule) == ("record" in rule):
        yield bad("a rule needs exactly one of `alert` or `record`")
    if "record" in rule:
        if not isinstance(rule["record"], str) or not _METRIC.match(rule["record"]):
            yield bad(f"`record` `{rule['record']}` is not a valid metric name")
        for key in ("for", "keep_firing_for", "annotations"):
            if key in rule:
                yield bad(f"`{key}` is only allowed on alerting rules")
    if "alert" in rule and (not isinstance(rule["alert"], str) or not rule["alert"]):
        yield bad("`alert` must be a non-empty name")
    expr = rule.get("expr")
    if isinstance(expr, bool) or not isinstance(expr, (str, int, float)) or not str(expr).strip():
        yield bad("a rule needs an `expr`")
    else:
        problem = promql_problem(str(expr))
        if problem:
            yield bad(f"`expr` does not parse: {problem}")
    for key in ("for", "keep_firing_for"):
        if key in rule and not _is_duration(rule[key]):
            yield bad(f"`{key}` `{rule[key]}` is not a Prometheus duration", "e.g. `5m`")
    for key in ("labels", "annotations"):
        value = rule.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) and _LABEL.match(k) and isinstance(v, str)
                                                  for k, v in value.items()):
            yield bad(f"`{key}` must map label names to text values", "quote numbers: `team: \"42\"`")


def _is_duration(value: object) -> bool:
    return isinstance(value, str) and value != "" and _DURATION.match(value) is not None


def promql_problem(expr: str) -> str | None:
    """What is wrong with an expression's brackets and quotes, or None.

    Not a PromQL parser: it catches the mistakes YAML lets through (an unclosed
    string, a stray bracket); promtool checks the rest in hxpc's own tests.
    """
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for ch in expr:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote != "`":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in closing:
            if not stack or stack.pop() != closing[ch]:
                return f"unbalanced `{ch}`"
        elif ch == "#":
            break  # a comment runs to the end of the line; rules are usually one line
    if quote:
        return f"unterminated string starting with {quote}"
    if stack:
        return f"unclosed `{stack[-1]}`"
    return None


# ---------------------------------------------------------------- artifacts


def scrape_configs(stack: ResolvedStack, platform: Platform) -> list[dict[str, Any]]:
    mon = stack.spec.monitoring
    interval = f"{(mon.scrape_interval if mon else 15_000) // 1000 or 1}s"
    jobs: list[dict[str, Any]] = []
    placement = platform.placement
    for w in scraped(stack):
        assert w.metrics is not None
        port, path = w.metrics
        job: dict[str, Any] = {"job_name": f"{stack.project}-{stack.env}-{w.name}", "metrics_path": path,
                               "scrape_interval": interval}
        if placement is None:
            # compose without a host: Prometheus on the compose network finds every replica by DNS
            job["dns_sd_configs"] = [{"names": [w.name], "type": "A", "port": port}]
            job["relabel_configs"] = [{"target_label": k, "replacement": v} for k, v in owner(stack, w).items()]
        else:
            metrics_port = next((p for p, n in w.ports.items() if n == port), None)
            job["static_configs"] = [
                {"targets": [f"{host_address(stack, r.host)}:{r.host_ports.get(metrics_port or '', port + r.index)}"],
                 "labels": {**owner(stack, w), "host": r.host, "replica": str(r.index)}}
                for r in placement.replicas.get(w.name, ()) if r.host is not None]
        jobs.append(job)
    gpu_hosts = sorted({h for w in stack.workloads.values() if w.kind == "model"
                        for sel_ in gpu_selectors(stack, w, platform) for h in [sel_["host"][1:]]})
    if gpu_hosts:
        jobs.append({"job_name": dcgm_job(stack), "metrics_path": "/metrics", "scrape_interval": interval,
                     "static_configs": [{"targets": [f"{host_address(stack, h)}:{vm.DCGM_PORT}"],
                                         "labels": {"project": stack.project, "env": stack.env, "host": h}}
                                        for h in gpu_hosts]})
    return jobs


def _k8s_meta(stack: ResolvedStack, meta: Meta, name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace,
            "labels": {**meta.owner_labels, "app.kubernetes.io/name": name}}


def _hashed(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"]["annotations"] = {"hxpc.dev/hash": object_hash(obj)}
    return obj


def _relabelings(stack: ResolvedStack, w: Workload) -> list[dict[str, Any]]:
    # a StatefulSet's `<name>-headless` Service carries the same labels: keep one target per pod
    out: list[dict[str, Any]] = [{"action": "keep", "sourceLabels": ["__meta_kubernetes_service_name"],
                                  "regex": w.name}]
    if w.kind == "model":
        # the operator labels targets with their Service's name as `service`; a model is not a service
        out.append({"action": "replace", "targetLabel": "service", "replacement": ""})
    out += [{"action": "replace", "targetLabel": k, "replacement": v} for k, v in owner(stack, w).items()]
    return out


def service_monitors(stack: ResolvedStack, meta: Meta, platform: Platform) -> list[dict[str, Any]]:
    ns = platform.namespace or ""
    mon = stack.spec.monitoring
    interval = f"{(mon.scrape_interval if mon else 15_000) // 1000 or 1}s"
    out = []
    for w in scraped(stack):
        assert w.metrics is not None
        port, path = w.metrics
        svc = stack.spec.services.get(w.name)
        port_name = "http" if w.kind == "model" or svc is None or svc.metrics is None else svc.metrics.port
        del port
        out.append(_hashed({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": _k8s_meta(stack, meta, w.name, ns),
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": w.name, "hxpc.dev/project": stack.project,
                                             "hxpc.dev/env": stack.env}},
                "namespaceSelector": {"matchNames": [ns]},
                "endpoints": [{"port": port_name, "path": path, "interval": interval,
                               "relabelings": _relabelings(stack, w)}],
            }}))
    if any(w.kind == "model" and w.gpus for w in stack.workloads.values()):
        # the NVIDIA GPU operator's exporter; honorLabels keeps the pod/namespace it maps each GPU to
        out.append(_hashed({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": _k8s_meta(stack, meta, f"{stack.project}-dcgm-exporter", ns),
            "spec": {"selector": {"matchLabels": {"app": "nvidia-dcgm-exporter"}},
                     "namespaceSelector": {"matchNames": ["gpu-operator"]},
                     "endpoints": [{"port": "gpu-metrics", "path": "/metrics", "interval": interval,
                                    "honorLabels": True}]}}))
    return out


def rule_groups(stack: ResolvedStack, platform: Platform) -> tuple[list[dict[str, Any]], list[_Case]]:
    builder = _RuleBuilder(stack, platform)
    for w in scraped(stack):
        builder.workload(w)
    groups = [{"name": g.name, "rules": g.rules} for g in builder.groups]
    return groups, builder.cases


def _slo_without_metrics(stack: ResolvedStack) -> list[Diagnostic]:
    return [Diagnostic("HX403", f"service `{w.name}` has an `slo` but no `metrics`: the SLO rules need its "
                                "request metrics scraped", hint=f"add `metrics: {{port: ..., path: /metrics}}` "
                                                                f"to services.{w.name}")
            for w in stack.workloads.values() if w.kind == "service" and w.slo is not None and w.metrics is None]


def emit(stack: ResolvedStack, meta: Meta) -> dict[str, str]:
    mon = stack.spec.monitoring
    platform = rules_platform(stack)
    if mon is None or platform is None:
        return {}
    user = list(mon.rules)
    problems = _slo_without_metrics(stack)
    groups, cases = rule_groups(stack, platform)
    problems += check_user_rules(user, {g["name"] for g in groups})
    if problems:
        raise TargetError(problems)
    header = meta.header()
    files: dict[str, str] = {
        "rules.yaml": header + yamlout.dump({"groups": groups + user}),
        "rules.test.yaml": header + yamlout.dump(_tests_file(cases)),
    }
    hosts = host_platform(stack)
    if hosts is not None:
        files["scrape_configs.yaml"] = header + yamlout.dump({"scrape_configs": scrape_configs(stack, hosts)})
    kube = kube_platform(stack)
    if kube is not None:
        files["servicemonitors.yaml"] = header + yamlout.dump_all(service_monitors(stack, meta, kube))
        kube_groups = groups if platform == kube else rule_groups(stack, kube)[0]
        objects = [_hashed({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                            "metadata": _k8s_meta(stack, meta, g["name"].removeprefix("hxpc."), kube.namespace or ""),
                            "spec": {"groups": [g]}}) for g in kube_groups]
        if user:
            objects.append(_hashed({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                                    "metadata": _k8s_meta(stack, meta, f"{stack.project}-custom-rules",
                                                          kube.namespace or ""),
                                    "spec": {"groups": user}}))
        files["prometheusrule.yaml"] = header + yamlout.dump_all(objects)
    return files
