"""The vLLM catalogue against the metric lists of record, its version handling, compile's HX406 warnings, and the
README's table of what is watched per release."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO
from promserver import MetricsList, load_metrics, metrics_files

from hxpc.compiler.targets.prometheus import vllm_metrics as vm
from hxpc.main import run

VLLM = [m for m in map(load_metrics, metrics_files()) if m.exporter == "vllm"]


def version_of(spec: MetricsList) -> tuple[int, ...]:
    return tuple(int(p) for p in spec.version.split("."))


def test_every_list_of_record_is_a_verified_release_and_back() -> None:
    assert sorted(map(version_of, VLLM)) == list(vm.VERIFIED)


@pytest.mark.parametrize("spec", VLLM, ids=[m.stem for m in VLLM])
def test_the_catalogue_says_what_the_release_exports(spec: MetricsList) -> None:
    m = vm.for_version(version_of(spec))
    assert m.names <= spec.names, m.names - spec.names  # reads nothing the release lacks
    assert m.engine == spec.engine
    assert m.process_metrics == ("process_start_time_seconds" in spec.metrics)
    finished = spec.metrics["vllm:request_success_total"]
    # ... and misses no failure signal it has; `abort` is never one (no release counts client aborts)
    assert {f.name for f in m.failures} == ({"http_5xx"} if "http_requests_total" in spec.metrics else set()) | (
        {"engine_error"} if "error" in finished.labels["finished_reason"] else set())
    for signal in m.failures:
        label, value = signal.failed.split("=", 1)
        assert value.strip('"') in spec.metrics[signal.metric].labels[label]
    assert not m.tag_note


@pytest.mark.parametrize("image, version, noted", [
    ("vllm/vllm-openai:v0.6.3", (0, 6, 3), False),
    ("vllm/vllm-openai:v0.7.3", (0, 7, 3), False),  # between rows: V0, like 0.6.3
    ("vllm/vllm-openai:v0.8.0", (0, 8, 0), False),  # V1 from 0.8.0, HTTP counters only from 0.8.5
    ("vllm/vllm-openai:v0.33.4", (0, 33, 4), False),
    ("vllm/vllm-openai:latest", vm.NEWEST, True),
    ("vllm/vllm-openai@sha256:0123abcd", vm.NEWEST, True),
    ("registry.local/vllm:nightly-2026-01-02", vm.NEWEST, True),
    ("vllm/vllm-openai:v0.40.1", vm.NEWEST, True),
    ("vllm/vllm-openai:v0.5.4", vm.OLDEST, True),
])
def test_a_tag_picks_the_release_whose_facts_apply(image: str, version: tuple[int, ...], noted: bool) -> None:
    m = vm.for_image(image)
    assert m.version == version and bool(m.tag_note) == noted
    if noted:
        assert f"monitored as vLLM {vm.show(version)}" in m.tag_note


def test_facts_between_releases() -> None:
    v07, v080, v084, v085 = (vm.for_version(v) for v in ((0, 7, 3), (0, 8, 0), (0, 8, 4), (0, 8, 5)))
    assert v07.engine == "v0" and not v07.process_metrics and not v07.failures
    assert v080.engine == v084.engine == "v1" and v080.process_metrics and not v080.failures
    assert [f.name for f in v085.failures] == ["http_5xx"]
    assert "resets(vllm:prompt_tokens_total" in v07.restarts("{}", "15m")
    assert "process_start_time_seconds" in v085.restarts("{}", "15m")
    assert vm.for_version((0, 9, 1)).kv_cache_usage == "vllm:gpu_cache_usage_perc"
    assert vm.for_version((0, 9, 2)).kv_cache_usage == "vllm:kv_cache_usage_perc"


def test_process_metrics_are_scraped_only_where_exported() -> None:
    assert "process_start_time_seconds" not in vm.scraped_metrics("model", "vllm/vllm-openai:v0.6.3")
    assert "process_start_time_seconds" in vm.scraped_metrics("model", "vllm/vllm-openai:v0.10.1")
    assert vm.DCGM_FB_RESERVED in vm.scraped_metrics("dcgm")


def test_the_readme_has_the_table_of_what_is_watched() -> None:
    readme = (REPO / "README.md").read_text()
    rows = ["| " + " | ".join(row) + " |" for row in vm.watch_table()]
    assert "\n".join(rows) in readme, "README.md's monitoring table is out of date:\n" + "\n".join(rows)


SPEC = """\
apiVersion: hxpc/v1
project: p
hosts:
  gpu: {{gpus: {{count: 2, model: H100-80GB, memory: 80Gi}}}}
models:
  old:
    source: meta-llama/Llama-3.1-8B-Instruct
    params_b: 8.0
    max_model_len: 8192
    image: vllm/vllm-openai:v0.6.3
  new:
    source: meta-llama/Llama-3.1-8B-Instruct
    params_b: 8.0
    max_model_len: 8192
    port: 8001
    image: {new}
{monitoring}targets:
  systemd: {{hosts: [gpu]}}
"""


def compile_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str, new: str = "vllm/vllm-openai:latest",
                monitoring: str = "monitoring: {}\n") -> tuple[int, str]:
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(new=new, monitoring=monitoring))
    code = run(["compile", str(spec), "-o", str(tmp_path / "out"), *args])
    return code, capsys.readouterr().err


def test_compile_warns_and_succeeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = compile_cli(tmp_path, capsys)
    assert code == 0
    assert "s.yaml:10:12: warning[HX406]: model `old` (vLLM 0.6.3): failed requests are not monitored" in err
    assert "image: vllm/vllm-openai:v0.6.3" in err  # the source line, with a caret under the image
    assert f"model `new`: the image `vllm/vllm-openai:latest` names no vLLM version; monitored as vLLM " \
           f"{vm.show(vm.NEWEST)}" in err
    assert err.count("warning[HX406]") == 2
    groups = yaml.safe_load((tmp_path / "out" / "default" / "prometheus" / "rules.yaml").read_text())["groups"]
    failing = [r["labels"]["model"] for g in groups for r in g["rules"] if r.get("alert") == "HxpcVllmRequestsFailing"]
    assert failing == ["new"]
    code, err = compile_cli(tmp_path, capsys, "--check")  # a CI check shows them too, and still passes
    assert code == 0 and err.count("warning[HX406]") == 2


def test_no_warning_without_monitoring_or_for_a_watched_release(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert compile_cli(tmp_path, capsys, monitoring="") == (0, "")
    code, err = compile_cli(tmp_path, capsys, new="vllm/vllm-openai:v0.10.1")
    assert code == 0 and err.count("warning[HX406]") == 1 and "model `new`" not in err
