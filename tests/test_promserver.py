"""The harness of tests/promserver.py itself: a real Prometheus scraping fake exporters built from each metrics list."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tool
from promserver import (
    FakeExporter,
    MetricsList,
    PromServer,
    exporters,
    load_metrics,
    metrics_files,
    metrics_list,
    retarget,
    start_prometheus,
)

LISTS = [load_metrics(path) for path in metrics_files()]
STEMS = [m.stem for m in LISTS]
# what Prometheus adds to every scraped target
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
             "scrape_series_added"}


def require_prometheus() -> str:
    return require_tool("prometheus")


def job(stem: str) -> str:
    return f"fake-{stem}"


def scrape_config(targets: dict[str, str]) -> str:
    lines = ["scrape_configs:"]
    for name, address in targets.items():
        lines += [f"- job_name: {name}", "  static_configs:", f"  - targets: ['{address}']"]
    return "\n".join(lines) + "\n"


def a_gauge(spec: MetricsList) -> str:
    return "DCGM_FI_DEV_GPU_TEMP" if spec.exporter == "dcgm-exporter" else "vllm:num_requests_waiting"


def a_counter(spec: MetricsList) -> str:
    return "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" if spec.exporter == "dcgm-exporter" else "vllm:prompt_tokens_total"


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PromServer, dict[str, FakeExporter]]]:
    """One Prometheus scraping a fake exporter for every metrics list, every second."""
    require_prometheus()
    with exporters(*LISTS) as started:
        by_stem = {e.spec.stem: e for e in started}
        config = scrape_config({job(stem): e.address for stem, e in by_stem.items()})
        prom = start_prometheus(tmp_path_factory.mktemp("prom"), config)
        try:
            prom.wait_for_targets_up()
            yield prom, by_stem
        finally:
            prom.stop()


def test_every_list_names_its_source() -> None:
    assert {m.exporter for m in LISTS} == {"vllm", "dcgm-exporter"}
    for spec in LISTS:
        assert spec.source.get("repo") and spec.source.get("tag") and spec.source.get("files"), spec.path
        assert spec.engine in {"v0", "v1", "n/a"}, spec.path
        assert spec.metrics, spec.path


@pytest.mark.parametrize("stem", STEMS)
def test_target_is_up(scraped: tuple[PromServer, dict[str, FakeExporter]], stem: str) -> None:
    prom, _ = scraped
    [target] = [t for t in prom.targets() if t["labels"]["job"] == job(stem)]
    assert target["health"] == "up", target["lastError"]
    assert prom.query_value(f'up{{job="{job(stem)}"}}') == 1.0


@pytest.mark.parametrize("stem", STEMS)
def test_prometheus_sees_exactly_the_listed_series(scraped: tuple[PromServer, dict[str, FakeExporter]],
                                                   stem: str) -> None:
    prom, by_stem = scraped
    names = {r["metric"]["__name__"] for r in prom.query(f'count by (__name__) ({{job="{job(stem)}"}})')}
    assert names - SYNTHETIC == set(by_stem[stem].spec.names)


@pytest.mark.parametrize("stem", STEMS)
def test_an_injected_gauge_value_is_queryable(scraped: tuple[PromServer, dict[str, FakeExporter]], stem: str) -> None:
    prom, by_stem = scraped
    exporter = by_stem[stem]
    gauge = a_gauge(exporter.spec)
    exporter.set(gauge, 37.0)
    value = prom.wait_for_value(f'max({gauge}{{job="{job(stem)}"}})', lambda v: v == 37.0)
    assert value == 37.0


@pytest.mark.parametrize("stem", STEMS)
def test_a_counter_rate_is_positive(scraped: tuple[PromServer, dict[str, FakeExporter]], stem: str) -> None:
    prom, by_stem = scraped
    counter = a_counter(by_stem[stem].spec)
    rate = prom.wait_for_value(f'sum(rate({counter}{{job="{job(stem)}"}}[10s]))', lambda v: v > 0)
    assert rate > 0


def test_strict_exporter_refuses_what_the_version_does_not_export() -> None:
    v0 = FakeExporter("vllm-0.6.3")
    with pytest.raises(ValueError, match="never has finished_reason='abort'"):
        v0.rate("vllm:request_success_total", 1.0, finished_reason="abort")
    with pytest.raises(ValueError, match="does not export 'http_requests_total'"):
        v0.rate("http_requests_total", 1.0, status="5xx")
    with pytest.raises(ValueError, match="does not export 'process_start_time_seconds'"):
        v0.set("process_start_time_seconds", 1.0)
    with pytest.raises(ValueError, match="does not export 'http_requests_total'"):
        FakeExporter("vllm-0.8.4").inc("http_requests_total", status="5xx")
    with pytest.raises(ValueError, match="does not export 'vllm:kv_cache_usage_perc'"):
        FakeExporter("vllm-0.8.5").set("vllm:kv_cache_usage_perc", 1.0)
    FakeExporter("vllm-0.10.1").rate("http_requests_total", 1.0, status="5xx")  # exists from 0.8.5 on


def test_healthy_state_follows_the_list() -> None:
    v1 = FakeExporter("vllm-0.10.1")
    text = v1.render()
    assert 'finished_reason="abort"} 0.0' in text  # pre-created, never increasing
    assert 'status="5xx"' not in text  # absent until the first failure
    assert "process_start_time_seconds " in text
    assert "vllm:prompt_tokens_created{" in text
    v0 = FakeExporter("vllm-0.6.3").render()
    assert "abort" not in v0 and "process_" not in v0 and "_created" not in v0
    dcgm = FakeExporter("dcgm-exporter-4.5.3-4.8.2", kubernetes=True).render()
    assert 'DCGM_FI_DEV_XID_ERRORS{gpu="1",UUID="GPU-0b1c2d3e' in dcgm
    assert 'err_code="0",err_msg="No Error"' in dcgm and 'namespace="hxp-prod"' in dcgm


def test_an_idle_server_lacks_what_only_traffic_creates() -> None:
    v0 = FakeExporter("vllm-0.6.3", idle=True)
    idle = v0.render()
    assert "vllm:num_requests_waiting{" in idle and "vllm:prompt_tokens_total{" in idle  # after the stats log
    assert "vllm:time_to_first_token_seconds" not in idle and "vllm:request_success_total" not in idle
    before = v0.value("vllm:prompt_tokens_total")
    time.sleep(0.05)
    assert v0.value("vllm:prompt_tokens_total") == before  # nothing processed yet
    v0.serve_traffic()
    time.sleep(0.05)
    busy = v0.render()
    assert "vllm:time_to_first_token_seconds_bucket{" in busy and 'finished_reason="stop"' in busy
    assert v0.value("vllm:prompt_tokens_total") > before
    v1 = FakeExporter("vllm-0.10.1", idle=True)
    text = v1.render()
    assert "vllm:time_to_first_token_seconds_bucket{" in text  # V1 creates its series at start-up ...
    assert "http_requests_total" not in text  # ... the HTTP layer with the first request
    v1.serve_traffic()
    assert 'status="2xx"' in v1.render()


RULES = """
groups:
- name: harness
  rules:
  - record: job:http_5xx:ratio_rate10s
    expr: >
      sum by (job) (rate(http_requests_total{status="5xx"}[10s]))
      / sum by (job) (rate(http_requests_total[10s]))
  - alert: KvCacheFullAndQueueing
    expr: max by (job) (vllm:kv_cache_usage_perc) >= 1 and on (job) max by (job) (vllm:num_requests_waiting) > 10
    for: 1h
  - alert: XidError
    expr: max by (job, gpu, err_code) (DCGM_FI_DEV_XID_ERRORS) > 0
  - alert: GpuHot
    expr: max by (job, gpu) (DCGM_FI_DEV_GPU_TEMP) > 85
  - alert: Restarted
    expr: changes(process_start_time_seconds[1m]) > 0
  - alert: Down
    expr: up == 0
"""


def test_bad_data_drives_rules_and_alerts(tmp_path: Path) -> None:
    require_prometheus()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with exporters("vllm-0.10.1", "dcgm-exporter-4.5.3-4.8.2") as (vllm, dcgm):
        config = scrape_config({"vllm": vllm.address, "dcgm": dcgm.address})
        with start_prometheus(tmp_path / "prom", config, [rules]) as prom:
            prom.wait_for_targets_up()
            vllm.rate("http_requests_total", 1.0, status="2xx", handler="/v1/chat/completions")
            prom.wait_until(lambda: all(r["health"] == "ok" and r["lastEvaluation"][:4] != "0001"
                                        for r in prom.rules()), what="every rule evaluated and healthy")
            assert prom.alert_states() == {}, "no alert on healthy data"

            vllm.rate("http_requests_total", 3.0, status="5xx", handler="/v1/chat/completions")
            vllm.set("vllm:kv_cache_usage_perc", 1.0)
            vllm.set("vllm:num_requests_waiting", 25)
            dcgm.set("DCGM_FI_DEV_XID_ERRORS", 79, gpu="1")
            dcgm.set("DCGM_FI_DEV_GPU_TEMP", 92, gpu="0")

            # 3/s failing against 3 healthy series at 1/s: a ratio of 0.5 once the window has filled
            ratio = prom.wait_for_value('job:http_5xx:ratio_rate10s{job="vllm"}', lambda v: v > 0.35)
            assert ratio > 0.35
            expected = {"KvCacheFullAndQueueing", "XidError", "GpuHot"}
            prom.wait_until(lambda: expected <= set(prom.alert_states()), what=f"the alerts {expected}")
            states = prom.alert_states()
            assert states["KvCacheFullAndQueueing"] == {"pending"}  # for: 1h
            assert states["XidError"] == states["GpuHot"] == {"firing"}
            xid = [a for a in prom.alerts() if a["labels"]["alertname"] == "XidError"]
            assert [(a["labels"]["gpu"], a["labels"]["err_code"]) for a in xid] == [("1", "79")]

            vllm.restart()  # counters back to 0, a new process_start_time_seconds, the 5xx series gone
            prom.wait_until(lambda: "Restarted" in prom.alert_states(), what="the Restarted alert")
            assert prom.query_value('resets(vllm:prompt_tokens_total{job="vllm"}[1m])') == 1.0

            dcgm.set_available(False)
            prom.wait_until(lambda: "Down" in prom.alert_states(), what="the Down alert")


def test_v0_restart_has_no_process_start_time(tmp_path: Path) -> None:
    require_prometheus()
    with exporters("vllm-0.6.3") as (v0,), start_prometheus(tmp_path, scrape_config({"v0": v0.address})) as prom:
        prom.wait_for_targets_up()
        prom.wait_for_value('vllm:prompt_tokens_total{job="v0"}', lambda v: v >= 1)
        v0.restart()
        prom.wait_for_value('resets(vllm:prompt_tokens_total{job="v0"}[1m])', lambda v: v >= 1)
        assert prom.query('process_start_time_seconds{job="v0"}') == []


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    require_prometheus()
    prom = start_prometheus(tmp_path, "scrape_configs: []\n")
    pid, port = prom.process.pid, prom.port
    assert prom.running() and Path(f"/proc/{pid}").exists()
    prom.stop()
    assert not prom.running()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_retarget_points_generated_jobs_at_fake_exporters() -> None:
    config = """
scrape_configs:
- job_name: hxp-prod-llama-8b
  scrape_interval: 15s
  static_configs:
  - labels: {model: llama-8b, replica: "0"}
    targets: [gpu-02.internal:8010]
  - labels: {model: llama-8b, replica: "1"}
    targets: [gpu-02.internal:8011]
- job_name: hxp-prod-dcgm
  static_configs:
  - labels: {host: gpu-01}
    targets: [gpu-01.internal:9400]
"""
    text = retarget(config, {"gpu-02.internal:8010": "127.0.0.1:1234"})
    assert "127.0.0.1:1234" in text and "8011" not in text and "dcgm" not in text
    assert "replica: '0'" in text or 'replica: "0"' in text


def test_metrics_list_lookup() -> None:
    spec = metrics_list("vllm-0.6.3")
    assert spec.engine == "v0" and "vllm:gpu_cache_usage_perc" in spec.metrics
    assert spec.metrics["vllm:request_success_total"].labels["finished_reason"] == ["stop", "length"]
