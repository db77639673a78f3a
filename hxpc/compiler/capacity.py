"""The memory model: how much KV cache vLLM finds on each GPU of a model replica, and whether it starts.

vLLM sizes its KV cache once, at start-up, per GPU of a replica:

    usable   = total memory x gpu_memory_utilization
    kv_cache = usable - weights / tensor_parallel - peak of a profiling run - non-torch memory
               [- CUDA graphs, from v0.21]

and refuses to start when `kv_cache <= 0` ("No available memory for the cache
blocks") or when one `max_model_len` sequence does not fit ("The model's max
seq len (N) is larger than the maximum number of tokens that can be stored in
KV cache (M)" in the V0 engine, "To serve at least one request with the
model's max seq len ..." in V1). This module predicts those numbers from the
spec alone, engine version by engine version, and says which assumptions it
made. Every constant below is named where it is defined and says where it was
read: `vllm/...` paths are files of the released vLLM wheel of the version
named; the start-up logs that check them are the calibration set in
tests/data/capacity/vllm_startup_logs.yaml (`bench/capacity.py` prints the
comparison). Nothing here reads files or talks to a GPU.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from hxpc.compiler.architecture import ModelShape
from hxpc.records import record

if TYPE_CHECKING:
    from hxpc.compiler.spec import LlmModel

GiB = 2**30
"""vLLM's logs say GiB (and old ones 'GB' for the same 2**30 bytes)"""
Version = tuple[int, int, int]

# ---------------------------------------------------------------------------------------------------------------
# Engine versions: what changed when (vllm/engine/arg_utils.py, vllm/envs.py, vllm/worker/*, vllm/v1/worker/*).
# ---------------------------------------------------------------------------------------------------------------

NEWEST_ASSUMED: Version = (0, 31, 0)
"""the newest release whose source this model was checked against; an image without a version tag gets its rules"""
V1_OPT_IN_FROM: Version = (0, 7, 0)
"""VLLM_USE_V1=1 selects the V1 engine (vllm/envs.py v0.7.3, default "0")"""
V1_DEFAULT_FROM: Version = (0, 8, 0)
"""V1 is the default engine (vllm/envs.py v0.8.5, VLLM_USE_V1 default "1"); VLLM_USE_V1=0 still selects V0"""
V0_REMOVED_FROM: Version = (0, 11, 0)
"""the V0 engine is gone (vllm/v1 only in v0.11.0); VLLM_USE_V1 no longer matters"""
V0_LONG_CONTEXT_CHUNKED_FROM: Version = (0, 6, 0)
"""V0 turns chunked prefill on by itself above 32,768 tokens (vllm/engine/arg_utils.py v0.6.3,
`use_long_context`); read in v0.6.3, assumed for the 0.6 series"""
V0_LONG_CONTEXT_TOKENS = 32768
"""... above this max_model_len (vllm/engine/arg_utils.py v0.6.3: `use_long_context = max_model_len > 32768`)"""
V0_CHUNKED_BATCH_OLD = 512
"""V0's max_num_batched_tokens with chunked prefill up to v0.6.5 (vllm/config.py SchedulerConfig, v0.5.5 and v0.6.3)"""
V0_CHUNKED_BATCH_FROM: Version = (0, 6, 6)
"""the first version read with the larger chunk (v0.6.4 and v0.6.5 were not read: assumed to have the old one)"""
V0_CHUNKED_BATCH = 2048
"""... and from v0.6.6 (vllm/config.py SchedulerConfig, v0.6.6 and v0.7.3)"""
V0_MIN_BATCH = 2048
"""V0 without chunked prefill profiles max(max_model_len, 2048) tokens (vllm/config.py SchedulerConfig, v0.4-v0.7)"""
V0_MAX_NUM_SEQS = 256
"""V0's default max_num_seqs (vllm/engine/arg_utils.py, v0.4.0-v0.7.3)"""
V1_SERVER_BATCH_LARGE_GPU, V1_SERVER_SEQS_LARGE_GPU = 8192, 1024
"""V1's OpenAI-server defaults of max_num_batched_tokens and max_num_seqs on GPUs of at least 70 GiB ..."""
V1_SERVER_BATCH, V1_SERVER_SEQS = 2048, 256
"""... and on the others (vllm/engine/arg_utils.py `_set_default_args`, v0.8.5 to v0.22.0)"""
V1_LARGE_GPU_GIB = 70
"""the GPU memory from which V1 takes the large defaults (`device_memory >= 70 * GiB_bytes`, arg_utils.py v0.11.0)"""
V1_LARGE_GPU_EXCLUDES_A100_FROM: Version = (0, 9, 0)
"""from v0.9.0 an A100 gets the small defaults whatever its memory (PR #17885; arg_utils.py v0.9.0, v0.11.0)"""
V1_HYBRID_KV_FROM: Version = (0, 10, 0)
"""V1's hybrid KV-cache manager sizes sliding-window layers by their window (vllm/v1/kv_cache_interface.py
SlidingWindowSpec, v0.10.1 and v0.11.0); before it, and in V0, every layer is cached at full length"""
MLA_FROM: Version = (0, 7, 0)
"""vLLM caches multi-head latent attention compressed (`use_mla` in vllm/config.py v0.7.x); before, DeepSeek V2/V3
were cached as full multi-head attention with 192-wide K and V"""
CUDA_GRAPHS_PROFILED_FROM: Version = (0, 21, 0)
"""CUDA-graph memory is estimated and subtracted before the KV cache is sized (vllm/v1/worker/gpu_worker.py
v0.22.0, "CUDA graph memory profiling is enabled (default since v0.21.0)"); before, graphs are captured after the
KV cache is allocated and take memory outside gpu_memory_utilization"""

# ---------------------------------------------------------------------------------------------------------------
# Memory constants, each checked against logged start-ups (tests/data/capacity/vllm_startup_logs.yaml).
# ---------------------------------------------------------------------------------------------------------------

BLOCK_SIZE = 16
"""default KV block size in tokens (vllm/engine/arg_utils.py v0.4-v0.6.3, vllm/platforms/cuda.py v0.6.6+)"""
MLA_BLOCK_SIZE = 64
"""V1 forces 64-token blocks for FlashMLA (vllm/platforms/cuda.py v0.11.0)"""
SAMPLER_BYTES_PER_LOGIT = 39
"""bytes per (request x vocabulary entry) at the peak of the profiling run's sampler without FlashInfer: bf16
logits, their fp32 copy, the sorted copy with int64 indices, masks, softmax and the exponential noise of
vllm/v1/sample/ops/topk_topp_sampler.py `forward_native` (V0's sampler sorts the same way). Fitted on the llm-d
H100 runs (v0.11.0, 1024 requests): 38.4-39.6 bytes for five models; checks V0 runs (256 requests) too"""
FLASHINFER_SAMPLER_BYTES_PER_LOGIT = 12
"""... with VLLM_USE_FLASHINFER_SAMPLER=1 (FlashInfer samples without sorting: logits, fp32 copy, probabilities);
from the dennislee22 A100 logs, v0.10.1.1, which say "Using FlashInfer for top-p & top-k sampling\""""
FORWARD_BYTES_PER_TOKEN_WIDTH = 6
"""bytes per token per unit of (hidden_size + MLP width / tensor_parallel) at the peak of the profiling forward
pass: about three bf16 copies of each; fitted on vllm#10517 (Llama-3.1-8B, V0, 20k and 29k-token profiles: 2.07
and 2.99 GiB)"""
NON_TORCH_GIB_SINGLE_GPU = 0.15
"""memory outside PyTorch's allocator that the profiling run adds with tensor_parallel 1 (cuBLAS workspace and
the like): llm-d logged 0.13-0.14 GiB on v0.11.0, vllm#13882 0.03 GiB on v0.7.3"""
NON_TORCH_GIB_MULTI_GPU = 0.55
"""... with tensor_parallel above 1 (NCCL and custom all-reduce buffers): llm-d logged 0.54-0.55 GiB at TP 2"""
CUDA_GRAPH_GIB = 1.0
"""CUDA-graph memory per GPU, subtracted from v0.21 unless enforce_eager: logged captures took 0.50-2.24 GiB"""
GPU_VISIBLE_FRACTION = 0.985
"""the share of a GPU's nominal memory that CUDA reports as its total (torch.cuda.mem_get_info): 23.58 of 24 GiB
(RTX 3090, vllm#10517), 79.18 of 80 (H100, llm-d), 79.25 of 80 (A100); for GPUs not in GPU_TOTALS"""
GPU_TOTALS: tuple[tuple[str, float, float, str], ...] = (
    ("h100", 80, 79.18, "llm-d-benchmark empirical-vllm-memory-results.md: 'Free memory on device (78.57/79.18 GiB)'"),
    ("a100", 80, 79.25, "HiDream-ai/VAREdit#6: 'GPU 0 has a total capacity of 79.25 GiB'; the dennislee22 logs agree"),
    ("a100", 40, 39.50, "TianheWu/CoSeR#10: 'GPU 0 has a total capacity of 39.50 GiB' on an A100 40GB"),
    ("a10(?!0)", 24, 22.06, "vllm#928: '22.06 GiB total capacity' on an A10 (the A10G has the same 24 GB with ECC)"),
    ("3090", 24, 23.58, "vllm#10517: 'total_gpu_memory=23.58GiB'"),
)
"""(product name pattern, nominal GiB, total CUDA reports in GiB, source) for GPUs whose total was logged; a
data-centre card with ECC reports noticeably less than its nominal size"""
NEAR_LIMIT_MARGIN = 0.1
"""predictions within this share of vLLM's limit are warnings, not errors: the calibration set's KV-token errors
are mostly within it"""
UNKNOWN_VOCAB = 152064
"""vocabulary assumed when nobody gave one: Qwen2.5's, larger than most, so the sampler's share is not understated"""
UNKNOWN_MLP_RATIO = 3.5
"""MLP width / hidden size assumed when not given (Llama 3 and Mistral: 14336 / 4096)"""
PARAMS_PER_LAYER_HIDDEN_SQUARED = 12
"""a dense transformer layer holds about 12 x hidden_size^2 parameters: estimates hidden_size from params_b"""

# How checkpoints are stored: bytes per parameter of the quantized layers. Embeddings and lm_head stay in 16-bit
# (AutoAWQ, AutoGPTQ, bitsandbytes and llm-compressor skip them), so they are counted apart.
GROUP_SCALE_BYTES = 2.5 / 128
"""AWQ/GPTQ/int4: one fp16 scale and one 4-bit zero point per group of 128 weights"""
BNB_ABSMAX_BYTES = 1 / 64
"""bitsandbytes NF4: one 8-bit absmax per block of 64 weights (double quantization; vLLM loads 4-bit checkpoints);
checks vllm#13882: Qwen2.5-7B-Instruct-bnb-4bit took 5.20 GiB, this gives 5.17"""
QUANTIZED_BYTES_PER_PARAM: dict[str, float] = {
    "fp8": 1.0, "int8": 1.0, "awq": 0.5 + GROUP_SCALE_BYTES, "gptq": 0.5 + GROUP_SCALE_BYTES,
    "int4": 0.5 + GROUP_SCALE_BYTES, "bitsandbytes": 0.5 + BNB_ABSMAX_BYTES,
}
"""bytes per quantized parameter; fp8/int8 scales are per tensor or channel, too few to count. Checks the llm-d and
vllm#12569 logs: Llama-3.x-70B in FP8 and in w8a8 took 67.72 GiB, this gives 67.71"""
DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}
"""bytes per parameter (and per KV element with kv_cache_dtype auto) of each dtype"""
KV_DTYPE_BYTES: dict[str, int] = {"fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}
"""bytes per KV element of an fp8 KV cache (vllm/utils.py STR_DTYPE_TO_TORCH_DTYPE)"""

_TAG_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[.+\-].*)?$")


@record
class Engine:
    """The vLLM version a model's image runs, and which engine it uses."""

    version: Version
    v1: bool
    known: bool
    """False: no version in the image tag; the rules of NEWEST_ASSUMED are used"""

    def at_least(self, version: Version) -> bool:
        return self.version >= version

    def describe(self) -> str:
        engine = "V1 engine" if self.v1 else "V0 engine"
        if not self.known:
            shown = ".".join(map(str, NEWEST_ASSUMED))
            return f"no vLLM version in the image tag: assumed the newest known behaviour (v{shown}, {engine})"
        return f"vLLM {'.'.join(map(str, self.version))} ({engine}, from the image tag)"


def image_version(image: str) -> Version | None:
    """The vLLM version in an image tag (`vllm/vllm-openai:v0.6.3`, `...:0.11.0-cu128`), or None."""
    name = image.split("@", 1)[0]
    if ":" not in name.rsplit("/", 1)[-1]:
        return None
    match = _TAG_VERSION.match(name.rsplit(":", 1)[1])
    if match is None or match.group(1) != "0":  # vLLM is 0.x; other numbering (NGC's 25.09) says nothing
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def engine_of(image: str, env: Mapping[str, str]) -> Engine:
    version = image_version(image)
    known = version is not None
    version = version or NEWEST_ASSUMED
    chosen = env.get("VLLM_USE_V1")
    if version >= V0_REMOVED_FROM:
        v1 = True
    elif version >= V1_DEFAULT_FROM:
        v1 = chosen != "0"
    elif version >= V1_OPT_IN_FROM:
        v1 = chosen == "1"
    else:
        v1 = False
    return Engine(version, v1, known)


@record
class Flags:
    """The settings vLLM starts with: the model's fields, then what `extra_args` overrides (the last flag wins)."""

    max_model_len: int | None
    gpu_memory_utilization: float
    kv_cache_dtype: str
    max_num_batched_tokens: int | None
    max_num_seqs: int | None
    enforce_eager: bool
    block_size: int | None
    chunked_prefill: bool | None


def flags_of(model: LlmModel) -> Flags:
    values: dict[str, object] = {
        "max_model_len": model.max_model_len, "gpu_memory_utilization": model.gpu_memory_utilization,
        "kv_cache_dtype": model.kv_cache_dtype, "max_num_batched_tokens": model.max_num_batched_tokens,
        "max_num_seqs": model.max_num_seqs, "enforce_eager": model.enforce_eager, "block_size": None,
        "chunked_prefill": None,
    }
    numeric = {"--max-model-len": ("max_model_len", int), "--gpu-memory-utilization": ("gpu_memory_utilization", float),
               "--max-num-batched-tokens": ("max_num_batched_tokens", int), "--max-num-seqs": ("max_num_seqs", int),
               "--block-size": ("block_size", int), "--kv-cache-dtype": ("kv_cache_dtype", str)}
    args = list(model.extra_args)
    for i, arg in enumerate(args):
        flag, _, inline = arg.partition("=")
        flag = flag.replace("_", "-")
        if flag in numeric:
            name, kind = numeric[flag]
            text = inline if inline else (args[i + 1] if i + 1 < len(args) else "")
            try:
                values[name] = kind(text)
            except ValueError:
                continue  # vLLM refuses it itself
        elif flag == "--enforce-eager":
            values["enforce_eager"] = inline.lower() not in ("false", "0") if inline else True
        elif flag == "--enable-chunked-prefill":
            values["chunked_prefill"] = inline.lower() not in ("false", "0") if inline else True
        elif flag == "--no-enable-chunked-prefill":
            values["chunked_prefill"] = False
    return Flags(**values)  # type: ignore[arg-type]


@record
class Gpu:
    """A GPU as vLLM sees it: the total CUDA reports, and the product name (vLLM's defaults depend on it)."""

    total_bytes: int
    product: str
    basis: str


def gpu_of(declared_bytes: int, product: str) -> Gpu:
    """What CUDA reports as the total of a GPU the spec declares as `declared_bytes` of `product`."""
    name = product.lower().replace(" ", "")
    declared_gib = declared_bytes / GiB
    for pattern, nominal, total, _source in GPU_TOTALS:
        if re.search(pattern, name) and abs(declared_gib - nominal) <= 0.1 * nominal:
            return Gpu(round(total * GiB), product, f"{total:g} GiB, what CUDA reports for a {nominal:g} GiB {product}")
    total_bytes = round(declared_bytes * GPU_VISIBLE_FRACTION)
    return Gpu(total_bytes, product, f"{declared_gib:g} GiB x {GPU_VISIBLE_FRACTION:g} (the share CUDA reports of a "
                                     f"GPU's nominal memory) = {total_bytes / GiB:.2f} GiB")


@record
class Weights:
    """A checkpoint's size in GPU memory, whole and per GPU, and how it was reckoned."""

    total_bytes: float
    per_gpu_bytes: float
    formula: str
    assumptions: tuple[str, ...]


def _hidden_estimate(model: LlmModel, shape: ModelShape | None) -> int:
    layers = shape.layers if shape else 32
    return int(math.sqrt(model.params_b * 1e9 / (PARAMS_PER_LAYER_HIDDEN_SQUARED * layers)))


def weights(model: LlmModel, shape: ModelShape | None) -> Weights:
    """Bytes of weights: params x dtype, or quantized layers at their stored size and 16-bit embeddings."""
    params = model.params_b * 1e9
    tp = model.tensor_parallel
    dense = DTYPE_BYTES[model.dtype]
    if model.quantization is None:
        total = params * dense
        formula = f"{model.params_b:g}B params x {dense} bytes ({model.dtype})"
        return Weights(total, total / tp, f"{formula} / tensor_parallel {tp}", ())
    assumptions: list[str] = []
    hidden = shape.hidden_size if shape and shape.hidden_size else None
    vocab = shape.vocab_size if shape and shape.vocab_size else None
    if hidden is None:
        hidden = _hidden_estimate(model, shape)
        assumptions.append(f"hidden_size unknown: estimated {hidden} from params_b")
    if vocab is None:
        vocab = UNKNOWN_VOCAB
        assumptions.append(f"vocab_size unknown: assumed {vocab:,}")
    tied = bool(shape and shape.tie_word_embeddings)
    embedding = min(params, vocab * hidden * (1 if tied else 2))
    per_param = QUANTIZED_BYTES_PER_PARAM[model.quantization]
    unquantized = 2 if dense == 4 else dense  # embeddings of a float32 spec still load in 16-bit
    total = embedding * unquantized + (params - embedding) * per_param
    formula = (f"{embedding / 1e9:.2f}B embedding params x {unquantized} bytes + {(params - embedding) / 1e9:.2f}B "
               f"x {per_param:.3g} bytes ({model.quantization}) / tensor_parallel {tp}")
    return Weights(total, total / tp, formula, tuple(assumptions))


Verdict = Literal["fits", "too_long", "no_memory"]


@record
class Estimate:
    """The prediction for one GPU of a replica (vLLM sizes the cache per GPU and takes the smallest)."""

    engine: Engine
    gpu: Gpu
    gpu_memory_utilization: float
    usable_bytes: int
    weights: Weights
    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    kv_cache_bytes: int
    kv_bytes_per_token: int
    block_size: int
    kv_cache_tokens: int
    max_model_len: int
    request_bytes: int
    max_concurrency: float
    longest_fitting: int
    profile_tokens: int
    profile_requests: int
    assumptions: tuple[str, ...]

    @property
    def non_kv_bytes(self) -> int:
        """What the GPU holds besides the weights and the KV cache: the profiling run's activation peak,
        memory outside torch, and CUDA graphs (the issue's and vLLM's "non-KV"; the weights are their own)."""
        return self.activation_bytes + self.non_torch_bytes + self.cuda_graph_bytes

    @property
    def verdict(self) -> Verdict:
        if self.kv_cache_bytes <= 0:
            return "no_memory"
        return "fits" if self.request_bytes <= self.kv_cache_bytes else "too_long"

    @property
    def headroom_ratio(self) -> float:
        """KV memory per the memory one max_model_len sequence needs (below 1: vLLM refuses)."""
        return self.kv_cache_bytes / self.request_bytes if self.request_bytes else math.inf

    def breakdown(self) -> str:
        g = GiB
        parts = [f"{self.gpu.total_bytes / g:.2f} GiB x {self.gpu_memory_utilization:g} = {self.usable_bytes / g:.2f} "
                 f"GiB usable", f"{self.weights.per_gpu_bytes / g:.2f} weights",
                 f"{self.activation_bytes / g:.2f} profiling peak", f"{self.non_torch_bytes / g:.2f} non-torch"]
        if self.cuda_graph_bytes:
            parts.append(f"{self.cuda_graph_bytes / g:.2f} CUDA graphs")
        return " - ".join(parts) + f" = {self.kv_cache_bytes / g:.2f} GiB of KV cache per GPU"


def kv_dtype_bytes(kv_cache_dtype: str, dtype: str) -> int:
    return KV_DTYPE_BYTES.get(kv_cache_dtype, DTYPE_BYTES[dtype])


def _kv_bytes_per_token_per_layer(shape: ModelShape, tp: int, engine: Engine, dtype_bytes: int) -> int:
    if shape.mla is not None and engine.at_least(MLA_FROM):
        # one latent vector (compressed KV + rotary key) per token and layer, the same on every GPU
        return (shape.mla.kv_lora_rank + shape.mla.qk_rope_head_dim) * dtype_bytes
    heads_per_gpu = max(1, shape.kv_heads // tp)  # vllm/config.py get_num_kv_heads: replicated when tp > kv_heads
    return 2 * heads_per_gpu * shape.head_dim * dtype_bytes


def _profile_batch(engine: Engine, flags: Flags, max_model_len: int, gpu: Gpu) -> tuple[int, int, str]:
    """(tokens, requests) of vLLM's profiling run, and why."""
    if not engine.v1:
        chunked = flags.chunked_prefill
        if chunked is None:
            chunked = engine.at_least(V0_LONG_CONTEXT_CHUNKED_FROM) and max_model_len > V0_LONG_CONTEXT_TOKENS
        if chunked:
            default = V0_CHUNKED_BATCH if engine.at_least(V0_CHUNKED_BATCH_FROM) else V0_CHUNKED_BATCH_OLD
            why = "V0 with chunked prefill"
        else:
            default = max(max_model_len, V0_MIN_BATCH)
            why = "V0 without chunked prefill profiles a full max_model_len prefill"
        tokens = flags.max_num_batched_tokens or default
        requests = min(flags.max_num_seqs or V0_MAX_NUM_SEQS, tokens)
        return tokens, requests, why
    large = gpu.total_bytes >= V1_LARGE_GPU_GIB * GiB and not (
        "a100" in gpu.product.lower() and engine.at_least(V1_LARGE_GPU_EXCLUDES_A100_FROM))
    if flags.chunked_prefill is False:
        default, why = max_model_len, "V1 without chunked prefill profiles a full max_model_len prefill"
    else:
        default = V1_SERVER_BATCH_LARGE_GPU if large else V1_SERVER_BATCH
        why = "V1 always chunks prefills"
    tokens = flags.max_num_batched_tokens or default
    requests = min(flags.max_num_seqs or (V1_SERVER_SEQS_LARGE_GPU if large else V1_SERVER_SEQS), tokens)
    return tokens, requests, why


def request_kv_bytes(shape: ModelShape, length: int, per_layer_token: int, block: int, engine: Engine,
                     batch_tokens: int) -> int:
    """KV bytes one request of `length` tokens needs, as vLLM reckons it before starting."""
    page = block * per_layer_token
    full_blocks = math.ceil(length / block)
    sliding = shape.sliding_layers if shape.sliding_window and engine.v1 and engine.at_least(V1_HYBRID_KV_FROM) else 0
    needed = (shape.layers - sliding) * full_blocks * page
    if sliding and shape.sliding_window:
        # vllm/v1/kv_cache_interface.py SlidingWindowSpec.max_memory_usage_bytes
        window_tokens = min(shape.sliding_window - 1 + batch_tokens, length)
        needed += sliding * (math.ceil(window_tokens / block) + 1) * page
    return needed


def estimate(model: LlmModel, shape: ModelShape, gpu: Gpu, max_model_len: int | None = None) -> Estimate:
    """The KV cache one GPU of a replica of `model` gets on `gpu`, and what one max_model_len request needs."""
    engine = engine_of(model.image, model.env)
    flags = flags_of(model)
    assumptions: list[str] = [engine.describe(), f"GPU total: {gpu.basis}"]
    length = max_model_len or flags.max_model_len or shape.max_position_embeddings
    if length is None:
        raise ValueError("max_model_len is unknown")
    if flags.max_model_len is None and max_model_len is None:
        assumptions.append(f"max_model_len not set: vLLM uses the model's {length:,} positions")
    tp = model.tensor_parallel
    gmu = flags.gpu_memory_utilization
    usable = round(gpu.total_bytes * gmu)
    w = weights(model, shape)
    assumptions.extend(w.assumptions)

    tokens, requests, why = _profile_batch(engine, flags, length, gpu)
    hidden = shape.hidden_size or _hidden_estimate(model, shape)
    mlp = shape.intermediate_size or round(UNKNOWN_MLP_RATIO * hidden)
    vocab = shape.vocab_size or UNKNOWN_VOCAB
    if shape.hidden_size is None:
        assumptions.append(f"hidden_size unknown: estimated {hidden} from params_b")
    if shape.intermediate_size is None:
        assumptions.append(f"MLP width unknown: assumed {UNKNOWN_MLP_RATIO:g} x hidden_size")
    if shape.vocab_size is None:
        assumptions.append(f"vocab_size unknown: assumed {vocab:,}")
    forward = tokens * FORWARD_BYTES_PER_TOKEN_WIDTH * (hidden + mlp / tp)
    flashinfer = model.env.get("VLLM_USE_FLASHINFER_SAMPLER") == "1" and engine.v1
    per_logit = FLASHINFER_SAMPLER_BYTES_PER_LOGIT if flashinfer else SAMPLER_BYTES_PER_LOGIT
    sampler = requests * vocab * per_logit
    activation = round(max(forward, sampler))
    assumptions.append(f"profiling run: {tokens:,} tokens in {requests:,} requests ({why}); its peak is the "
                       f"{'sampler' if sampler >= forward else 'forward pass'}"
                       f"{' (FlashInfer sampler)' if flashinfer else ''}")
    non_torch = round((NON_TORCH_GIB_SINGLE_GPU if tp == 1 else NON_TORCH_GIB_MULTI_GPU) * GiB)
    graphs = 0
    if engine.at_least(CUDA_GRAPHS_PROFILED_FROM) and not flags.enforce_eager:
        graphs = round(CUDA_GRAPH_GIB * GiB)
        assumptions.append(f"CUDA graphs: {CUDA_GRAPH_GIB:g} GiB subtracted before the KV cache is sized")
    kv = usable - round(w.per_gpu_bytes) - activation - non_torch - graphs

    dtype_bytes = kv_dtype_bytes(flags.kv_cache_dtype, model.dtype)
    per_layer = _kv_bytes_per_token_per_layer(shape, tp, engine, dtype_bytes)
    block = flags.block_size or (MLA_BLOCK_SIZE if shape.mla is not None and engine.v1 and engine.at_least(MLA_FROM)
                                 else BLOCK_SIZE)
    per_token = per_layer * shape.layers
    cache_tokens = max(0, kv) // (per_token * block) * block
    if not engine.v1:
        # V0 compares max_model_len with the token count (vllm/worker/worker.py raise_if_cache_size_invalid)
        request = length * per_token
        available = cache_tokens * per_token
    else:
        request = request_kv_bytes(shape, length, per_layer, block, engine, tokens)
        available = max(0, kv)
    concurrency = available / request if request else 0.0
    longest = _longest_fitting(shape, per_layer, per_token, block, engine, tokens, available)
    if shape.sliding_layers and shape.sliding_window and request < length * per_token:
        assumptions.append(f"{shape.sliding_layers} of {shape.layers} layers keep only a {shape.sliding_window:,}-"
                           "token window per request")
    return Estimate(engine=engine, gpu=gpu, gpu_memory_utilization=gmu, usable_bytes=usable, weights=w,
                    activation_bytes=activation, non_torch_bytes=non_torch, cuda_graph_bytes=graphs,
                    kv_cache_bytes=kv, kv_bytes_per_token=per_token, block_size=block, kv_cache_tokens=cache_tokens,
                    max_model_len=length, request_bytes=request, max_concurrency=concurrency,
                    longest_fitting=longest, profile_tokens=tokens, profile_requests=requests,
                    assumptions=tuple(assumptions))


def _longest_fitting(shape: ModelShape, per_layer: int, per_token: int, block: int, engine: Engine,
                     batch_tokens: int, available: int) -> int:
    """The longest max_model_len whose one request still fits in `available` bytes."""
    if available <= 0:
        return 0
    if not engine.v1:
        return available // per_token // block * block
    low, high = 0, max(1, available // per_layer + block)
    while low < high:  # the largest length whose request fits
        middle = (low + high + 1) // 2
        if request_kv_bytes(shape, middle, per_layer, block, engine, batch_tokens) <= available:
            low = middle
        else:
            high = middle - 1
    return low


def cuda_graph_headroom_problem(model: LlmModel, gpu: Gpu) -> str | None:
    """Before v0.21 CUDA graphs are captured outside gpu_memory_utilization: too little left for them, or None."""
    engine = engine_of(model.image, model.env)
    flags = flags_of(model)
    if engine.at_least(CUDA_GRAPHS_PROFILED_FROM) or flags.enforce_eager:
        return None
    outside = gpu.total_bytes * (1 - flags.gpu_memory_utilization)
    if outside >= CUDA_GRAPH_GIB * GiB:
        return None
    return (f"gpu_memory_utilization {flags.gpu_memory_utilization:g} leaves {outside / GiB:.2f} GiB of the "
            f"{gpu.total_bytes / GiB:.2f} GiB outside vLLM's budget, and {engine.describe()} captures CUDA graphs "
            f"(typically {CUDA_GRAPH_GIB:g} GiB or more) there after sizing the KV cache")


def describe_assumptions(assumptions: Sequence[str]) -> str:
    return "; ".join(assumptions)
