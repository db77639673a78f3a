"""The resolved stack: workloads, round-robin placement, host ports per replica, GPU devices, waves."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import TypeAdapter

from hxpc.compiler.capacity import weights
from hxpc.compiler.model import (
    ResolvedStack,
    startup_budget_s,
    vllm_args,
)
from hxpc.compiler.pipeline import resolve_env
from hxpc.compiler.spec import Health, LlmModel
from hxpc.sources import FileSources

REPO = Path(__file__).resolve().parents[2]

HEAD = """\
apiVersion: hxpc/v1
project: demo
hosts:
  gpu-a: {gpus: {count: 8, model: A100-80GB, memory: 80Gi}}
  gpu-b: {gpus: {count: 8, model: A100-80GB, memory: 80Gi}}
  app: {cpu: 16}
"""

T = TypeVar("T")


def _validated(cls: type[T], data: dict[str, Any]) -> T:
    return TypeAdapter(cls).validate_python(data)


def resolve(tmp_path: Path, body: str, env: str = "default") -> ResolvedStack:
    spec = tmp_path / "s.yaml"
    spec.write_text(HEAD + body, encoding="utf-8")
    return resolve_env(FileSources(str(spec)), env).stack


def replicas(stack: ResolvedStack, name: str, target: str = "systemd") -> list[tuple[str | None, tuple[int, ...],
                                                                                     dict[str, int]]]:
    return [(r.host, r.gpu_devices, r.host_ports) for r in stack.placements[target].replicas[name]]


def test_gpu_devices_in_spec_order(tmp_path: Path) -> None:
    stack = resolve(tmp_path, """\
models:
  big: {source: org/big, params_b: 8, tensor_parallel: 2, replicas: 2, port: 8000, hosts: [gpu-a],
        architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}}
  small: {source: org/small, params_b: 1, replicas: 1, port: 8100, hosts: [gpu-a],
          architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}}
services:
  embed: {image: e:1, resources: {gpus: 2}, ports: {http: 9000}, hosts: [gpu-a]}
targets:
  systemd: {hosts: [gpu-a, gpu-b, app]}
""")
    assert replicas(stack, "big") == [("gpu-a", (0, 1), {"http": 8000}), ("gpu-a", (2, 3), {"http": 8001})]
    assert replicas(stack, "small") == [("gpu-a", (4,), {"http": 8100})]
    assert replicas(stack, "embed") == [("gpu-a", (5, 6), {"http": 9000})]


def test_models_get_devices_before_services_whatever_the_file_order(tmp_path: Path) -> None:
    stack = resolve(tmp_path, """\
services:
  embed: {image: e:1, resources: {gpus: 1}, hosts: [gpu-a]}
models:
  m: {source: org/m, params_b: 1, hosts: [gpu-a],
      architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}}
targets:
  systemd: {hosts: [gpu-a]}
""")
    assert list(stack.workloads) == ["m", "embed"]
    assert replicas(stack, "m")[0][1] == (0,)
    assert replicas(stack, "embed")[0][1] == (1,)


def test_round_robin_over_hosts_with_ports_per_replica(tmp_path: Path) -> None:
    stack = resolve(tmp_path, """\
models:
  m: {source: org/m, params_b: 1, tensor_parallel: 2, replicas: 3, port: 8000, hosts: [gpu-a, gpu-b],
      architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}}
services:
  web: {image: w:1, replicas: 3, ports: {http: 8080, admin: 9090}, hosts: [app]}
targets:
  systemd: {hosts: [gpu-a, gpu-b, app]}
""")
    # replica i is on hosts[i % n], publishes port + i, and takes the next free devices of its host
    assert replicas(stack, "m") == [
        ("gpu-a", (0, 1), {"http": 8000}), ("gpu-b", (0, 1), {"http": 8001}), ("gpu-a", (2, 3), {"http": 8002})]
    assert replicas(stack, "web") == [
        ("app", (), {"http": 8080, "admin": 9090}), ("app", (), {"http": 8081, "admin": 9091}),
        ("app", (), {"http": 8082, "admin": 9092})]
    assert [r.index for r in stack.placements["systemd"].replicas["web"]] == [0, 1, 2]


def test_default_hosts_come_from_the_systemd_target(tmp_path: Path) -> None:
    stack = resolve(tmp_path, """\
services:
  web: {image: w:1, replicas: 2}
targets:
  systemd: {hosts: [app, gpu-a]}
""")
    assert stack.workloads["web"].hosts == ("app", "gpu-a")
    assert [r.host for r in stack.placements["systemd"].replicas["web"]] == ["app", "gpu-a"]


def test_zero_replicas_place_nothing(tmp_path: Path) -> None:
    stack = resolve(tmp_path, "services:\n  web: {image: w:1, replicas: 0}\ntargets:\n  systemd: {}\n")
    assert stack.placements["systemd"].replicas["web"] == ()


def test_compose_host_placement(tmp_path: Path) -> None:
    stack = resolve(tmp_path, """\
models:
  m: {source: org/m, params_b: 1, tensor_parallel: 2, replicas: 2, hosts: [gpu-b],
      architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}}
services:
  web: {image: w:1, ports: {http: 8080}}
targets:
  compose: {host: gpu-a}
""")
    assert set(stack.placements) == {"compose"}
    # compose runs everything on its one host, whatever `hosts` says
    assert replicas(stack, "m", "compose") == [("gpu-a", (0, 1), {"http": 8000}), ("gpu-a", (2, 3), {"http": 8001})]
    assert replicas(stack, "web", "compose") == [("gpu-a", (), {"http": 8080})]
    assert stack.primary_placement is stack.placements["compose"]


def test_declared_placement_without_systemd_or_compose_host(tmp_path: Path) -> None:
    stack = resolve(tmp_path, """\
models:
  m: {source: org/m, params_b: 1, hosts: [gpu-b],
      architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}}
services:
  web: {image: w:1}
targets:
  kubernetes: {}
""")
    assert set(stack.placements) == {"declared"}
    assert replicas(stack, "m", "declared") == [("gpu-b", (0,), {"http": 8000})]
    assert replicas(stack, "web", "declared") == [(None, (), {})]


def test_both_systemd_and_compose_placements(tmp_path: Path) -> None:
    stack = resolve(tmp_path, """\
models:
  m: {source: org/m, params_b: 1, hosts: [gpu-b],
      architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}}
targets:
  systemd: {hosts: [gpu-b]}
  compose: {host: gpu-a}
""")
    assert set(stack.placements) == {"systemd", "compose"}
    assert stack.primary_placement is stack.placements["systemd"]
    assert replicas(stack, "m") == [("gpu-b", (0,), {"http": 8000})]
    assert replicas(stack, "m", "compose") == [("gpu-a", (0,), {"http": 8000})]


def test_waves(tmp_path: Path) -> None:
    stack = resolve(tmp_path, """\
models:
  llm: {source: org/m, params_b: 1,
        architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}}
services:
  gw: {image: g:1, depends_on: [api, llm]}
  db: {image: d:1}
  api: {image: a:1, depends_on: [db, cache]}
  cache: {image: c:1}
  lone: {image: l:1}
targets:
  kubernetes: {}
""")
    assert stack.waves == (("cache", "db", "llm", "lone"), ("api",), ("gw",))


def test_model_workload(tmp_path: Path) -> None:
    stack = resolve(tmp_path, """\
defaults:
  env: {TZ: UTC}
secrets:
  hf: {file: /run/secrets/hf}
models:
  m:
    source: org/m
    revision: v2
    served_name: mm
    params_b: 7
    dtype: float16
    quantization: awq
    max_model_len: 4096
    tensor_parallel: 2
    gpu_memory_utilization: 0.85
    port: 8100
    extra_args: [--enable-prefix-caching]
    secrets: {HF_TOKEN: hf}
targets:
  kubernetes: {}
""")
    w = stack.workloads["m"]
    assert w.kind == "model"
    assert w.args == ("--model", "org/m", "--revision", "v2", "--served-model-name", "mm", "--dtype", "float16",
                      "--quantization", "awq", "--max-model-len", "4096", "--tensor-parallel-size", "2",
                      "--gpu-memory-utilization", "0.85", "--host", "0.0.0.0", "--port", "8100",
                      "--enable-prefix-caching")
    assert w.ports == {"http": 8100}
    assert w.metrics == (8100, "/metrics")
    assert w.probe is not None
    assert (w.probe.kind, w.probe.port, w.probe.path) == ("http", 8100, "/health")
    assert w.gpus == 2
    assert w.env == {"TZ": "UTC"}
    assert w.secrets == {"HF_TOKEN": "hf"}
    assert w.image == "vllm/vllm-openai:v0.6.3"
    assert w.startup_budget_s == 300 + 70
    # awq: 4-bit layers plus their scales, and 16-bit embeddings (capacity.weights; tested in test_capacity.py)
    assert w.model is not None
    assert w.weights_bytes_per_gpu == weights(w.model, None).per_gpu_bytes > 7e9 * 0.5 / 2


def test_service_workload(tmp_path: Path) -> None:
    stack = resolve(tmp_path, """\
defaults:
  resources: {cpu: 500m, memory: 1Gi}
services:
  web:
    image: w:1
    command: [run]
    args: [--port, "8080"]
    ports: {http: 8080}
    env: {B: 2, A: true}
    resources: {cpu: 2}
    health: {http: {path: /ready, port: http}, interval: 5s, retries: 4, start_period: 1m}
    metrics: {port: http}
targets:
  kubernetes: {}
""")
    w = stack.workloads["web"]
    assert (w.kind, w.image, w.command, w.args) == ("service", "w:1", ("run",), ("--port", "8080"))
    assert list(w.env.items()) == [("A", "true"), ("B", "2")]  # sorted, as text
    assert (w.cpu_millis, w.memory_bytes, w.gpus) == (2000, 2**30, 0)
    assert w.probe is not None
    assert (w.probe.kind, w.probe.port, w.probe.port_name, w.probe.path) == ("http", 8080, "http", "/ready")
    assert (w.probe.interval_ms, w.probe.timeout_ms, w.probe.retries, w.probe.start_period_ms) == (5000, 3000, 4, 60000)
    assert w.metrics == (8080, "/metrics")
    assert w.startup_budget_s == 60 + 20  # start period plus a round of retries
    assert w.model is None and w.weights_bytes_per_gpu == 0.0


@pytest.mark.parametrize(("dtype", "size"), [("float32", 4), ("bfloat16", 2), ("float16", 2)])
def test_unquantized_weights_are_params_times_dtype(dtype: str, size: float) -> None:
    m = _validated(LlmModel, {"source": "x", "params_b": 10, "dtype": dtype, "tensor_parallel": 2})
    assert weights(m, None).per_gpu_bytes == 10e9 * size / 2


def test_startup_budget() -> None:
    assert startup_budget_s(_validated(LlmModel, {"source": "x", "params_b": 70.6}), None) == 300 + 706
    assert startup_budget_s(None, None) == 60
    assert startup_budget_s(None, _validated(Health, {"exec": ["true"]})) == 60
    slow = _validated(Health, {"exec": ["true"], "start_period": "2m", "interval": "30s", "retries": 4})
    assert startup_budget_s(None, slow) == 120 + 120


def test_vllm_args_minimal() -> None:
    m = _validated(LlmModel, {"source": "/models/x", "params_b": 1})
    assert vllm_args(m) == ("--model", "/models/x", "--dtype", "bfloat16", "--tensor-parallel-size", "1",
                            "--gpu-memory-utilization", "0.9", "--host", "0.0.0.0", "--port", "8000")


def test_example_spec_placement() -> None:
    prod = resolve_env(FileSources(str(REPO / "specs" / "hxp.yaml")), "prod").stack
    systemd = prod.placements["systemd"].replicas
    assert [r.gpu_devices for r in systemd["llama-70b"]] == [(0, 1, 2, 3)]
    assert [r.gpu_devices for r in systemd["mixtral-8x7b"]] == [(0, 1)]
    assert [(r.host, r.gpu_devices, r.host_ports["http"]) for r in systemd["llama-8b"]] == [
        ("gpu-02", (2,), 8010), ("gpu-02", (3,), 8011)]
    assert [r.host_ports["http"] for r in systemd["api-gateway"]] == [8080, 8081, 8082]
    assert prod.waves[-1] == ("api-gateway",)
    dev = resolve_env(FileSources(str(REPO / "specs" / "hxp.yaml")), "dev").stack
    assert [r.gpu_devices for r in dev.placements["compose"].replicas["llama-70b"]] == [(0, 1)]
