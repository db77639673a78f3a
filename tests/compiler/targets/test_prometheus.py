"""The prometheus target: promtool accepts the rules and config, the generated rule tests pass and catch broken
alerts, scrape targets follow the placement, and monitoring.rules is checked."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, require_tool

from hxpc.compiler.compile import compile_env
from hxpc.compiler.pipeline import environments, resolve_env
from hxpc.compiler.targets.prometheus import vllm_metrics as vm
from hxpc.compiler.targets.prometheus.userrules import promql_problem
from hxpc.errors import SpecError
from hxpc.sources import FileSources

SPEC = REPO / "specs" / "hxp.yaml"
ENVS = environments(FileSources(str(SPEC)))


def compiled(spec: Path, env: str) -> dict[str, str]:
    files = compile_env(resolve_env(FileSources(str(spec)), env), spec.name, ["prometheus"]).files
    prefix = f"{env}/prometheus/"
    return {k.removeprefix(prefix): v for k, v in files.items()}


@pytest.fixture(scope="module", params=ENVS)
def env_files(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    return request.param, compiled(SPEC, request.param)


def write_spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stack.yaml"
    path.write_text(text)
    return path


BASE = """\
apiVersion: hxpc/v1
project: demo
hosts:
  gpu-a: {{address: "ops@gpu-a.lan:2222", gpus: {{count: 4, model: L40S, memory: 48Gi}}}}
  app-a: {{address: local}}
models:
  small:
    source: org/small
    params_b: 1
    architecture: {{layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}}
    tensor_parallel: 2
    replicas: 2
    port: 9000
    image: {image}
    hosts: [gpu-a]
services:
  web:
    image: web:1
    ports: {{http: 8080, admin: 9100}}
    metrics: {{port: admin}}
    replicas: 2
    hosts: [app-a]
    slo: {slo}
monitoring:
{monitoring}
targets:
  systemd: {{hosts: [gpu-a, app-a]}}
"""


def custom(tmp_path: Path, *, image: str = "vllm/vllm-openai:v0.10.1", slo: str = "{availability: 99.5}",
           monitoring: str = "  runbooks: https://rb.example/") -> dict[str, str]:
    return compiled(write_spec(tmp_path, BASE.format(image=image, slo=slo, monitoring=monitoring)), "default")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def alerts(rules_text: str) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(rules_text)["groups"] for r in g["rules"] if "alert" in r]


# ---------------------------------------------------------------- promtool


def test_every_rules_file_passes_promtool_check(env_files: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    _, files = env_files
    (tmp_path / "rules.yaml").write_text(files["rules.yaml"])
    paths = ["rules.yaml"]
    if "prometheusrule.yaml" in files:
        groups = [g for doc in yaml.safe_load_all(files["prometheusrule.yaml"]) for g in doc["spec"]["groups"]]
        (tmp_path / "k8s.yaml").write_text(yaml.safe_dump({"groups": groups}))
        paths.append("k8s.yaml")
    result = promtool("check", "rules", *paths, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_rule_tests_pass(env_files: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    _, files = env_files
    for name in ("rules.yaml", "rules.test.yaml"):
        (tmp_path / name).write_text(files[name])
    result = promtool("test", "rules", "rules.test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load(files["rules.test.yaml"])["tests"]
    # every alert of every workload is expected to fire in one test and to stay silent in another
    expected = sorted((a["alert"], a["labels"].get("service") or a["labels"]["model"])
                      for a in alerts(files["rules.yaml"]))
    fired = sorted((t["alert_rule_test"][0]["alertname"], e["exp_labels"].get("service") or e["exp_labels"]["model"])
                   for t in tests for e in t["alert_rule_test"][0]["exp_alerts"])
    assert fired == expected
    assert sum(1 for t in tests if t["alert_rule_test"][0]["exp_alerts"] == []) == len({a for a, _ in expected})


def _with_alert_exprs(rules_text: str, expr: str) -> str:
    doc = yaml.safe_load(rules_text)
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["expr"] = expr
    return yaml.safe_dump(doc)


@pytest.mark.parametrize("broken, fails", [("vector(1) < 0", "fires"), ("vector(1)", "stays silent")])
def test_rule_tests_catch_alerts_that_never_or_always_fire(tmp_path: Path, broken: str, fails: str) -> None:
    files = compiled(SPEC, "prod")
    (tmp_path / "rules.yaml").write_text(_with_alert_exprs(files["rules.yaml"], broken))
    (tmp_path / "rules.test.yaml").write_text(files["rules.test.yaml"])
    result = promtool("test", "rules", "rules.test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    # each of those tests fails, for every alert
    expected = [t for t in yaml.safe_load(files["rules.test.yaml"])["tests"] if t["name"].endswith(fails)]
    assert expected
    for test in expected:
        assert f"name: {test['name']}," in result.stderr


@pytest.mark.parametrize("env", [e for e in ENVS if e in ("dev", "prod")])
def test_scrape_configs_pass_promtool_check_config(env: str, tmp_path: Path) -> None:
    files = compiled(SPEC, env)
    (tmp_path / "rules.yaml").write_text(files["rules.yaml"])
    # promtool 2.42 has no `scrape_config_files:` (2.43+): inline the list
    config = {"global": {"scrape_interval": "15s"}, "rule_files": ["rules.yaml"],
              **yaml.safe_load(files["scrape_configs.yaml"])}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_custom_spec_rules_and_tests_pass(tmp_path: Path) -> None:
    files = custom(tmp_path, slo='{availability: 90, latency_p99: 250ms, requests_metric: web_requests_total, '
                                 'errors_selector: "outcome!=\\"ok\\"", latency_metric: web_latency_seconds}')
    for name in ("rules.yaml", "rules.test.yaml"):
        (tmp_path / name).write_text(files[name])
    assert promtool("check", "rules", "rules.yaml", cwd=tmp_path).returncode == 0
    result = promtool("test", "rules", "rules.test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    text = files["rules.yaml"]
    assert 'web_requests_total{project=\\"demo\\",env=\\"default\\",service=\\"web\\",outcome!=\\"ok\\"}' in text
    assert "web_latency_seconds_bucket" in text
    # 14.4 x a 10% budget is over 1: that window pair can never fire and is left out; 6 x 10% is kept
    fast = next(a for a in alerts(text) if a["alert"] == "HxpcErrorBudgetFastBurn")
    assert "ratio_rate5m" not in fast["expr"] and "> 0.6 " in fast["expr"]


# ---------------------------------------------------------------- scraping


def test_systemd_scrape_targets_follow_placement() -> None:
    jobs = {j["job_name"]: j for j in yaml.safe_load(compiled(SPEC, "prod")["scrape_configs.yaml"])["scrape_configs"]}
    gateway = jobs["hxp-prod-api-gateway"]
    assert [c["targets"] for c in gateway["static_configs"]] == [
        ["app-01.internal:8080"], ["app-01.internal:8081"], ["app-01.internal:8082"]]
    assert gateway["static_configs"][1]["labels"] == {
        "project": "hxp", "env": "prod", "service": "api-gateway", "host": "app-01", "replica": "1"}
    # ssh user and port are stripped from the address
    assert jobs["hxp-prod-mixtral-8x7b"]["static_configs"][0]["targets"] == ["gpu-02.internal:8001"]
    assert jobs["hxp-prod-llama-70b"]["static_configs"][0]["labels"]["model"] == "llama-70b"
    # services without metrics are not scraped; every GPU host gets a DCGM exporter job
    assert "hxp-prod-postgres" not in jobs and "hxp-prod-redis" not in jobs
    assert [c["targets"] for c in jobs["hxp-prod-dcgm"]["static_configs"]] == [
        ["gpu-01.internal:9400"], ["gpu-02.internal:9400"]]


def test_metrics_port_uses_the_named_ports_host_port(tmp_path: Path) -> None:
    jobs = yaml.safe_load(custom(tmp_path)["scrape_configs.yaml"])["scrape_configs"]
    web = next(j for j in jobs if j["job_name"] == "demo-default-web")
    # address `local` falls back to the host's name
    assert [c["targets"] for c in web["static_configs"]] == [["app-a:9100"], ["app-a:9101"]]


def test_gpu_rules_select_the_assigned_devices() -> None:
    text = compiled(SPEC, "prod")["rules.yaml"]
    assert 'DCGM_FI_DEV_GPU_TEMP{job=\\"hxp-prod-dcgm\\",host=\\"gpu-01\\",gpu=~\\"0|1|2|3\\"}' in text
    assert 'DCGM_FI_DEV_GPU_UTIL{job=\\"hxp-prod-dcgm\\",host=\\"gpu-02\\",gpu=~\\"0|1\\"}' in text  # mixtral
    assert 'DCGM_FI_DEV_GPU_UTIL{job=\\"hxp-prod-dcgm\\",host=\\"gpu-02\\",gpu=~\\"2|3\\"}' in text  # llama-8b


def test_kubernetes_service_monitors_and_prometheus_rules() -> None:
    files = compiled(SPEC, "staging")
    assert "scrape_configs.yaml" not in files
    monitors = {d["metadata"]["name"]: d for d in yaml.safe_load_all(files["servicemonitors.yaml"])}
    assert set(monitors) == {"api-gateway", "qdrant", "llama-70b", "mixtral-8x7b", "llama-8b", "hxp-dcgm-exporter"}
    gw = monitors["api-gateway"]
    assert gw["apiVersion"] == "monitoring.coreos.com/v1" and gw["metadata"]["namespace"] == "hxp-staging"
    assert gw["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "api-gateway", "hxpc.dev/project": "hxp", "hxpc.dev/env": "staging"}
    endpoint = gw["spec"]["endpoints"][0]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert {"action": "replace", "targetLabel": "service", "replacement": "api-gateway"} in endpoint["relabelings"]
    assert monitors["llama-8b"]["spec"]["endpoints"][0]["port"] == "http"
    rules = list(yaml.safe_load_all(files["prometheusrule.yaml"]))
    assert all(r["kind"] == "PrometheusRule" and r["metadata"]["labels"]["hxpc.dev/env"] == "staging" for r in rules)
    assert [g["name"] for r in rules for g in r["spec"]["groups"]] == [
        g["name"] for g in yaml.safe_load(files["rules.yaml"])["groups"]]
    assert 'pod=~\\"llama-70b-[a-z0-9]+-[a-z0-9]+|llama-70b-[0-9]+\\"' in files["prometheusrule.yaml"]


def test_yaml_files_start_with_the_header(env_files: tuple[str, dict[str, str]]) -> None:
    for text in env_files[1].values():
        assert text.startswith("# Generated by hxpc from hxp.yaml")


# ---------------------------------------------------------------- alerts


def test_every_alert_has_severity_summary_description_and_runbook(env_files: tuple[str, dict[str, str]]) -> None:
    env, files = env_files
    found = alerts(files["rules.yaml"])
    assert found
    for a in found:
        assert a["labels"]["severity"] in ("critical", "warning")
        name = a["labels"].get("service") or a["labels"]["model"]
        for key in ("summary", "description"):
            assert name in a["annotations"][key] and env in a["annotations"][key]
        # the host: the instance label, or the placement / namespace
        assert re.search(r"\$labels\.instance|host|namespace|compose", a["annotations"]["description"])
        assert a["annotations"]["runbook_url"] == f"https://runbooks.example.com/hxp/{a['alert']}"


def test_alert_set_for_models_and_slo_services() -> None:
    found = {(a["alert"], a["labels"].get("service") or a["labels"]["model"]) for a in alerts(
        compiled(SPEC, "prod")["rules.yaml"])}
    for alert in ("HxpcTargetDown", "HxpcTargetFlapping", "HxpcVllmQueueBacklog", "HxpcVllmKvCacheNearlyFull",
                  "HxpcVllmTimeToFirstTokenHigh", "HxpcGpuXidError",
                  "HxpcGpuMemoryNearlyFull", "HxpcGpuTemperatureHigh", "HxpcGpuIdleWhileQueued"):
        assert (alert, "llama-70b") in found
    assert ("HxpcVllmRequestsFailing", "llama-70b") not in found  # vLLM 0.6.3 counts no failed request
    for alert in ("HxpcTargetDown", "HxpcErrorBudgetFastBurn", "HxpcErrorBudgetSlowBurn", "HxpcLatencyP99High"):
        assert (alert, "api-gateway") in found
    assert ("HxpcErrorBudgetFastBurn", "qdrant") not in found  # no slo


def test_slo_recording_rules_and_burn_thresholds() -> None:
    groups = {g["name"]: g for g in yaml.safe_load(compiled(SPEC, "prod")["rules.yaml"])["groups"]}
    rules = groups["hxpc.api-gateway"]["rules"]
    records = {r["record"] for r in rules if "record" in r}
    assert {f"service:slo_errors:ratio_rate{w}" for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")} <= records
    by_name = {r["alert"]: r for r in rules if "alert" in r}
    fast, slow = by_name["HxpcErrorBudgetFastBurn"]["expr"], by_name["HxpcErrorBudgetSlowBurn"]["expr"]
    assert "ratio_rate1h" in fast and "ratio_rate5m" in fast and "> 0.0144" in fast and "> 0.006 " in fast
    assert "ratio_rate1d" in slow and "ratio_rate2h" in slow and "> 0.003 " in slow and "ratio_rate3d" in slow
    assert by_name["HxpcErrorBudgetFastBurn"]["labels"]["severity"] == "critical"
    assert by_name["HxpcErrorBudgetSlowBurn"]["labels"]["severity"] == "warning"
    assert by_name["HxpcLatencyP99High"]["expr"].endswith("> 0.5")


def test_no_runbook_url_without_runbooks_and_no_alerts_when_disabled(tmp_path: Path) -> None:
    assert all("runbook_url" not in a["annotations"] for a in alerts(custom(tmp_path, monitoring="  alerts: true")
                                                                     ["rules.yaml"]))
    files = custom(tmp_path, monitoring="  alerts: false")
    assert alerts(files["rules.yaml"]) == []
    assert yaml.safe_load(files["rules.test.yaml"])["tests"] == []
    assert any("record" in r for g in yaml.safe_load(files["rules.yaml"])["groups"] for r in g["rules"])


# ---------------------------------------------------------------- vLLM catalogue


@pytest.mark.parametrize("image, version", [
    ("vllm/vllm-openai:v0.6.3", (0, 6, 3)), ("vllm/vllm-openai:0.9.2", (0, 9, 2)),
    ("registry:5000/vllm:v0.10.1.1", (0, 10, 1, 1)), ("vllm/vllm-openai:latest", None),
    ("vllm/vllm-openai", None), ("vllm/vllm-openai@sha256:abc", None)])
def test_image_version(image: str, version: tuple[int, ...] | None) -> None:
    assert vm.image_version(image) == version
    assert vm.for_image(image).version == (version or vm.NEWEST)
    assert bool(vm.for_image(image).tag_note) == (version is None)


def test_kv_cache_metric_follows_the_rename(tmp_path: Path) -> None:
    assert vm.for_image("vllm/vllm-openai:v0.9.1").kv_cache_usage == "vllm:gpu_cache_usage_perc"
    assert vm.for_image("vllm/vllm-openai:v0.9.2").kv_cache_usage == "vllm:kv_cache_usage_perc"
    assert "vllm:gpu_cache_usage_perc" in compiled(SPEC, "prod")["rules.yaml"]  # the spec pins v0.6.3
    text = custom(tmp_path, image="vllm/vllm-openai:v0.11.0")["rules.yaml"]
    assert "vllm:kv_cache_usage_perc" in text and "vllm:gpu_cache_usage_perc" not in text
    assert 'status=\\"5xx\\"' in text  # HTTP status counters on newer servers


# ---------------------------------------------------------------- monitoring.rules


GOOD_RULES = """\
  rules:
    - name: team
      rules:
        - alert: GatewaySlow
          expr: 'histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m]))) > 1'
          for: 5m
          labels: {severity: warning}
        - record: job:up:sum
          expr: sum by (job) (up)
"""


def test_monitoring_rules_pass_through(tmp_path: Path) -> None:
    files = custom(tmp_path, monitoring=GOOD_RULES)
    groups = yaml.safe_load(files["rules.yaml"])["groups"]
    assert groups[-1]["name"] == "team" and groups[-1]["rules"][1] == {"record": "job:up:sum",
                                                                       "expr": "sum by (job) (up)"}
    (tmp_path / "rules.yaml").write_text(files["rules.yaml"])
    assert promtool("check", "rules", "rules.yaml", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("rules, message", [
    ("[{rules: []}]", "needs a `name`"),
    ("[{name: x, rules: [{expr: up}]}]", "exactly one of `alert` or `record`"),
    ("[{name: x, rules: [{alert: A, expr: 'sum(rate(up[5m])'}]}]", "does not parse: unclosed left parenthesis"),
    ("[{name: x, rules: [{alert: A, expr: 'up{job=\"a}'}]}]", "unterminated quoted string"),
    ("[{name: x, rules: [{record: 'bad name', expr: up}]}]", "not a valid metric name"),
    ("[{name: x, rules: [{alert: A, expr: up, for: 5 minutes}]}]", "not a Prometheus duration"),
    ("[{name: x, rules: [{alert: A, expr: up, labels: {severity: 1}}]}]", "label names to text values"),
    ("[{name: x, rules: [{alert: A, expr: up, severity: page}]}]", "unknown key `severity`"),
    ("[{name: hxpc.web, rules: []}]", "defined twice"),
])
def test_malformed_monitoring_rules_are_hx402(tmp_path: Path, rules: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        custom(tmp_path, monitoring=f"  rules: {rules}")
    found = info.value.diagnostics
    assert any(d.code == "HX402" and message in d.message for d in found), [d.message for d in found]


def test_slo_without_metrics_is_hx403(tmp_path: Path) -> None:
    spec = BASE.format(image="vllm/vllm-openai:v0.6.3", slo="{availability: 99}", monitoring="  alerts: true")
    spec = spec.replace("    metrics: {port: admin}\n", "")
    with pytest.raises(SpecError) as info:
        compiled(write_spec(tmp_path, spec), "default")
    assert [d.code for d in info.value.diagnostics] == ["HX403"]
    assert "web" in info.value.diagnostics[0].message


def test_promql_problem() -> None:
    assert promql_problem('sum by (x) (rate(m{a="(}"}[5m]))') is None
    assert promql_problem("sum(rate(m[5m])") == "unclosed left parenthesis"
    assert promql_problem("rate(m)") == "expected type matrix in call to function 'rate', got vector"
    assert promql_problem("m]") is not None


# ---------------------------------------------------------------- determinism and speed


def test_deterministic(env_files: tuple[str, dict[str, str]]) -> None:
    env, files = env_files
    assert compiled(SPEC, env) == files


def test_a_thousand_services_compile(tmp_path: Path) -> None:
    """Scale, not speed: bench/compile.py measures time beside kustomize; a timed test only measures the load."""
    services = "".join(f"  svc-{i}:\n    image: s:1\n    ports: {{http: {10000 + i}}}\n"
                       f"    metrics: {{port: http}}\n    slo: {{availability: 99.9, latency_p99: 300ms}}\n"
                       for i in range(1000))
    spec = write_spec(tmp_path, "apiVersion: hxpc/v1\nproject: big\nhosts:\n  h: {}\nservices:\n" + services
                      + "monitoring: {}\ntargets:\n  systemd: {hosts: [h]}\n  kubernetes: {}\n")
    resolved = resolve_env(FileSources(str(spec)), "default")
    files = compile_env(resolved, "big.yaml", ["prometheus", "grafana"]).files
    assert len(yaml.safe_load(files["default/prometheus/rules.yaml"])["groups"]) == 1000


def test_compose_without_host_discovers_replicas_by_dns(tmp_path: Path) -> None:
    spec = BASE.format(image="vllm/vllm-openai:v0.6.3", slo="{availability: 99.9}", monitoring="  alerts: true")
    spec = spec.replace("  systemd: {hosts: [gpu-a, app-a]}", "  compose: {}")
    files = compiled(write_spec(tmp_path, spec), "default")
    jobs = {j["job_name"]: j for j in yaml.safe_load(files["scrape_configs.yaml"])["scrape_configs"]}
    assert jobs["demo-default-web"]["dns_sd_configs"] == [{"names": ["web"], "type": "A", "port": 9100}]
    assert {"target_label": "service", "replacement": "web"} in jobs["demo-default-web"]["relabel_configs"]
    assert "demo-default-dcgm" not in jobs  # the GPUs' host is unknown without `targets.compose.host`
    assert "DCGM_" not in files["rules.yaml"]
    for name in ("rules.yaml", "rules.test.yaml"):
        (tmp_path / name).write_text(files[name])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yaml"], **yaml.safe_load(files["scrape_configs.yaml"])}))
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    result = promtool("test", "rules", "rules.test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
