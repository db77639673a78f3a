"""The alerting and recording rules hxpc writes: one group per scraped workload, and each alert's test case.

Every workload gets target-down and flapping alerts; a model also gets vLLM
recording rules and alerts (backlog, KV cache, time to first token, and
failures where its vLLM release exports a failure signal) and, where its GPUs
are known, DCGM ones (XID errors, memory, temperature, idle while queued); a
service with an `slo` gets the SRE workbook's multi-window, multi-burn-rate
error-budget alerts and a p99 latency alert. What a model's rules read comes
from `vllm_metrics`, per release, so that every alert can fire on what that
release really exports; aggregations never split by vLLM's `engine` label, and
ratios are 0 rather than empty while nothing has failed. For every alert the
builder also records a `ruletests.Case`.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from hxpc.compiler.model import ResolvedStack, Workload
from hxpc.compiler.spec import Slo
from hxpc.compiler.targets import Platform
from hxpc.compiler.targets.prometheus import vllm_metrics as vm
from hxpc.compiler.targets.prometheus.ruletests import Case, example, histogram, render, satisfy
from hxpc.compiler.targets.prometheus.series import (
    REC_GPU_MEM,
    REC_GPU_TEMP,
    REC_GPU_UTIL,
    REC_GPU_XID,
    REC_SLO_LATENCY_P99,
    REC_SLO_REQUESTS,
    REC_VLLM_FAILED,
    REC_VLLM_GEN_TOKENS,
    REC_VLLM_KV_USAGE,
    REC_VLLM_PROMPT_TOKENS,
    REC_VLLM_REQUESTS,
    gpu_selectors,
    host_address,
    matchers,
    num,
    owner,
    rec_quantile,
    rec_slo_burn,
    rec_slo_ratio,
    scraped,
    sel,
)
from hxpc.records import record

# The SRE workbook's multi-window, multi-burn-rate alerts: (burn factor, long window, short window).
FAST_BURN = ((14.4, "1h", "5m"), (6.0, "6h", "30m"))
SLOW_BURN = ((3.0, "1d", "2h"), (1.0, "3d", "6h"))
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

# Fixed thresholds for models: the spec has no per-model knobs for these (yet).
QUEUE_BACKLOG = 10  # waiting requests per replica, sustained


def capacity_words(stack: ResolvedStack, w: Workload) -> str:
    """What hxpc predicted a replica of `w` holds (tokens, and full-length requests at once), for an alert."""
    from hxpc.compiler.resources import predicted_kv_tokens

    tokens = predicted_kv_tokens(stack, w.name)
    if tokens is None:
        return "hxpc could not predict its capacity (no GPU budget for its hosts)."
    length = w.model.max_model_len if w.model and w.model.max_model_len else None
    at_once = f", {tokens / length:.1f} requests of max_model_len {length} at once" if length else ""
    return f"hxpc predicted {tokens:,} tokens of KV cache per replica{at_once}."
KV_CACHE_FULL = 0.95
TTFT_P99_SECONDS = 5
FAILED_RATIO = 0.05
GPU_TEMP_CELSIUS = 85
GPU_IDLE_PERCENT = 20
RESTART_WINDOW = "15m"
XID_WINDOW = "15m"  # an XID pages for this long: DCGM keeps reporting the last XID code until it restarts


def ratio(failed: str, total: str) -> str:
    """`failed / total`, 0 (not empty) while `failed` has no series yet: exporters create a 5xx series only
    with the first failure, and an empty ratio would look like missing data on dashboards and in tests."""
    return f"({failed} or 0 * {total}) / {total}"


def slo_error_budget(slo: Slo) -> float:
    return round(1 - slo.availability / 100, 10)


@record(frozen=False)
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
        self.cases: list[Case] = []
        self.fors: dict[str, int] = {}  # alert name -> its `for`, in minutes

    # -- shared pieces

    def where(self, w: Workload) -> str:
        """Where `w` runs, for alert descriptions."""
        if self.platform.kind == "cluster":
            return f"namespace {self.platform.namespace}"
        placement = self.platform.placement
        if placement is None:
            return f"compose project {self.stack.project}-{self.stack.env}"
        hosts = sorted({r.host for r in placement.replicas.get(w.name, ()) if r.host})
        return ("host " if len(hosts) == 1 else "hosts ") + ", ".join(hosts)

    def instance(self, w: Workload) -> str:
        """The `instance` label of `w`'s first replica, for synthetic series; a made-up address if unknown."""
        placement = self.platform.placement
        port = w.metrics[0] if w.metrics else 80
        if placement is not None:  # none for kubernetes, nor for compose without a host
            for r in placement.replicas.get(w.name, ()):
                if r.host is not None:
                    return f"{host_address(self.stack, r.host)}:{port + r.index}"
        return f"10.0.0.10:{port}"

    def alert(self, group: _Group, case_labels: dict[str, str], name: str, expr: str, severity: str, for_: str,
              summary: str, description: str, value: str = "") -> dict[str, str] | None:
        """Adds an alerting rule (if alerts are on); returns its annotations as they render for `case_labels`."""
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
        return {k: render(v, labels, value) for k, v in annotations.items()}

    @staticmethod
    def rendered(group: _Group, annotations: dict[str, str] | None, labels: dict[str, str],
                 severity: str) -> dict[str, str] | None:
        """The annotations of the alert just added to `group`, as they render for `labels` (None: alerts off)."""
        if annotations is None:
            return None
        raw = group.rules[-1]["annotations"]
        return {k: render(v, {**labels, "severity": severity}) for k, v in raw.items()}

    def case(self, annotations: dict[str, str] | None, name: str, labels: dict[str, str], severity: str,
             fire: list[tuple[str, str]], quiet: list[tuple[str, str]]) -> None:
        """Records the test of an alert `alert` just added (`annotations` None: alerts are off, no test)."""
        if annotations is not None:
            # long enough for the `for` to pass after the first samples, and for rates to have two samples
            self.cases.append(Case(name, {**labels, "severity": severity}, annotations, fire, quiet,
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
        # a model's vLLM release decides how restarts show; a service is assumed to export its start time
        restarts = (vm.for_image(w.image).restarts(s, RESTART_WINDOW) if w.kind == "model"
                    else f"changes(process_start_time_seconds{s}[{RESTART_WINDOW}])")
        expr = f"max by ({by}) ({restarts}) > 2 or max by ({by}) (changes(up{s}[{RESTART_WINDOW}])) > 4"
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
        labels = {**o, "instance": self.instance(w)}
        # recording rules: throughput, request rate, failures, latency percentiles
        g.rules.append({"record": REC_VLLM_GEN_TOKENS, "expr": f"sum by ({by}) (rate({m.generation_tokens}{s}[5m]))"})
        g.rules.append({"record": REC_VLLM_PROMPT_TOKENS, "expr": f"sum by ({by}) (rate({m.prompt_tokens}{s}[5m]))"})
        g.rules.append({"record": REC_VLLM_REQUESTS, "expr": f"sum by ({by}) (rate({m.requests_finished}{s}[5m]))"})
        for signal in m.failures:
            total = f"sum by ({by}) (rate({signal.metric}{sel(o, signal.scope)}[5m]))"
            failed = f"sum by ({by}) (rate({signal.metric}{sel(o, signal.failed, signal.scope)}[5m]))"
            g.rules.append({"record": REC_VLLM_FAILED, "expr": ratio(failed, total), "labels": {"signal": signal.name}})
        for base in (m.ttft_seconds, m.e2e_seconds):
            for q in ("50", "90", "99"):
                g.rules.append({"record": rec_quantile(base, q),
                                "expr": f"histogram_quantile(0.{q}, sum by (le, {by}) (rate({base}_bucket{s}[5m])))"})
        per = "project, env, model, instance"
        ser = sel(labels)
        # the replica's KV cache as full as its fullest engine: what a predicted-capacity line is drawn against
        g.rules.append({"record": REC_VLLM_KV_USAGE, "expr": f"max by ({per}) ({m.kv_cache_usage}{s})"})
        # waiting requests are summed over a replica's engines (data parallel): each queues its own
        ann = self.alert(g, labels, "HxpcVllmQueueBacklog",
                         f"sum by ({per}) ({m.requests_waiting}{s}) > {QUEUE_BACKLOG}", "warning", "10m",
                         f"model {w.name} has a request backlog in {env}",
                         f"More than {QUEUE_BACKLOG} requests have been waiting for 10 minutes at model {w.name} "
                         f"(environment {env}), replica {{{{ $labels.instance }}}} on {where}.")
        self.case(ann, "HxpcVllmQueueBacklog", labels, "warning", [(f"{m.requests_waiting}{ser}", "20x25")],
                  [(f"{m.requests_waiting}{ser}", "0x25")])
        ann = self.alert(g, labels, "HxpcVllmKvCacheNearlyFull",
                         f"{REC_VLLM_KV_USAGE}{s} > {KV_CACHE_FULL}", "warning", "10m",
                         f"model {w.name} KV cache nearly full in {env}",
                         f"The KV cache of model {w.name} (environment {env}) at {{{{ $labels.instance }}}} on "
                         f"{where} has been over {KV_CACHE_FULL:.0%} for 10 minutes; requests get preempted.")
        self.case(ann, "HxpcVllmKvCacheNearlyFull", labels, "warning", [(f"{m.kv_cache_usage}{ser}", "0.99x25")],
                  [(f"{m.kv_cache_usage}{ser}", "0.5x25")])
        # requests wait because the KV cache holds no more: the replica is at its capacity, which hxpc predicted
        ann = self.alert(g, labels, "HxpcVllmKvCacheSaturatedQueueing",
                         f"({REC_VLLM_KV_USAGE}{s} > {KV_CACHE_FULL}) and on ({per}) "
                         f"(sum by ({per}) ({m.requests_waiting}{s}) > 0)", "warning", "5m",
                         f"model {w.name} is at its KV-cache capacity in {env}",
                         f"Requests have been waiting for 5 minutes at model {w.name} (environment {env}), replica "
                         f"{{{{ $labels.instance }}}} on {where}, while its KV cache is over {KV_CACHE_FULL:.0%} "
                         f"full: {capacity_words(self.stack, w)} Add replicas, lower max_model_len or max_num_seqs, "
                         "or use an fp8 KV cache.")
        self.case(ann, "HxpcVllmKvCacheSaturatedQueueing", labels, "warning",
                  [(f"{m.kv_cache_usage}{ser}", "0.99x25"), (f"{m.requests_waiting}{ser}", "3x25")],
                  [(f"{m.kv_cache_usage}{ser}", "0.99x25"), (f"{m.requests_waiting}{ser}", "0x25")])
        ann = self.alert(g, o, "HxpcVllmTimeToFirstTokenHigh",
                         f"{rec_quantile(m.ttft_seconds, '99')}{s} > {TTFT_P99_SECONDS}", "warning", "10m",
                         f"model {w.name} is slow to first token in {env}",
                         f"The p99 time to first token of model {w.name} (environment {env}, on {where}) "
                         f"has been over {TTFT_P99_SECONDS}s for 10 minutes.")
        self.case(ann, "HxpcVllmTimeToFirstTokenHigh", o, "warning",
                  histogram(f"{m.ttft_seconds}_bucket", labels, [1, 5, 10], slow=True, above=5),
                  histogram(f"{m.ttft_seconds}_bucket", labels, [1, 5, 10], slow=False, above=5))
        if not m.failures:
            return  # this release counts no failed request: no alert that could never fire (compile warns)
        ann = self.alert(g, o, "HxpcVllmRequestsFailing", f"{REC_VLLM_FAILED}{s} > {FAILED_RATIO}", "warning", "10m",
                         f"model {w.name} fails requests in {env}",
                         f"More than {FAILED_RATIO:.0%} of the requests to model {w.name} (environment {env}, "
                         f"on {where}) have failed for 10 minutes, counted as {{{{ $labels.signal }}}}.")
        for signal in m.failures:  # the one rule alerts once per signal, each with its `signal` label
            bad, good = satisfy(signal.failed)
            scope_labels = dict([satisfy(signal.scope)[0]]) if signal.scope else {}
            ok_series = f"{signal.metric}{sel({**labels, **scope_labels, **dict([good])})}"
            bad_series = f"{signal.metric}{sel({**labels, **scope_labels, **dict([bad])})}"
            alert_labels = {**o, "signal": signal.name}
            self.case(self.rendered(g, ann, alert_labels, "warning"), "HxpcVllmRequestsFailing", alert_labels,
                      "warning", [(ok_series, "0+90x25"), (bad_series, "0+10x25")],
                      [(ok_series, "0+90x25"), (bad_series, "0x25")])

    def gpus(self, g: _Group, w: Workload) -> None:
        selectors = gpu_selectors(self.stack, w, self.platform)
        if not selectors:
            return
        o = owner(self.stack, w)
        env, where = self.stack.env, self.where(w)
        for dsel in selectors:
            d = matchers(dsel)
            used = f"{vm.DCGM_FB_USED}{d}"
            # dcgm-exporter 4.x counts driver-reserved memory in neither FB_USED nor FB_FREE; 3.x has no FB_RESERVED
            reserved = f"({vm.DCGM_FB_RESERVED}{d} or {used} * 0)"
            memory = f"1 - {vm.DCGM_FB_FREE}{d} / ({used} + {vm.DCGM_FB_FREE}{d} + {reserved})"
            # the XID gauge's err_code/err_msg labels follow its value: without them the GPU keeps one series
            xid = f"max without (err_code, err_msg) ({vm.DCGM_XID_ERRORS}{d})"
            for recorded, expr in ((REC_GPU_UTIL, f"{vm.DCGM_GPU_UTIL}{d}"), (REC_GPU_TEMP, f"{vm.DCGM_GPU_TEMP}{d}"),
                                   (REC_GPU_MEM, memory), (REC_GPU_XID, xid)):
                g.rules.append({"record": recorded, "expr": expr, "labels": dict(o)})
        s = sel(o)
        per = "project, env, model, instance, gpu"
        # synthetic DCGM series for the first selector
        concrete = {k: example(v) for k, v in selectors[0].items()}
        dinst = (f"{host_address(self.stack, concrete['host'])}:{vm.DCGM_PORT}" if "host" in concrete
                 else f"10.0.0.20:{vm.DCGM_PORT}")
        gpu = concrete.get("gpu", "0")
        # the DCGM scrape job adds project and env; the GPU operator's exporter (kubernetes) does not
        pe = {} if self.platform.kind == "cluster" else {"project": self.stack.project, "env": env}
        ds = sel({**pe, **concrete, "instance": dinst, "gpu": gpu})
        labels = {**o, "instance": dinst, "gpu": gpu}
        mem_full = min(0.99, (w.model.gpu_memory_utilization if w.model else 0.9) + 0.05)
        # DCGM reports the last XID until it restarts: a new XID code pages, for XID_WINDOW, then resolves
        xid = f"{REC_GPU_XID}{s}"
        ann = self.alert(g, labels, "HxpcGpuXidError",
                         f"max by ({per}) ({xid} > 0 and changes({xid}[{XID_WINDOW}]) > 0)", "critical", "0m",
                         f"GPU XID error under model {w.name} in {env}",
                         f"GPU {{{{ $labels.gpu }}}} at {{{{ $labels.instance }}}} ({where}), used by model {w.name} "
                         f"(environment {env}), reported XID {{{{ $value }}}} in the last {XID_WINDOW}: the GPU may "
                         "need a reset.", value="79")
        self.case(ann, "HxpcGpuXidError", labels, "critical", [(f"{vm.DCGM_XID_ERRORS}{ds}", "0x5 79x20")],
                  [(f"{vm.DCGM_XID_ERRORS}{ds}", "79x25")])  # an XID from before the window: no page
        ann = self.alert(g, labels, "HxpcGpuMemoryNearlyFull", f"max by ({per}) ({REC_GPU_MEM}{s}) > {num(mem_full)}",
                         "warning", "15m", f"GPU memory nearly full under model {w.name} in {env}",
                         f"GPU {{{{ $labels.gpu }}}} at {{{{ $labels.instance }}}} ({where}), used by model {w.name} "
                         f"(environment {env}), has had more than {mem_full:.0%} of its memory in use for 15 minutes.")
        used, free, reserved = (f"{vm.DCGM_FB_USED}{ds}", f"{vm.DCGM_FB_FREE}{ds}", f"{vm.DCGM_FB_RESERVED}{ds}")
        # fires only when reserved memory counts as used: free is 90% of the headroom, reserved four times it
        headroom = 80000 * (1 - mem_full)
        self.case(ann, "HxpcGpuMemoryNearlyFull", labels, "warning",
                  [(used, f"{num(80000 - 4.9 * headroom)}x25"), (free, f"{num(0.9 * headroom)}x25"),
                   (reserved, f"{num(4 * headroom)}x25")],
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
                            "expr": ratio(f"sum by ({by}) (rate({req}{s_err}[{window}]))",
                                          f"sum by ({by}) (rate({req}{s}[{window}]))")})
        budget = slo_error_budget(slo)
        for window in ("1h", "6h"):
            g.rules.append({"record": rec_slo_burn(window), "expr": f"{rec_slo_ratio(window)}{s} / {num(budget)}"})
        inst = {**o, "instance": self.instance(w)}
        bad, good = satisfy(slo.errors_selector)
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
            bad_share = (usable[0][0] * budget + 1) / 2
            self.case(ann, name, o, severity,
                      [(ok_series, f"0+{num(100 * (1 - bad_share))}x40"), (bad_series, f"0+{num(100 * bad_share)}x40")],
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
        self.case(ann, "HxpcLatencyP99High", o, "warning", histogram(bucket, inst, edges, slow=True, above=limit),
                  histogram(bucket, inst, edges, slow=False, above=limit))


def rule_groups(stack: ResolvedStack, platform: Platform) -> tuple[list[dict[str, Any]], list[Case]]:
    """The `hxpc.<workload>` rule groups for `platform`, in workload name order, and their alerts' test cases."""
    builder = _RuleBuilder(stack, platform)
    for w in scraped(stack):
        builder.workload(w)
    groups = [{"name": g.name, "rules": g.rules} for g in builder.groups]
    return groups, builder.cases

