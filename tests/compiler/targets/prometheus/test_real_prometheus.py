"""hxpc's generated monitoring on a real Prometheus, scraping exporters that expose what real servers expose.

One stack has a model for every vLLM release in tests/data/metrics/ (plus one with two data-parallel engines),
GPU hosts behind both dcgm-exporter lines, and a service with an SLO. It is compiled as a user would; Debian's
Prometheus runs with the compiled scrape config (retargeted to fake exporters built from the metric lists, which
refuse series a release never exports) and the compiled rules, with `for:` shortened to FOR and the XID window to
XID_WINDOW. Then, in order: nothing fires while the servers are idle; with ordinary traffic every target is up,
every rule healthy, every recording rule non-empty, no alert pending, and every dashboard query has data (panels
that say "Not available" exactly for the releases that export no failure signal); with bad data injected every
matching alert goes pending or firing and nothing else does; restarts fire HxpcTargetFlapping, a dead scrape
HxpcTargetDown; an XID pages and then resolves though DCGM keeps reporting it. What each release can signal is
read from its metric list, not from hxpc's catalogue, so a wrong catalogue fails here.
A second Prometheus checks the kubernetes flavour: ServiceMonitors (as the operator turns them into scrape jobs)
and the PrometheusRule, with the GPU operator's dcgm-exporter labelling series with the pod they belong to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_tool
from promserver import (
    FakeExporter,
    MetricsList,
    MetricSpec,
    PromServer,
    load_metrics,
    metrics_files,
    start_prometheus,
)

from hxpc.compiler.compile import compile_env
from hxpc.compiler.pipeline import resolve_env
from hxpc.diagnostics import Diagnostic
from hxpc.sources import FileSources

FOR = "2s"  # every alert's `for:` in these tests
XID_WINDOW = "25s"  # how long an XID pages here (15m in production)
SETTLE = 90.0  # how long an expected change may take on a loaded 2-core machine
LISTS = [load_metrics(p) for p in metrics_files()]
VLLM = [m for m in LISTS if m.exporter == "vllm"]
DCGM = [m for m in LISTS if m.exporter == "dcgm-exporter"]


def model_name(spec: MetricsList) -> str:
    return "vllm-" + spec.version.replace(".", "-") + ("-dp2" if spec.stem.endswith("-dp2") else "")


def data_parallel(spec: MetricsList) -> MetricsList:
    """`spec` as a server with two data-parallel engines: each `engine`-labelled series once per engine."""
    metrics = {name: dataclasses.replace(m, labels={**m.labels, "engine": ["0", "1"]}) if "engine" in m.labels else m
               for name, m in spec.metrics.items()}
    return dataclasses.replace(spec, metrics=metrics, path=spec.path.with_name(f"{spec.stem}-dp2.yaml"))


def failure_signals(spec: MetricsList) -> set[str]:
    """The failed-request signals a release's /metrics has, read from its list: HTTP 5xx, engine errors."""
    found = set()
    if "http_requests_total" in spec.metrics:
        found.add("http_5xx")
    if "error" in spec.metrics["vllm:request_success_total"].labels["finished_reason"]:
        found.add("engine_error")
    return found


# a service with an SLO, exporting what a typical instrumented HTTP server does
GATEWAY = MetricsList(
    path=Path("gateway.yaml"), exporter="gateway", version="1", engine="n/a", registry="default", metrics={
        "http_requests_total": MetricSpec("http_requests_total", "counter", "Requests by status code.",
                                          {"code": ["200", "500"]}, absent_when_healthy={"code": ["500"]}),
        "http_request_duration_seconds": MetricSpec("http_request_duration_seconds", "histogram", "Latency.", {},
                                                    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)),
        "process_start_time_seconds": MetricSpec("process_start_time_seconds", "gauge", "Start time.", {}),
    })

# every release, and the newest V1 release before the engine-error signal with two engines; two models per host
MODELS: list[tuple[str, MetricsList]] = [(model_name(m), m) for m in [*VLLM, data_parallel(
    next(m for m in VLLM if m.version == "0.10.1"))]]
HOSTS = [f"gpu-{i}" for i in range((len(MODELS) + 1) // 2)]
HOST_OF = {name: HOSTS[i // 2] for i, (name, _) in enumerate(MODELS)}
GPU_OF = {name: str(i % 2) for i, (name, _) in enumerate(MODELS)}  # devices go out per host in spec order
DCGM_OF = {host: DCGM[i % len(DCGM)] for i, host in enumerate(HOSTS)}


def stack_spec() -> str:
    lines = ["apiVersion: hxpc/v1", "project: mon", "hosts:"]
    lines += [f"  {h}: {{address: {h}.test, gpus: {{count: 2, model: H100-80GB, memory: 80Gi}}}}" for h in HOSTS]
    lines += ["  app-0: {address: app-0.test}", "models:"]
    for i, (name, spec) in enumerate(MODELS):
        # the example spec's 8B model, whose size and architecture the compiler knows
        lines += [f"  {name}:", "    source: meta-llama/Llama-3.1-8B-Instruct", "    params_b: 8.0",
                  "    max_model_len: 8192", f"    image: vllm/vllm-openai:v{spec.version}",
                  f"    port: {8000 + i % 2}", f"    hosts: [{HOST_OF[name]}]"]
    lines += ["services:", "  gateway:", "    image: gateway:1", "    ports: {http: 8080}",
              "    metrics: {port: http, path: /metrics}", "    hosts: [app-0]",
              f"    depends_on: [{MODELS[0][0]}]", "    slo: {availability: 99.5, latency_p99: 500ms}",
              "monitoring: {scrape_interval: 15s}", "targets:",
              f"  systemd: {{hosts: [{', '.join([*HOSTS, 'app-0'])}]}}"]
    return "\n".join(lines) + "\n"


def compile_stack(tmp: Path, text: str, env: str = "default") -> tuple[dict[str, str], list[Diagnostic]]:
    path = tmp / "stack.yaml"
    path.write_text(text)
    bundle = compile_env(resolve_env(FileSources(str(path)), env), path.name, ["prometheus", "grafana"])
    return bundle.files, bundle.warnings


def shortened(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rule groups with every `for:` set to FOR and the XID alert's window to XID_WINDOW (test overrides)."""
    out = json.loads(json.dumps(groups))
    for group in out:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR
            if rule.get("alert") == "HxpcGpuXidError":
                rule["expr"] = rule["expr"].replace("[15m]", f"[{XID_WINDOW}]")
    return out


def dashboards(files: dict[str, str], env: str = "default") -> list[dict[str, Any]]:
    prefix = f"{env}/grafana/dashboards/"
    return [json.loads(text) for path, text in sorted(files.items()) if path.startswith(prefix)]


@dataclasses.dataclass
class Monitored:
    prom: PromServer
    files: dict[str, str]
    warnings: list[Diagnostic]
    groups: list[dict[str, Any]]
    servers: dict[str, FakeExporter]  # workload name -> its exporter
    dcgm: dict[str, FakeExporter]  # host -> its dcgm-exporter

    def recording_rules(self) -> list[dict[str, Any]]:
        return [r for g in self.groups for r in g["rules"] if "record" in r]

    def alerts(self, **labels: str) -> set[tuple[str, str]]:
        """(alertname, state) of the active alerts whose labels include `labels`."""
        return {(a["labels"]["alertname"], a["state"]) for a in self.prom.alerts()
                if all(a["labels"].get(k) == v for k, v in labels.items())}

    def alert_labels(self, **labels: str) -> list[dict[str, str]]:
        return [a["labels"] for a in self.prom.alerts() if all(a["labels"].get(k) == v for k, v in labels.items())]


def _start(tmp: Path) -> Iterator[Monitored]:
    files, warnings = compile_stack(tmp, stack_spec())
    groups = shortened(yaml.safe_load(files["default/prometheus/rules.yaml"])["groups"])
    rules = tmp / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    servers = {name: FakeExporter(spec, idle=True) for name, spec in MODELS}
    servers["gateway"] = FakeExporter(GATEWAY, idle=True)
    dcgm = {host: FakeExporter(spec) for host, spec in DCGM_OF.items()}
    started = [*servers.values(), *dcgm.values()]
    try:
        for exporter in started:
            exporter.start()
        config = yaml.safe_load(files["default/prometheus/scrape_configs.yaml"])
        for job in config["scrape_configs"]:  # each static target -> the exporter standing in for it
            for static in job["static_configs"]:
                labels = static["labels"]
                fake = dcgm[labels["host"]] if job["job_name"] == "mon-default-dcgm" else \
                    servers[labels.get("model") or labels["service"]]
                static["targets"] = [fake.address]
        prom = start_prometheus(tmp / "prom", yaml.safe_dump(config), [rules])
        try:
            yield Monitored(prom, files, warnings, groups, servers, dcgm)
        finally:
            prom.stop()
    finally:
        for exporter in started:
            exporter.stop()


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    require_tool("prometheus")
    yield from _start(tmp_path_factory.mktemp("stack"))


def evaluated(m: Monitored, times: int = 3) -> None:
    """Wait until every rule group has been evaluated `times` more times."""
    def stamps() -> dict[str, str]:
        return {g["name"]: g["lastEvaluation"] for g in m.prom.rule_groups()}

    for _ in range(times):
        before = stamps()

        def moved(before: dict[str, str] = before) -> bool:
            return all(v != before.get(k) and not v.startswith("0001") for k, v in stamps().items())

        m.prom.wait_until(moved, SETTLE, what="a rule evaluation")


def non_empty(m: Monitored, expr: str) -> bool:
    return bool(m.prom.query(expr.replace("$__rate_interval", "1m")))


# ------------------------------------------------------------------------------------------------ compile


def test_compile_warns_for_every_model_whose_release_cannot_show_failures(monitored: Monitored) -> None:
    silent = {name for name, spec in MODELS if not failure_signals(spec)}
    assert silent, "the catalogue covers releases without a failure signal"
    warned = {d.message.split("`")[1] for d in monitored.warnings
              if d.code == "HX406" and "failed requests are not monitored" in d.message}
    assert warned == silent
    lines = stack_spec().splitlines()
    for d in monitored.warnings:  # each points at the model's image
        assert d.severity == "warning" and d.span is not None and d.span.file.endswith("stack.yaml")
        assert lines[d.span.line - 1].strip().startswith("image: vllm/vllm-openai:v"), d
    # and no alert that could never fire: the failing-requests alert exists exactly where a signal exists
    failing = {r["labels"]["model"] for g in monitored.groups for r in g["rules"]
               if r.get("alert") == "HxpcVllmRequestsFailing"}
    assert failing == {name for name, spec in MODELS if failure_signals(spec)}


# ------------------------------------------------------------------------------------------------ idle, healthy


def test_nothing_fires_while_the_servers_are_idle(monitored: Monitored) -> None:
    monitored.prom.wait_for_targets_up(SETTLE)
    evaluated(monitored)
    assert monitored.alerts() == set()
    assert all(r["health"] == "ok" for r in monitored.prom.rules()), monitored.prom.rules()


@pytest.fixture(scope="module")
def healthy(monitored: Monitored) -> Monitored:
    for server in monitored.servers.values():
        server.serve_traffic()
    monitored.prom.wait_for_targets_up(SETTLE)
    exprs = [r["expr"] for r in monitored.recording_rules()]
    with contextlib.suppress(TimeoutError):  # the tests below say what stayed empty; this gives rates samples
        monitored.prom.wait_until(lambda: all(non_empty(monitored, e) for e in exprs), SETTLE,
                                  what="every recording rule to record something")
    evaluated(monitored)
    return monitored


def test_every_target_up_and_every_rule_healthy(healthy: Monitored) -> None:
    targets = healthy.prom.targets()
    assert len(targets) == len(MODELS) + 1 + len(HOSTS)
    assert all(t["health"] == "up" for t in targets), [t["lastError"] for t in targets]
    rules = healthy.prom.rules()
    assert len(rules) == sum(len(g["rules"]) for g in healthy.groups)
    assert all(r["health"] == "ok" and not r.get("lastError") for r in rules), [r for r in rules if r["health"] != "ok"]


def test_every_recording_rule_records_something(healthy: Monitored) -> None:
    empty = [(r["record"], r.get("labels")) for r in healthy.recording_rules() if not non_empty(healthy, r["expr"])]
    assert not empty


def test_no_alert_on_healthy_data(healthy: Monitored) -> None:
    evaluated(healthy, 2)
    assert healthy.alerts() == set()


def test_data_parallel_engines_are_summed_not_split(healthy: Monitored) -> None:
    (dp,) = [name for name, _ in MODELS if name.endswith("-dp2")]
    single = dp.removesuffix("-dp2")  # the same release with one engine, started at the same moment
    for record in ("model:vllm_requests:rate5m", "model:vllm_generation_tokens:rate5m"):
        (two,) = healthy.prom.query(f'{record}{{model="{dp}"}}')
        one = healthy.prom.query_value(f'{record}{{model="{single}"}}')
        assert "engine" not in two["metric"] and one
        # twice the single engine's (scrape offsets blur a young rate; one engine's share would be about 1)
        assert 1.6 < two["value"] / one < 2.4, (record, two["value"], one)


def test_every_dashboard_panel_shows_data_or_says_it_cannot(healthy: Monitored) -> None:
    unavailable = []
    for board in dashboards(healthy.files):
        for panel in board["panels"]:
            if panel["type"] == "text":
                unavailable.append((board["title"].rsplit(" ", 1)[-1], panel["title"]))
                assert panel["options"]["content"].startswith("**Not available for vLLM < 0.8.5.**")
                continue
            for target in panel["targets"]:
                assert non_empty(healthy, target["expr"]), (board["title"], panel["title"], target["expr"])
    assert sorted(unavailable) == sorted((name, "Failed requests") for name, spec in MODELS
                                         if not failure_signals(spec))
    overview = next(b for b in dashboards(healthy.files) if b["title"].endswith("overview"))
    errors = next(p for p in overview["panels"] if p["title"] == "Error ratio")
    lines = {(r["metric"].get("model"), r["metric"].get("signal")) for t in errors["targets"]
             for r in healthy.prom.query(t["expr"])}
    assert lines >= {(name, s) for name, spec in MODELS for s in failure_signals(spec)}
    assert all(name in errors["description"] for name, spec in MODELS if not failure_signals(spec))


# ------------------------------------------------------------------------------------------------ bad data


def expected_alerts(name: str, spec: MetricsList) -> set[tuple[str, str]]:
    """(alertname, signal or gpu) of what the bad data injected into model `name` must fire."""
    found = {("HxpcVllmQueueBacklog", ""), ("HxpcVllmKvCacheNearlyFull", ""), ("HxpcVllmTimeToFirstTokenHigh", ""),
             ("HxpcVllmKvCacheSaturatedQueueing", "")}
    found |= {("HxpcVllmRequestsFailing", s) for s in failure_signals(spec)}
    gpu = GPU_OF[name]
    if gpu == "0":  # GPU 0 of each host runs hot and idles while its model queues
        found |= {("HxpcGpuTemperatureHigh", gpu), ("HxpcGpuIdleWhileQueued", "")}
    else:  # GPU 1 reports an XID and runs out of memory
        found |= {("HxpcGpuXidError", gpu), ("HxpcGpuMemoryNearlyFull", gpu)}
    return found


def fill_memory(dcgm: FakeExporter, gpu: str, threshold: float) -> None:
    """Memory in use just over `threshold`; where the exporter has FB_RESERVED, only counting it gets there."""
    total = 81920.0
    headroom = total * (1 - threshold)
    if "DCGM_FI_DEV_FB_RESERVED" in dcgm.spec.metrics:
        free, reserved = 0.9 * headroom, 4 * headroom
        dcgm.set("DCGM_FI_DEV_FB_RESERVED", reserved, gpu=gpu)
    else:
        free, reserved = 0.5 * headroom, 0.0
    dcgm.set("DCGM_FI_DEV_FB_FREE", free, gpu=gpu)
    dcgm.set("DCGM_FI_DEV_FB_USED", total - free - reserved, gpu=gpu)


@pytest.fixture(scope="module")
def bad(healthy: Monitored) -> Monitored:
    for name, spec in MODELS:
        server = healthy.servers[name]
        if "http_5xx" in failure_signals(spec):
            server.rate("http_requests_total", 5.0, status="5xx", handler="/v1/chat/completions")
        if "engine_error" in failure_signals(spec):
            server.rate("vllm:request_success_total", 5.0, finished_reason="error")
        kv = "vllm:kv_cache_usage_perc" if "vllm:kv_cache_usage_perc" in spec.metrics else "vllm:gpu_cache_usage_perc"
        server.set(kv, 1.0)
        server.set("vllm:num_requests_waiting", 25 if not name.endswith("-dp2") else 6)  # 6 at each engine: 12
        server.rate("vllm:time_to_first_token_seconds", 3.0, observe=8.0)
    for dcgm in healthy.dcgm.values():
        dcgm.set("DCGM_FI_DEV_GPU_TEMP", 92, gpu="0")
        dcgm.set("DCGM_FI_DEV_GPU_UTIL", 2, gpu="0")
        dcgm.set("DCGM_FI_DEV_XID_ERRORS", 79, gpu="1")
        fill_memory(dcgm, "1", 0.95)  # gpu_memory_utilization 0.9 + 5%
    gateway = healthy.servers["gateway"]
    gateway.rate("http_requests_total", 5.0, code="500")
    gateway.rate("http_request_duration_seconds", 3.0, observe=2.0)
    return healthy


def active(m: Monitored, name: str) -> set[tuple[str, str]]:
    return {(a["alertname"], a.get("signal") or a.get("gpu", "")) for a in m.alert_labels(model=name)}


@pytest.mark.parametrize("name, spec", MODELS, ids=[n for n, _ in MODELS])
def test_bad_data_fires_exactly_the_matching_alerts(bad: Monitored, name: str, spec: MetricsList) -> None:
    expected = expected_alerts(name, spec)
    bad.prom.wait_until(lambda: expected <= active(bad, name), SETTLE, what=f"{sorted(expected)} for {name}")
    evaluated(bad, 2)
    assert active(bad, name) == expected
    assert {state for _, state in bad.alerts(model=name)} <= {"pending", "firing"}


def test_bad_data_burns_the_gateway_error_budget(bad: Monitored) -> None:
    expected = {"HxpcErrorBudgetFastBurn", "HxpcErrorBudgetSlowBurn", "HxpcLatencyP99High"}
    bad.prom.wait_until(lambda: expected <= {a for a, _ in bad.alerts(service="gateway")}, SETTLE,
                        what=str(expected))
    assert {a for a, _ in bad.alerts(service="gateway")} == expected


def test_an_xid_pages_then_resolves_though_dcgm_keeps_reporting_it(bad: Monitored) -> None:
    xid_models = [name for name, _ in MODELS if GPU_OF[name] == "1"]
    bad.prom.wait_until(lambda: all(("HxpcGpuXidError", "1") in active(bad, n) for n in xid_models), SETTLE,
                        what="the XID alerts")
    bad.prom.wait_until(lambda: not any(a["alertname"] == "HxpcGpuXidError" for a in bad.alert_labels()), SETTLE,
                        what=f"the XID alerts to resolve after {XID_WINDOW}")
    for name in xid_models:  # the exporter still says 79, and so does the recorded series
        assert bad.prom.query_value(f'model:dcgm_xid_errors:last{{model="{name}"}}') == 79


# ------------------------------------------------------------------------------------------------ restarts, down


@pytest.fixture(scope="module")
def restarted(bad: Monitored) -> Monitored:
    servers = list(bad.servers.values())
    for _ in range(3):  # HxpcTargetFlapping: more than two restarts in its window
        seen = [s.scrapes for s in servers]
        for server in servers:
            server.restart()

        def scraped(seen: list[int] = seen) -> bool:
            return all(server.scrapes >= n + 2 for server, n in zip(servers, seen, strict=True))

        bad.prom.wait_until(scraped, SETTLE, what="two scrapes of every restarted server")
    return bad


WORKLOADS = [*(n for n, _ in MODELS), "gateway"]


def wait_for_alert(m: Monitored, alert: str, workload: str) -> None:
    labels = {"model": workload} if workload != "gateway" else {"service": workload}
    m.prom.wait_until(lambda: alert in {a for a, _ in m.alerts(**labels)}, SETTLE, what=f"{alert} for {workload}")


@pytest.mark.parametrize("name", WORKLOADS)
def test_restarts_fire_flapping(restarted: Monitored, name: str) -> None:
    wait_for_alert(restarted, "HxpcTargetFlapping", name)


@pytest.fixture(scope="module")
def down(restarted: Monitored) -> Monitored:
    for server in restarted.servers.values():
        server.set_available(False)
    return restarted


@pytest.mark.parametrize("name", WORKLOADS)
def test_a_dead_scrape_fires_target_down(down: Monitored, name: str) -> None:
    wait_for_alert(down, "HxpcTargetDown", name)


# ------------------------------------------------------------------------------------------------ kubernetes

KUBE_NAMESPACE = "hxp-prod"  # where the GPU operator's exporter (tests/data/metrics, kubernetes_labels) puts the pod
KUBE_MODEL = "vllm-llama-8b"  # ... and the model whose pod it names
KUBE_SPEC = f"""\
apiVersion: hxpc/v1
project: hxp
hosts:
  gpu-01: {{gpus: {{count: 2, model: H100-80GB, memory: 80Gi}}}}
models:
  {KUBE_MODEL}:
    source: meta-llama/Llama-3.1-8B-Instruct
    params_b: 8.0
    max_model_len: 8192
    image: vllm/vllm-openai:v0.10.1
    hosts: [gpu-01]
monitoring: {{scrape_interval: 15s}}
targets:
  kubernetes: {{namespace: {KUBE_NAMESPACE}}}
"""


def operator_job(monitor: dict[str, Any], address: str, target: dict[str, str]) -> dict[str, Any]:
    """The scrape job prometheus-operator makes of a ServiceMonitor's endpoint, for one endpoint of its Service.

    `target` holds what Kubernetes service discovery and the operator's own relabelling give the target
    (namespace, service, pod, container, endpoint, job, and the service name as a `__meta_` label).
    """
    endpoint = monitor["spec"]["endpoints"][0]
    snake = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    relabel = [{snake.get(k, k): v for k, v in r.items()} for r in endpoint.get("relabelings", [])]
    meta = monitor["metadata"]
    return {"job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/0", "metrics_path": endpoint["path"],
            "honor_labels": bool(endpoint.get("honorLabels", False)), "relabel_configs": relabel,
            "static_configs": [{"targets": [address], "labels": target}]}


def pod_target(service: str, namespace: str, pod: str, container: str, endpoint: str) -> dict[str, str]:
    return {"__meta_kubernetes_service_name": service, "namespace": namespace, "service": service, "pod": pod,
            "container": container, "endpoint": endpoint, "job": service}


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("kube")
    files, warnings = compile_stack(tmp, KUBE_SPEC)
    monitors = {m["metadata"]["name"]: m for m in yaml.safe_load_all(files["default/prometheus/servicemonitors.yaml"])}
    groups = shortened([g for doc in yaml.safe_load_all(files["default/prometheus/prometheusrule.yaml"])
                        for g in doc["spec"]["groups"]])
    rules = tmp / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    model, gpus = FakeExporter("vllm-0.10.1"), FakeExporter("dcgm-exporter-4.5.3-4.8.2", kubernetes=True)
    with model, gpus:
        dcgm_target = pod_target("nvidia-dcgm-exporter", "gpu-operator", "nvidia-dcgm-exporter-7xk2p",
                                 "nvidia-dcgm-exporter", "gpu-metrics")
        jobs = [operator_job(monitors[KUBE_MODEL], model.address,
                             pod_target(KUBE_MODEL, KUBE_NAMESPACE, gpus.spec.kubernetes_labels["pod"][0], "vllm",
                                        "http")),
                operator_job(monitors["hxp-dcgm-exporter"], gpus.address, dcgm_target),
                # what the same exporter looks like to a ServiceMonitor without honorLabels
                {**operator_job(monitors["hxp-dcgm-exporter"], gpus.address, {**dcgm_target, "job": "no-honor"}),
                 "job_name": "dcgm-without-honor-labels", "honor_labels": False}]
        prom = start_prometheus(tmp / "prom", yaml.safe_dump({"scrape_configs": jobs}), [rules])
        try:
            yield Monitored(prom, files, warnings, groups, {KUBE_MODEL: model}, {"gpu-01": gpus})
        finally:
            prom.stop()


def test_kubernetes_rules_record_the_pods_gpus_and_stay_quiet(kube: Monitored) -> None:
    assert len(kube.prom.wait_for_targets_up(SETTLE)) == 3
    # the series each rule records, not only its expression: a rule records at its next evaluation
    exprs = [e for r in kube.recording_rules() for e in (r["expr"], r["record"])]
    kube.prom.wait_until(lambda: all(non_empty(kube, e) for e in exprs), SETTLE, what="every recording rule")
    gpu = kube.prom.query(f'model:dcgm_gpu_temperature:celsius{{model="{KUBE_MODEL}"}}')
    assert {r["metric"]["gpu"] for r in gpu} == {"0", "1"}  # from the honorLabels job only
    assert all(r["metric"]["namespace"] == KUBE_NAMESPACE for r in gpu)
    without = kube.prom.query('DCGM_FI_DEV_GPU_TEMP{job="no-honor"}')
    assert without and all(r["metric"]["exported_namespace"] == KUBE_NAMESPACE and
                           r["metric"]["namespace"] == "gpu-operator" for r in without)
    evaluated(kube, 2)
    assert kube.alerts() == set()
    for board in dashboards(kube.files):
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                assert non_empty(kube, target["expr"]), (board["title"], panel["title"], target["expr"])


def test_kubernetes_gpu_alerts_name_the_model(kube: Monitored) -> None:
    gpus = kube.dcgm["gpu-01"]
    gpus.set("DCGM_FI_DEV_GPU_TEMP", 95, gpu="0")
    gpus.set("DCGM_FI_DEV_XID_ERRORS", 48, gpu="1")
    expected = {("HxpcGpuTemperatureHigh", "0"), ("HxpcGpuXidError", "1")}
    kube.prom.wait_until(lambda: expected <= active(kube, KUBE_MODEL), SETTLE, what=str(expected))
    (xid,) = [a for a in kube.prom.alerts() if a["labels"]["alertname"] == "HxpcGpuXidError"]
    assert "reported XID 48" in xid["annotations"]["description"]
