"""`hxpc validate` on model servers vLLM would refuse: located HX32x errors, warnings near the limit, config.json."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hxpc.cli import main
from hxpc.compiler.architecture import ModelShape
from hxpc.compiler.pipeline import Resolved, resolve_env
from hxpc.diagnostics import Diagnostic
from hxpc.errors import SpecError
from hxpc.sources import FileSources, GitSources


def write(tmp_path: Path, model: dict[str, Any], *, gpus: str = "{count: 2, model: H100-80GB, memory: 80Gi}",
          name: str = "s.yaml") -> Path:
    spec = tmp_path / name
    fields = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in model.items())  # JSON values are YAML
    spec.write_text("apiVersion: hxpc/v1\nproject: demo\n"
                    f"hosts:\n  gpu-a: {{gpus: {gpus}}}\n"
                    f"models:\n  chat:\n{fields}    hosts: [gpu-a]\n"
                    "targets:\n  systemd: {hosts: [gpu-a]}\n", encoding="utf-8")
    return spec


def resolved(spec: Path) -> Resolved:
    return resolve_env(FileSources(str(spec)), "default")


def refused(spec: Path) -> list[Diagnostic]:
    with pytest.raises(SpecError) as info:
        resolved(spec)
    return info.value.diagnostics


def line_of(spec: Path, text: str) -> int:
    return next(i for i, line in enumerate(spec.read_text().splitlines(), start=1) if text in line)


QWEN3_32B = {"source": "Qwen/Qwen3-32B", "params_b": 32.8, "image": "vllm/vllm-openai:v0.11.0"}


def test_a_sequence_that_does_not_fit_is_an_error_at_max_model_len(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # llm-d: Qwen3-32B on one H100 started at 16000 tokens and was refused at 32000
    spec = write(tmp_path, {**QWEN3_32B, "max_model_len": 32000})
    (d,) = refused(spec)
    assert (d.code, d.severity) == ("HX321", "error")
    assert d.span is not None and d.span.line == line_of(spec, "max_model_len: 32000")
    assert d.message.startswith("model `chat` on `gpu-a` would not start: one 32,000-token sequence needs 7.81 GiB "
                                "of KV cache per GPU and 4.37 GiB is predicted (17,872 tokens: 79.18 GiB x 0.9 = "
                                "71.26 GiB usable - 61.09 weights - 5.65 profiling peak - 0.15 non-torch = 4.37 GiB "
                                "of KV cache per GPU; vLLM 0.11.0 (V1 engine, from the image tag))")
    assert d.hint == ("lower max_model_len to 17,872 or less, raise gpu_memory_utilization or tensor_parallel, "
                      "set kv_cache_dtype: fp8, quantize the model")
    assert [m for _, m in d.notes] == ["GPU memory of `gpu-a`"]
    assert main(["validate", str(spec)]) == 3
    _, err = capsys.readouterr()
    assert f"{spec}:{d.span.line}:{d.span.col}: error[HX321]" in err
    # with two GPUs per replica it starts (llm-d: 34.49 GiB of KV cache per GPU)
    ok = resolved(write(tmp_path, {**QWEN3_32B, "max_model_len": 32000, "tensor_parallel": 2}))
    assert ok.warnings == []


def test_no_memory_left_for_a_kv_cache(tmp_path: Path) -> None:
    # llm-d: Llama-3.3-70B in FP8 on one H100: "Available KV cache memory: -1.44 GiB", refused
    spec = write(tmp_path, {"source": "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic", "params_b": 70.6,
                            "quantization": "fp8", "max_model_len": 16000, "image": "vllm/vllm-openai:v0.11.0"})
    (d,) = refused(spec)
    assert d.code == "HX322"
    assert "would not start: no memory is left for a KV cache" in d.message
    assert "= -1.37 GiB of KV cache per GPU" in d.message
    assert d.hint is not None and "raise tensor_parallel or gpu_memory_utilization, quantize the model" in d.hint


def test_close_to_the_limit_is_a_warning_that_validate_prints_and_passes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Qwen3-32B on one H100 holds ~17,900 tokens: 17,000 is within 10% of the limit, on the safe side
    spec = write(tmp_path, {**QWEN3_32B, "max_model_len": 17000})
    (w,) = resolved(spec).warnings
    assert (w.code, w.severity) == ("HX323", "warning")
    assert "is within 10% of vLLM's KV-cache limit (predicted at 105% of it), closer than hxpc can tell" in w.message
    assert w.hint is not None and w.hint.startswith("to be safe, lower max_model_len to 17,872 or less")
    assert main(["validate", str(spec)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{spec}: valid (default)\n"
    assert f"{spec}:{line_of(spec, 'max_model_len')}:" in err and "warning[HX323]" in err
    assert err.endswith("hxpc: 1 warning; the spec is valid\n")
    assert main(["validate", str(spec), "--format", "json"]) == 0
    out, _ = capsys.readouterr()
    (reported,) = json.loads(out)["diagnostics"]
    assert (reported["code"], reported["severity"]) == ("HX323", "warning")
    # ... and just over the limit it is still a warning, not an error: the prediction is not that exact
    (w,) = resolved(write(tmp_path, {**QWEN3_32B, "max_model_len": 18500})).warnings
    assert w.code == "HX323" and "(predicted at 97% of it)" in w.message


def test_errors_and_warnings_are_counted_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "apiVersion: hxpc/v1\nproject: demo\nhosts:\n  gpu-a: {gpus: {count: 2, model: H100-80GB, memory: 80Gi}}\n"
        "models:\n"
        "  near: {source: Qwen/Qwen3-32B, params_b: 32.8, max_model_len: 17000, hosts: [gpu-a],"
        " image: 'vllm/vllm-openai:v0.11.0'}\n"
        "  far: {source: Qwen/Qwen3-32B, params_b: 32.8, max_model_len: 40000, hosts: [gpu-a], port: 8001,"
        " image: 'vllm/vllm-openai:v0.11.0'}\n"
        "targets:\n  systemd: {hosts: [gpu-a]}\n", encoding="utf-8")
    assert main(["validate", str(spec)]) == 3
    _, err = capsys.readouterr()
    assert "warning[HX323]" in err and "error[HX321]" in err
    assert err.endswith("hxpc: 1 problem found (and 1 warning); nothing was changed\n")


def test_an_unknown_architecture_is_an_error_saying_what_to_add(tmp_path: Path) -> None:
    spec = write(tmp_path, {"source": "acme/support-bot-v3", "params_b": 7, "max_model_len": 8192})
    (d,) = refused(spec)
    assert d.code == "HX320"
    assert d.span is not None and d.span.line == line_of(spec, "source: ")
    assert "hxpc does not know the architecture of `acme/support-bot-v3`" in d.message
    assert d.hint is not None and "architecture: {layers: N, kv_heads: N, head_dim: N}" in d.hint
    # the numbers, or the length vLLM would take from the model, are then needed
    (d,) = refused(write(tmp_path, {"source": "acme/support-bot-v3", "params_b": 7,
                                    "architecture": {"layers": 32, "kv_heads": 8, "head_dim": 128}}))
    assert d.code == "HX320" and "`max_model_len` is not set" in d.message
    resolved(write(tmp_path, {"source": "acme/support-bot-v3", "params_b": 7, "max_model_len": 8192,
                              "architecture": {"layers": 32, "kv_heads": 8, "head_dim": 128}}))


def test_models_without_a_gpu_budget_are_not_checked(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("apiVersion: hxpc/v1\nproject: demo\nmodels:\n  m: {source: acme/private, params_b: 7, "
                    "image: vllm/vllm-openai:v0.11.0}\ntargets:\n  kubernetes: {}\n", encoding="utf-8")
    assert resolved(spec).warnings == []


def test_unset_max_model_len_takes_the_models_positions(tmp_path: Path) -> None:
    # Qwen3-32B's 40,960 positions do not fit on one H100: the error points at the model's name
    spec = write(tmp_path, dict(QWEN3_32B))
    (d,) = refused(spec)
    assert d.code == "HX321" and "one 40,960-token sequence" in d.message
    assert d.span is not None and d.span.line == line_of(spec, "  chat:")


def test_an_error_set_by_an_overlay_points_into_the_overlay(tmp_path: Path) -> None:
    spec = write(tmp_path, {**QWEN3_32B, "max_model_len": 16000})
    overlay = tmp_path / "s.prod.yaml"
    overlay.write_text("models:\n  chat: {max_model_len: 64000}\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        resolve_env(FileSources(str(spec)), "prod")
    (d,) = info.value.diagnostics
    assert d.code == "HX321" and d.span is not None and (d.span.file, d.span.line) == (str(overlay), 2)


def test_cuda_graphs_without_room_are_a_warning(tmp_path: Path) -> None:
    spec = write(tmp_path, {"source": "meta-llama/Llama-3.1-8B-Instruct", "params_b": 8.03, "max_model_len": 8192,
                            "gpu_memory_utilization": 0.99, "image": "vllm/vllm-openai:v0.11.0"})
    (w,) = resolved(spec).warnings
    assert (w.code, w.severity) == ("HX324", "warning") and "may run out of memory capturing CUDA graphs" in w.message
    eager = write(tmp_path, {"source": "meta-llama/Llama-3.1-8B-Instruct", "params_b": 8.03, "max_model_len": 8192,
                             "gpu_memory_utilization": 0.99, "image": "vllm/vllm-openai:v0.11.0",
                             "enforce_eager": True})
    assert resolved(eager).warnings == []


LLAMA_CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
                "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                "max_position_embeddings": 131072, "tie_word_embeddings": False}


def test_architecture_from_a_config_json_beside_the_spec(tmp_path: Path) -> None:
    (tmp_path / "models" / "bot").mkdir(parents=True)
    (tmp_path / "models" / "bot" / "config.json").write_text(json.dumps(LLAMA_CONFIG), encoding="utf-8")
    spec = write(tmp_path, {"source": "/srv/models/bot", "params_b": 8.03, "max_model_len": 8192,
                            "architecture": {"config": "models/bot/config.json"}})
    shape = resolved(spec).stack.workloads["chat"].shape
    assert isinstance(shape, ModelShape) and (shape.layers, shape.vocab_size) == (32, 128256)
    assert shape.origin == "models/bot/config.json"
    # a missing or unusable file is an error at `architecture.config`
    missing = write(tmp_path, {"source": "/srv/models/bot", "params_b": 8.03, "max_model_len": 8192,
                               "architecture": {"config": "models/nope/config.json"}}, name="missing.yaml")
    (d,) = refused(missing)
    assert d.code == "HX320" and d.span is not None and d.span.line == line_of(missing, "architecture:")
    assert "the model config `models/nope/config.json` cannot be read" in d.message
    (tmp_path / "models" / "bot" / "config.json").write_text(json.dumps({**LLAMA_CONFIG, "mamba_d_state": 16}))
    (d,) = refused(spec)
    assert d.code == "HX320" and "hybrid of attention and linear-attention or state-space layers" in d.message


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_diff_base_reads_the_config_json_as_it_was(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "specs").mkdir(parents=True)
    (repo / "models").mkdir()
    config = repo / "models" / "config.json"
    config.write_text(json.dumps(LLAMA_CONFIG), encoding="utf-8")
    spec = write(repo / "specs", {"source": "/srv/models/bot", "params_b": 8.03, "max_model_len": 8192,
                                  "architecture": {"config": "../models/config.json"}}, name="hxp.yaml")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "base")
    config.write_text(json.dumps({**LLAMA_CONFIG, "num_hidden_layers": 40}), encoding="utf-8")
    then = resolve_env(GitSources(str(spec), "HEAD"), "default").stack.workloads["chat"].shape
    now = resolve_env(FileSources(str(spec)), "default").stack.workloads["chat"].shape
    assert isinstance(then, ModelShape) and isinstance(now, ModelShape)
    assert (then.layers, now.layers) == (32, 40)
