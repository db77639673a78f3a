"""The capacity fields of a model in the spec: their validation, their vLLM flags on every target, `resources`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hxpc.cli import main
from hxpc.compiler.compile import compile_env
from hxpc.compiler.model import vllm_args
from hxpc.compiler.pipeline import resolve_env
from hxpc.compiler.resources import capacity_report, predicted_kv_tokens, resources_report
from hxpc.compiler.spec import json_schema, pydantic_adapter
from hxpc.errors import SpecError
from hxpc.sources import FileSources

SPEC = """\
apiVersion: hxpc/v1
project: demo
hosts:
  gpu-a: {address: local, gpus: {count: 4, model: H100-80GB, memory: 80Gi}}
models:
  chat:
    source: Qwen/Qwen2.5-7B-Instruct-AWQ
    params_b: 7.62
    dtype: float16
    quantization: awq
    kv_cache_dtype: fp8
    max_model_len: 32768
    max_num_batched_tokens: 4096
    max_num_seqs: 64
    enforce_eager: true
    image: vllm/vllm-openai:v0.11.0
    hosts: [gpu-a]
    replicas: 2
    extra_args: [--enable-prefix-caching]
  bnb:
    source: unsloth/Qwen2.5-7B-Instruct-bnb-4bit
    params_b: 7.62
    quantization: bitsandbytes
    max_model_len: 8192
    image: vllm/vllm-openai:v0.6.3
    hosts: [gpu-a]
    port: 8100
targets:
  systemd: {hosts: [gpu-a], runtime: docker}
  compose: {host: gpu-a}
  kubernetes: {}
"""

FLAGS = ["--quantization", "awq", "--kv-cache-dtype", "fp8", "--max-model-len", "32768", "--max-num-batched-tokens",
         "4096", "--max-num-seqs", "64", "--enforce-eager", "--tensor-parallel-size", "1"]


def write(tmp_path: Path, text: str = SPEC) -> Path:
    spec = tmp_path / "demo.yaml"
    spec.write_text(text, encoding="utf-8")
    return spec


def test_the_fields_become_vllm_flags_in_the_spec_order(tmp_path: Path) -> None:
    stack = resolve_env(FileSources(str(write(tmp_path))), "default").stack
    args = list(stack.workloads["chat"].args)
    start = args.index("--quantization")
    assert args[start:start + len(FLAGS)] == FLAGS
    assert args[-1] == "--enable-prefix-caching"  # extra_args last: vLLM takes the last value of a flag
    bnb = vllm_args(stack.workloads["bnb"].model)  # type: ignore[arg-type]
    assert "--quantization bitsandbytes --load-format bitsandbytes" in " ".join(bnb)
    # at vLLM's defaults the flags are left out, so specs that do not use them compile as before
    plain = pydantic_adapter().validate_python({"apiVersion": "hxpc/v1", "project": "p",
                                                "models": {"m": {"source": "x", "params_b": 1}}}).models["m"]
    assert not {"--kv-cache-dtype", "--max-num-seqs", "--max-num-batched-tokens", "--enforce-eager"} & set(
        vllm_args(plain))


@pytest.mark.parametrize("target", ["systemd", "compose", "kubernetes"])
def test_every_target_passes_the_flags(tmp_path: Path, target: str) -> None:
    resolved = resolve_env(FileSources(str(write(tmp_path))), "default")
    files = compile_env(resolved, "demo.yaml", [target]).files
    text = "\n".join(v for k, v in files.items() if "chat" in k or k.endswith(("compose.yaml", "compose.yml")))
    for flag in ("--kv-cache-dtype", "--max-num-batched-tokens", "--max-num-seqs", "--enforce-eager"):
        assert flag in text, (target, flag)


@pytest.mark.parametrize(("architecture", "message"), [
    ("{config: c.json, layers: 32}", "either `config` or the numbers, not both (found: config, layers)"),
    ("{layers: 32, head_dim: 128}", "needs `layers`, `kv_heads` and `head_dim` (or `config`); missing: kv_heads"),
    ("{}", "missing: layers, kv_heads, head_dim"),
])
def test_architecture_takes_a_config_or_the_numbers(tmp_path: Path, architecture: str, message: str) -> None:
    spec = write(tmp_path, SPEC.replace("    kv_cache_dtype: fp8\n", f"    architecture: {architecture}\n"))
    with pytest.raises(SpecError) as info:
        resolve_env(FileSources(str(spec)), "default")
    (d,) = info.value.diagnostics
    assert d.code == "HX210" and message in d.message


def test_the_schema_names_the_new_fields() -> None:
    model = json_schema()["$defs"]["LlmModel"]["properties"]
    assert {"kv_cache_dtype", "architecture", "max_num_batched_tokens", "max_num_seqs", "enforce_eager"} <= set(model)
    assert model["kv_cache_dtype"]["enum"] == ["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]
    quantization = json.dumps(model["quantization"])
    assert "bitsandbytes" in quantization


def test_resources_reports_each_model_replicas_kv_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path)
    report = resources_report(resolve_env(FileSources(str(spec)), "default").stack)
    replicas = {(r["name"], r["replica"]): r for h in report["hosts"] for r in h["replicas"]}
    chat = replicas[("chat", 0)]
    assert set(chat) >= {"weights_gib", "non_kv_gib", "kv_cache_gib", "kv_cache_tokens", "max_concurrency",
                         "max_model_len", "capacity"}
    assert chat == {**chat, **{k: v for k, v in replicas[("chat", 1)].items() if k not in ("replica", "gpu_devices",
                                                                                            "host_ports")}}
    # 4-bit AWQ with 16-bit embeddings: more than 7.62B x 0.5 bytes; the fp8 KV cache: 28 layers x 2 x 4 x 128 x 1
    assert 3.5 < chat["weights_gib"] < 6
    assert chat["capacity"]["kv_bytes_per_token"] == 28 * 2 * 4 * 128 * 1
    assert chat["kv_cache_tokens"] == chat["capacity"]["longest_max_model_len"] > 32768
    assert chat["max_concurrency"] == pytest.approx(chat["kv_cache_tokens"] / 32768, rel=0.01)
    assert chat["capacity"]["engine"] == "vLLM 0.11.0 (V1 engine, from the image tag)"
    assert chat["capacity"]["profile_tokens"] == 4096 and chat["capacity"]["profile_requests"] == 64
    assert chat["capacity"]["cuda_graph_gib"] == 0
    assert any("profiling run: 4,096 tokens in 64 requests" in a for a in chat["capacity"]["assumptions"])
    assert replicas[("bnb", 0)]["capacity"]["engine"] == "vLLM 0.6.3 (V0 engine, from the image tag)"
    # the command line: the same numbers as JSON, and a table with the assumptions under it
    assert main(["resources", str(spec), "--env", "default", "--format", "json"]) == 0
    out, _ = capsys.readouterr()
    hosts = json.loads(out)["hosts"]
    assert hosts[0]["replicas"][0]["kv_cache_tokens"] == chat["kv_cache_tokens"]
    assert main(["resources", str(spec), "--env", "default"]) == 0
    out, _ = capsys.readouterr()
    assert "model replicas, GiB per GPU (predicted)" in out and f"{chat['kv_cache_tokens']:,}" in out
    assert "chat: vLLM 0.11.0 (V1 engine, from the image tag)" in " ".join(out.split())


def test_a_replica_without_a_prediction_says_why(tmp_path: Path) -> None:
    # validation refuses such a spec (HX306, HX320), so `resources` never shows one; the report still says why
    workload = resolve_env(FileSources(str(write(tmp_path))), "default").stack.workloads["chat"]
    assert capacity_report(workload, None) == {
        "weights_gib": None, "non_kv_gib": None, "kv_cache_gib": None, "kv_cache_tokens": None,
        "max_concurrency": None, "max_model_len": None, "capacity": {"unknown": "its host declares no GPU budget"}}


def test_predicted_kv_tokens_for_monitoring(tmp_path: Path) -> None:
    resolved = resolve_env(FileSources(str(write(tmp_path))), "default").stack
    report = resources_report(resolved)
    chat = next(r for h in report["hosts"] for r in h["replicas"] if r["name"] == "chat")
    assert predicted_kv_tokens(resolved, "chat") == chat["kv_cache_tokens"]
    assert predicted_kv_tokens(resolved, "nope") is None
