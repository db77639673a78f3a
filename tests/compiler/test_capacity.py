"""The memory model (hxpc/compiler/capacity.py): engine versions, flags, weights, KV bytes, profiling, verdicts."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import pytest

from hxpc.compiler import capacity
from hxpc.compiler.architecture import Mla, ModelShape, ModelShapes
from hxpc.compiler.capacity import (
    Engine,
    GiB,
    cuda_graph_headroom_problem,
    engine_of,
    estimate,
    flags_of,
    gpu_of,
    image_version,
    request_kv_bytes,
    weights,
)
from hxpc.compiler.spec import LlmModel, pydantic_adapter

LLAMA_8B = ModelShape(layers=32, kv_heads=8, head_dim=128, hidden_size=4096, intermediate_size=14336,
                      vocab_size=128256, tie_word_embeddings=False, max_position_embeddings=131072)
H100 = gpu_of(80 * GiB, "H100-80GB")


def model(**fields: Any) -> LlmModel:
    """A model validated as the spec validates it."""
    stack = pydantic_adapter().validate_python(
        {"apiVersion": "hxpc/v1", "project": "p", "models": {"m": {"source": "x", "params_b": 8.03, **fields}}})
    return stack.models["m"]


@pytest.mark.parametrize(("image", "version"), [
    ("vllm/vllm-openai:v0.6.3", (0, 6, 3)), ("vllm/vllm-openai:0.11.0-cu128", (0, 11, 0)),
    ("registry.local:5000/vllm/vllm-openai:v0.8.5.post1", (0, 8, 5)), ("vllm/vllm-openai:v0.10.1.1", (0, 10, 1)),
    ("vllm/vllm-openai:v0.9", (0, 9, 0)), ("vllm/vllm-openai:latest", None), ("vllm/vllm-openai", None),
    ("registry.local:5000/vllm", None), ("nvcr.io/nvidia/vllm:25.09-py3", None),
    ("vllm/vllm-openai@sha256:0123abcd", None), ("vllm/vllm-openai:v0.6.3@sha256:0123abcd", (0, 6, 3)),
])
def test_version_from_the_image_tag(image: str, version: tuple[int, int, int] | None) -> None:
    assert image_version(image) == version


def test_which_engine() -> None:
    assert engine_of("vllm/vllm-openai:v0.6.3", {}) == Engine((0, 6, 3), v1=False, known=True)
    assert not engine_of("vllm/vllm-openai:v0.7.3", {}).v1
    assert engine_of("vllm/vllm-openai:v0.7.3", {"VLLM_USE_V1": "1"}).v1
    assert engine_of("vllm/vllm-openai:v0.8.5", {}).v1
    assert not engine_of("vllm/vllm-openai:v0.8.5", {"VLLM_USE_V1": "0"}).v1
    assert engine_of("vllm/vllm-openai:v0.11.0", {"VLLM_USE_V1": "0"}).v1  # V0 is gone
    unknown = engine_of("vllm/vllm-openai:latest", {})
    assert unknown == Engine(capacity.NEWEST_ASSUMED, v1=True, known=False)
    assert "no vLLM version in the image tag: assumed the newest known behaviour" in unknown.describe()


def test_extra_args_override_the_fields_as_vllm_reads_them() -> None:
    flags = flags_of(model(max_model_len=4096, max_num_seqs=64, extra_args=[
        "--max-num-seqs", "32", "--max-model-len=8192", "--enforce-eager", "--block_size", "32",
        "--kv-cache-dtype", "fp8", "--no-enable-chunked-prefill", "--max-num-batched-tokens", "oops"]))
    assert (flags.max_num_seqs, flags.max_model_len, flags.enforce_eager, flags.block_size) == (32, 8192, True, 32)
    assert (flags.kv_cache_dtype, flags.chunked_prefill, flags.max_num_batched_tokens) == ("fp8", False, None)
    assert flags_of(model(extra_args=["--enable-chunked-prefill=False"])).chunked_prefill is False


def test_unquantized_weights_and_tensor_parallel() -> None:
    w = weights(model(tensor_parallel=2), LLAMA_8B)
    assert w.total_bytes == pytest.approx(8.03e9 * 2) and w.per_gpu_bytes == pytest.approx(8.03e9)
    assert w.formula == "8.03B params x 2 bytes (bfloat16) / tensor_parallel 2"


def test_quantized_checkpoints_keep_16_bit_embeddings() -> None:
    # vllm#13882 logged 5.2032 GiB for Qwen2.5-7B-Instruct-bnb-4bit; not params x 0.5 bytes (3.5 GiB)
    qwen = ModelShapes().of(model(source="Qwen/Qwen2.5-7B-Instruct"))
    assert isinstance(qwen, ModelShape)
    bnb = weights(model(params_b=7.62, quantization="bitsandbytes"), qwen)
    assert bnb.per_gpu_bytes / GiB == pytest.approx(5.2032, rel=0.01)
    # llm-d and vllm#12569 logged 67.72 GiB for Llama-3.x-70B in FP8 and in w8a8
    llama70 = ModelShapes().of(model(source="meta-llama/Llama-3.3-70B-Instruct"))
    assert isinstance(llama70, ModelShape)
    for quant in ("fp8", "int8"):
        assert weights(model(params_b=70.6, quantization=quant), llama70).per_gpu_bytes / GiB == pytest.approx(
            67.72, rel=0.005)
    # 4-bit AWQ/GPTQ: scales and zero points per group of 128 come on top of half a byte
    awq = weights(model(params_b=70.6, quantization="awq"), llama70)
    embedding = 128256 * 8192 * 2
    assert awq.total_bytes == pytest.approx(embedding * 2 + (70.6e9 - embedding) * (0.5 + 2.5 / 128))
    assert awq.assumptions == ()


def test_tied_embeddings_count_once_and_unknown_shapes_are_said() -> None:
    tied = ModelShape(layers=16, kv_heads=8, head_dim=64, hidden_size=2048, vocab_size=128256, tie_word_embeddings=True)
    untied = ModelShape(layers=16, kv_heads=8, head_dim=64, hidden_size=2048, vocab_size=128256)
    m = model(params_b=1.24, quantization="gptq")
    assert weights(m, untied).total_bytes - weights(m, tied).total_bytes == pytest.approx(
        128256 * 2048 * (2 - capacity.QUANTIZED_BYTES_PER_PARAM["gptq"]))
    unknown = weights(m, None)
    assert any("hidden_size unknown" in a for a in unknown.assumptions)
    assert any("vocab_size unknown" in a for a in unknown.assumptions)


def test_gpu_totals() -> None:
    assert gpu_of(80 * GiB, "A100-80GB").total_bytes == round(79.25 * GiB)
    assert gpu_of(40 * GiB, "A100-SXM4-40GB").total_bytes == round(39.50 * GiB)
    assert gpu_of(24 * GiB, "A10G").total_bytes == round(22.06 * GiB)
    assert gpu_of(80 * GiB, "H100 SXM").total_bytes == round(79.18 * GiB)
    # a product whose declared size is not the one whose total was logged: the declared size, less the usual share
    nvl = gpu_of(94 * GiB, "H100 NVL")
    assert nvl.total_bytes == round(94 * GiB * capacity.GPU_VISIBLE_FRACTION)
    assert "94 GiB x 0.985" in nvl.basis
    assert gpu_of(48 * GiB, "L40S").total_bytes == round(48 * GiB * capacity.GPU_VISIBLE_FRACTION)


def per_token(m: LlmModel, shape: ModelShape, gpu: capacity.Gpu = H100) -> int:
    return estimate(m, shape, gpu, max_model_len=4096).kv_bytes_per_token


def test_kv_bytes_per_token() -> None:
    assert per_token(model(image="vllm/vllm-openai:v0.11.0"), LLAMA_8B) == 2 * 32 * 8 * 128 * 2 == 131072
    assert per_token(model(kv_cache_dtype="fp8"), LLAMA_8B) == 65536
    assert per_token(model(dtype="float32"), LLAMA_8B) == 262144
    # 8 KV heads over 4 GPUs: 2 each; over 16 GPUs: replicated, one each (vLLM's get_num_kv_heads)
    assert per_token(model(tensor_parallel=4), LLAMA_8B) == 2 * 32 * 2 * 128 * 2
    assert per_token(model(tensor_parallel=16), LLAMA_8B) == 2 * 32 * 1 * 128 * 2
    # MLA caches one latent vector per token and layer, the same on every GPU; before v0.7 every head's K and V
    mla = ModelShape(layers=27, kv_heads=16, head_dim=192, hidden_size=2048, vocab_size=102400,
                     mla=Mla(kv_lora_rank=512, qk_rope_head_dim=64))
    assert per_token(model(image="vllm/vllm-openai:v0.8.5", tensor_parallel=2), mla) == 27 * 576 * 2
    assert per_token(model(image="vllm/vllm-openai:v0.6.3", tensor_parallel=2), mla) == 2 * 27 * 8 * 192 * 2


def test_the_profiling_run_by_engine_version() -> None:
    def batch(gpu: capacity.Gpu = H100, **fields: Any) -> tuple[int, int]:
        est = estimate(model(**fields), LLAMA_8B, gpu)
        return est.profile_tokens, est.profile_requests

    a100 = gpu_of(80 * GiB, "A100-80GB")
    # V0 without chunked prefill profiles a whole max_model_len prefill (at least 2048 tokens) in 256 requests
    assert batch(image="vllm/vllm-openai:v0.6.3", max_model_len=20000) == (20000, 256)
    assert batch(image="vllm/vllm-openai:v0.6.3", max_model_len=1024) == (2048, 256)
    # above 32k tokens V0 chunks by itself: 512-token chunks until v0.6.5, 2048 after
    assert batch(image="vllm/vllm-openai:v0.6.3", max_model_len=65536) == (512, 256)
    assert batch(image="vllm/vllm-openai:v0.7.3", max_model_len=65536) == (2048, 256)
    assert batch(image="vllm/vllm-openai:v0.7.3", max_model_len=65536,
                 extra_args=["--no-enable-chunked-prefill"]) == (65536, 256)
    # V1 always chunks: 8192 tokens and 1024 requests on GPUs of 70 GiB or more, except A100s from v0.9
    assert batch(image="vllm/vllm-openai:v0.11.0", max_model_len=131072) == (8192, 1024)
    assert batch(a100, image="vllm/vllm-openai:v0.11.0", max_model_len=8192) == (2048, 256)
    assert batch(a100, image="vllm/vllm-openai:v0.8.5", max_model_len=8192) == (8192, 1024)
    assert batch(gpu_of(24 * GiB, "RTX 4090"), image="vllm/vllm-openai:v0.11.0", max_model_len=8192) == (2048, 256)
    assert batch(image="vllm/vllm-openai:v0.11.0", max_model_len=8192, max_num_batched_tokens=512,
                 max_num_seqs=2048) == (512, 512)  # never more requests than tokens


def test_the_peak_of_the_profiling_run() -> None:
    # V1 on an H100: the sampler over 1024 requests x 128,256 logits dominates (llm-d logged 4.76 GiB)
    est = estimate(model(image="vllm/vllm-openai:v0.11.0", max_model_len=16000), LLAMA_8B, H100)
    assert est.activation_bytes == 1024 * 128256 * capacity.SAMPLER_BYTES_PER_LOGIT
    assert est.activation_bytes / GiB == pytest.approx(4.76, rel=0.03)
    flashinfer = estimate(model(image="vllm/vllm-openai:v0.11.0", max_model_len=16000,
                                env={"VLLM_USE_FLASHINFER_SAMPLER": "1"}), LLAMA_8B, H100)
    assert flashinfer.activation_bytes == 1024 * 128256 * capacity.FLASHINFER_SAMPLER_BYTES_PER_LOGIT
    # V0 at 29,000 tokens: the forward pass dominates (vllm#10517 logged 2.99 GiB)
    v0 = estimate(model(image="vllm/vllm-openai:v0.6.4", max_model_len=29000), LLAMA_8B, H100)
    assert v0.activation_bytes == round(29000 * capacity.FORWARD_BYTES_PER_TOKEN_WIDTH * (4096 + 14336))
    assert v0.activation_bytes / GiB == pytest.approx(2.99, rel=0.03)


def test_non_torch_memory_and_cuda_graphs() -> None:
    one = estimate(model(image="vllm/vllm-openai:v0.11.0", max_model_len=8192), LLAMA_8B, H100)
    two = estimate(model(image="vllm/vllm-openai:v0.11.0", max_model_len=8192, tensor_parallel=2), LLAMA_8B, H100)
    assert one.non_torch_bytes == round(0.15 * GiB) and two.non_torch_bytes == round(0.55 * GiB)
    assert one.cuda_graph_bytes == 0  # captured after the KV cache is sized, outside gpu_memory_utilization
    new = estimate(model(image="vllm/vllm-openai:v0.22.0", max_model_len=8192), LLAMA_8B, H100)
    assert new.cuda_graph_bytes == round(capacity.CUDA_GRAPH_GIB * GiB)
    assert new.kv_cache_bytes == one.kv_cache_bytes - new.cuda_graph_bytes
    eager = estimate(model(image="vllm/vllm-openai:v0.22.0", max_model_len=8192, enforce_eager=True), LLAMA_8B, H100)
    assert eager.cuda_graph_bytes == 0


def test_the_kv_cache_and_its_verdicts() -> None:
    est = estimate(model(image="vllm/vllm-openai:v0.11.0", max_model_len=16000), LLAMA_8B, H100)
    usable = round(79.18 * GiB * 0.9)
    assert est.usable_bytes == usable
    assert est.kv_cache_bytes == usable - round(8.03e9 * 2) - est.activation_bytes - est.non_torch_bytes
    assert est.kv_cache_tokens == est.kv_cache_bytes // (131072 * 16) * 16
    assert est.request_bytes == math.ceil(16000 / 16) * 16 * 131072
    assert est.verdict == "fits" and est.max_concurrency == pytest.approx(est.kv_cache_bytes / est.request_bytes)
    assert est.longest_fitting == est.kv_cache_bytes // (131072 * 16) * 16
    too_long = estimate(model(image="vllm/vllm-openai:v0.11.0", max_model_len=500_000), LLAMA_8B, H100)
    assert too_long.verdict == "too_long" and too_long.headroom_ratio < 1
    no_room = estimate(model(params_b=80, image="vllm/vllm-openai:v0.11.0", max_model_len=8192), LLAMA_8B, H100)
    assert no_room.verdict == "no_memory" and no_room.kv_cache_tokens == 0 and no_room.longest_fitting == 0
    # V0 compares max_model_len with whole blocks of tokens
    v0 = estimate(model(image="vllm/vllm-openai:v0.6.3", max_model_len=16000), LLAMA_8B, H100)
    assert v0.request_bytes == 16000 * 131072 and v0.longest_fitting == v0.kv_cache_tokens
    assert "vLLM 0.6.3 (V0 engine, from the image tag)" in v0.assumptions[0]


def test_sliding_window_layers_in_v1_hold_a_window_per_request() -> None:
    # dennislee22's gpt-oss-120b log (vLLM 0.10.1.1, TP 4): 45.32 GiB of KV cache, "GPU KV cache size: 2,640,144
    # tokens" and "Maximum concurrency for 16,384 tokens per request: 284.25x"; half its 36 layers use a
    # 128-token window
    shape = ModelShape(layers=36, kv_heads=8, head_dim=64, sliding_window=128, sliding_layers=18)
    engine = engine_of("vllm/vllm-openai:v0.10.1.1", {})
    per_layer = 2 * (8 // 4) * 64 * 2
    kv = round(45.32 * GiB)
    assert kv // (per_layer * 36 * 16) * 16 == pytest.approx(2_640_144, rel=0.001)
    request = request_kv_bytes(shape, 16384, per_layer, 16, engine, 2048)
    assert kv / request == pytest.approx(284.25, rel=0.002)
    # V0, and V1 before its hybrid KV manager, keep every layer at full length
    old = engine_of("vllm/vllm-openai:v0.9.2", {})
    assert request_kv_bytes(shape, 16384, per_layer, 16, old, 2048) == 36 * 1024 * 16 * per_layer


def test_cuda_graphs_outside_the_budget() -> None:
    tight = model(image="vllm/vllm-openai:v0.11.0", gpu_memory_utilization=0.98)
    problem = cuda_graph_headroom_problem(tight, gpu_of(24 * GiB, "RTX 4090"))
    assert problem is not None and "leaves 0.47 GiB of the 23.64 GiB outside vLLM's budget" in problem
    assert cuda_graph_headroom_problem(model(image="vllm/vllm-openai:v0.11.0"), H100) is None
    assert cuda_graph_headroom_problem(model(image="vllm/vllm-openai:v0.22.0", gpu_memory_utilization=0.98),
                                       H100) is None  # profiled inside the budget since v0.21
    eager = model(image="vllm/vllm-openai:v0.11.0", gpu_memory_utilization=0.98, enforce_eager=True)
    assert cuda_graph_headroom_problem(eager, H100) is None


def test_every_constant_says_where_it_comes_from() -> None:
    """Each UPPER_CASE constant of the memory model is followed by its docstring."""
    tree = ast.parse(Path(capacity.__file__).read_text(encoding="utf-8"))
    body = tree.body
    undocumented = []
    for i, node in enumerate(body):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        names = [n.id for t in targets for n in ([t] if isinstance(t, ast.Name) else getattr(t, "elts", []))
                 if isinstance(n, ast.Name)]
        if not names or any(n.startswith("_") for n in names) or not all(n.isupper() for n in names if n != "GiB"):
            continue
        following = body[i + 1] if i + 1 < len(body) else None
        documented = (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                      and isinstance(following.value.value, str))
        if not documented:
            undocumented.extend(names)
    assert undocumented == []
