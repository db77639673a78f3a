"""Semantic checks: references with suggestions, cycles, GPU budgets, weights, host ports, targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from hxpc.compiler.pipeline import resolve_env
from hxpc.diagnostics import Diagnostic, suggest
from hxpc.errors import SpecError
from hxpc.sources import FileSources

HEAD = """\
apiVersion: hxpc/v1
project: demo
hosts:
  gpu-a: {gpus: {count: 4, model: A100-80GB, memory: 80Gi}}
  gpu-b: {gpus: {count: 2, model: L4, memory: 24Gi}}
  app: {cpu: 16}
"""

# a model hxpc's catalogue does not know needs its architecture for the KV-cache check (hxpc/compiler/kvcheck.py)
X = "source: x, architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}"


def problems(tmp_path: Path, body: str) -> list[Diagnostic]:
    spec = tmp_path / "s.yaml"
    spec.write_text(HEAD + body, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        resolve_env(FileSources(str(spec)), "default")
    return info.value.diagnostics


def ok(tmp_path: Path, body: str) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(HEAD + body, encoding="utf-8")
    resolve_env(FileSources(str(spec)), "default")


def codes(found: list[Diagnostic]) -> list[str]:
    return [d.code for d in found]


def test_suggest() -> None:
    assert suggest("postgress", ["postgres", "redis"]) == "did you mean `postgres`?"
    assert suggest("zzz", ["b", "a"]) == "known: `a`, `b`"
    assert suggest("zzz", [f"n{i:02d}" for i in range(20)]).endswith(", ...")  # type: ignore[union-attr]
    assert suggest("x", []) is None


def test_unknown_dependency_lists_known_names(tmp_path: Path) -> None:
    (d,) = problems(tmp_path, "services:\n  a: {image: a, depends_on: [qqq]}\n  b: {image: b}\n"
                              "targets: {kubernetes: {}}\n")
    assert d.code == "HX301"
    assert d.message == "service `a` depends on `qqq`, which is neither a service nor a model"
    assert d.hint == "known: `a`, `b`"


def test_models_can_depend_and_be_depended_on(tmp_path: Path) -> None:
    ok(tmp_path, "models:\n  m: {" + X + ", params_b: 1, depends_on: [cache]}\n"
                 "services:\n  cache: {image: c}\n  gw: {image: g, depends_on: [m]}\ntargets: {kubernetes: {}}\n")


def test_unknown_secret_of_a_model(tmp_path: Path) -> None:
    (d,) = problems(tmp_path, "secrets:\n  hf-token: {env: HF}\nmodels:\n"
                              "  m: {" + X + ", params_b: 1, secrets: {HF_TOKEN: hf-tokn}}\n"
                              "targets: {kubernetes: {}}\n")
    assert d.code == "HX302"
    assert d.hint == "did you mean `hf-token`?"
    assert d.span is not None and d.span.line == 10


def test_health_and_metrics_ports_must_be_declared(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
services:
  web:
    image: w
    ports: {http: 8080}
    health: {tcp: {port: grpc}}
    metrics: {port: admin}
targets: {kubernetes: {}}
""")
    assert [(d.code, d.span.line if d.span else 0) for d in found] == [("HX304", 11), ("HX304", 12)]
    assert "port `grpc` of service `web`" in found[0].message


def test_self_dependency_is_a_cycle(tmp_path: Path) -> None:
    (d,) = problems(tmp_path, "services:\n  a: {image: a, depends_on: [a]}\ntargets: {kubernetes: {}}\n")
    assert d.code == "HX305"
    assert d.message == "dependency cycle: a -> a"


def test_cycle_through_a_model(tmp_path: Path) -> None:
    (d,) = problems(tmp_path, "models:\n  m: {" + X + ", params_b: 1, depends_on: [s]}\n"
                              "services:\n  s: {image: s, depends_on: [m]}\ntargets: {kubernetes: {}}\n")
    assert d.code == "HX305"
    assert d.message == "dependency cycle: m -> s -> m"  # models come first in spec order
    assert d.span is not None and d.span.line == 8


def test_gpus_on_a_host_without_gpus(tmp_path: Path) -> None:
    (d,) = problems(tmp_path, "models:\n  m: {" + X + ", params_b: 1, hosts: [app]}\n"
                              "targets:\n  systemd: {hosts: [app]}\n")
    assert d.code == "HX306"
    assert d.message == "host `app` has 0 GPU(s) but 1 are placed on it (systemd): m (tensor_parallel 1 x 1 replica)"
    assert d.span is not None and (d.span.line, d.span.col) == (6, 3)  # the host's name


def test_gpu_budget_counts_only_replicas_on_that_host(tmp_path: Path) -> None:
    # 3 replicas of tp 2 over two hosts: gpu-a holds replicas 0 and 2 (4 GPUs, fits), gpu-b holds 1 (2, fits)
    ok(tmp_path, "models:\n  m: {" + X + ", params_b: 1, tensor_parallel: 2, replicas: 3, hosts: [gpu-a, gpu-b]}\n"
                 "targets:\n  systemd: {hosts: [gpu-a, gpu-b]}\n")
    (d,) = problems(tmp_path, "models:\n  m: {" + X + ", params_b: 1, tensor_parallel: 2, replicas: 4, "
                              "hosts: [gpu-a, gpu-b]}\ntargets:\n  systemd: {hosts: [gpu-a, gpu-b]}\n")
    assert d.code == "HX306"
    assert d.message == ("host `gpu-b` has 2 GPU(s) but 4 are placed on it (systemd): "
                         "m (tensor_parallel 2 x 2 replicas)")


def test_gpu_budget_of_the_compose_host(tmp_path: Path) -> None:
    (d,) = problems(tmp_path, "models:\n  m: {" + X + ", params_b: 1, tensor_parallel: 2, replicas: 2}\n"
                              "targets:\n  compose: {host: gpu-b}\n")
    assert d.code == "HX306"
    assert "(compose)" in d.message
    assert [m for _, m in d.notes] == ["`m` takes 4"]


def test_quantized_weights_keep_16_bit_embeddings(tmp_path: Path) -> None:
    # int8: 2.10B embedding + lm_head params stay 16-bit, the other 68.50B take a byte each; / 2 GPUs = 36.4 GB
    (d,) = problems(tmp_path, "models:\n  m: {source: meta-llama/Llama-3.1-70B-Instruct, params_b: 70.6, "
                              "quantization: int8, tensor_parallel: 2, max_model_len: 8192, hosts: [gpu-b]}\n"
                              "targets:\n  systemd: {hosts: [gpu-b]}\n")
    assert d.code == "HX307"
    assert d.message == ("model `m` does not fit on `gpu-b`: 2.10B embedding params x 2 bytes + 68.50B x 1 bytes "
                         "(int8) / tensor_parallel 2 = 36.4 GB per GPU > 24Gi x 0.9 = 23.2 GB usable")
    assert d.notes[0][1] == "GPU memory of `gpu-b`"
    # the same checkpoint fits on 80Gi GPUs, KV cache included
    ok(tmp_path, "models:\n  m: {source: meta-llama/Llama-3.1-70B-Instruct, params_b: 70.6, quantization: int8, "
                 "tensor_parallel: 2, max_model_len: 8192, hosts: [gpu-a]}\ntargets:\n  systemd: {hosts: [gpu-a]}\n")


def test_weights_are_checked_per_host_of_the_model(tmp_path: Path) -> None:
    # 30B bf16 / 1 = 60 GB: fits on gpu-a (80Gi) but not on gpu-b (24Gi)
    found = problems(tmp_path, "models:\n  m: {" + X + ", params_b: 30, replicas: 2, hosts: [gpu-a, gpu-b]}\n"
                               "targets:\n  systemd: {hosts: [gpu-a, gpu-b]}\n")
    assert codes(found) == ["HX307"]
    assert "does not fit on `gpu-b`" in found[0].message


def test_port_conflict_between_a_model_and_a_service(tmp_path: Path) -> None:
    (d,) = problems(tmp_path, "models:\n  m: {" + X + ", params_b: 1, port: 8000, hosts: [gpu-a]}\n"
                              "services:\n  web: {image: w, ports: {http: 8000}, hosts: [gpu-a]}\n"
                              "targets:\n  systemd: {hosts: [gpu-a]}\n")
    assert d.code == "HX308"
    assert d.message == ("host port 8000 on `gpu-a` is taken twice (systemd): `web` replica 0 (http) and "
                         "`m` replica 0 (http)")
    assert d.span is not None and d.span.line == 10  # the later one, pointing back at the first
    assert d.notes[0][0].line == 8


def test_same_ports_on_different_hosts_are_fine(tmp_path: Path) -> None:
    ok(tmp_path, "services:\n  a: {image: a, ports: {http: 80}, hosts: [app]}\n"
                 "  b: {image: b, ports: {http: 80}, hosts: [gpu-a]}\n"
                 "targets:\n  systemd: {hosts: [app, gpu-a]}\n")


def test_replica_ports_are_on_the_replica_host(tmp_path: Path) -> None:
    # replica 0 of `a` is on app at 80, replica 1 on gpu-a at 81: `b` on gpu-a at 80 is free, at 81 it is not
    ok(tmp_path, "services:\n  a: {image: a, replicas: 2, ports: {http: 80}, hosts: [app, gpu-a]}\n"
                 "  b: {image: b, ports: {http: 80}, hosts: [gpu-a]}\n"
                 "targets:\n  systemd: {hosts: [app, gpu-a]}\n")
    (d,) = problems(tmp_path, "services:\n  a: {image: a, replicas: 2, ports: {http: 80}, hosts: [app, gpu-a]}\n"
                              "  b: {image: b, ports: {http: 81}, hosts: [gpu-a]}\n"
                              "targets:\n  systemd: {hosts: [app, gpu-a]}\n")
    assert d.message == ("host port 81 on `gpu-a` is taken twice (systemd): `b` replica 0 (http) and "
                         "`a` replica 1 (http)")


def test_a_clash_of_many_replicas_is_reported_once(tmp_path: Path) -> None:
    found = problems(tmp_path, "services:\n  a: {image: a, replicas: 3, ports: {http: 80}, hosts: [app]}\n"
                               "  b: {image: b, replicas: 3, ports: {http: 80}, hosts: [app]}\n"
                               "targets:\n  systemd: {hosts: [app]}\n")
    assert codes(found) == ["HX308"]


def test_ports_are_not_checked_on_kubernetes(tmp_path: Path) -> None:
    ok(tmp_path, "services:\n  a: {image: a, ports: {http: 80}}\n  b: {image: b, ports: {http: 80}}\n"
                 "targets: {kubernetes: {}}\n")


def test_compose_without_a_host_still_publishes_on_one_engine(tmp_path: Path) -> None:
    (d,) = problems(tmp_path, "services:\n  a: {image: a, ports: {http: 80}}\n  b: {image: b, ports: {http: 79},"
                              " replicas: 2}\ntargets: {kubernetes: {}, compose: {}}\n")
    assert d.code == "HX308"
    assert "host port 80 on `the Docker Engine` is taken twice (compose)" in d.message
    assert "`b` replica 1" in d.message


def test_systemd_docker_runtime_needs_an_image(tmp_path: Path) -> None:
    (d,) = problems(tmp_path, "services:\n  w: {exec: [/bin/w], hosts: [app]}\ntargets:\n  systemd: {hosts: [app]}\n")
    assert d.code == "HX309"
    assert d.message == "service `w` has no `image`, which the systemd docker runtime needs"


def test_native_runtime_with_exec_and_no_image_is_fine(tmp_path: Path) -> None:
    ok(tmp_path, "services:\n  w: {exec: [/bin/w], hosts: [app]}\n"
                 "targets:\n  systemd: {hosts: [app], runtime: native}\n")


def test_unknown_compose_host(tmp_path: Path) -> None:
    (d,) = problems(tmp_path, "services:\n  w: {image: w}\ntargets:\n  compose: {host: gpu-c}\n")
    assert d.code == "HX303"
    assert d.hint is not None and d.hint.startswith("did you mean `gpu-")


def test_no_placement_only_for_replicas_that_run(tmp_path: Path) -> None:
    ok(tmp_path, "services:\n  w: {image: w, replicas: 0}\ntargets:\n  systemd: {}\n")
    (d,) = problems(tmp_path, "models:\n  m: {" + X + ", params_b: 1}\ntargets:\n  systemd: {}\n")
    assert d.code == "HX313"
    assert d.message == "model `m` has no hosts to run on for the systemd target"


def test_a_model_and_a_service_with_one_name(tmp_path: Path) -> None:
    found = problems(tmp_path, "models:\n  x: {" + X + ", params_b: 1}\nservices:\n  x: {image: x}\n"
                               "targets: {kubernetes: {}}\n")
    assert codes(found) == ["HX312"]
    assert found[0].notes[0][1] == "the model is declared here"


def test_every_problem_is_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
models:
  m: {source: x, params_b: 200, hosts: [gpu-b, nope]}
services:
  a: {depends_on: [b, ghost], secrets: {K: missing}}
  b: {image: b, depends_on: [a], ports: {http: 80}, hosts: [app], metrics: {port: web}}
  c: {image: c, ports: {http: 80}, hosts: [app]}
targets:
  systemd: {hosts: [gpu-b, app]}
  compose: {}
""")
    # `a` lacks an image for compose and for systemd docker: one report at one place
    assert sorted(codes(found)) == ["HX301", "HX302", "HX303", "HX304", "HX305", "HX307", "HX308", "HX309"]
    # sorted by place in the file
    lines = [d.span.line if d.span else 0 for d in found]
    assert lines == sorted(lines)
