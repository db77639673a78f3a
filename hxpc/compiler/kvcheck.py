"""The start-up check of model servers: will vLLM find room for a KV cache that holds one max_model_len sequence?

For every host with a GPU budget and every model placed on it, the memory
model (capacity.py) predicts the KV cache of one GPU of a replica. vLLM
refuses to start when none is left (HX322) or when one `max_model_len`
sequence does not fit (HX321); within `NEAR_LIMIT_MARGIN` of that limit the
prediction is not sure enough to fail on, so it is a warning (HX323). Before
v0.21, CUDA graphs are captured outside `gpu_memory_utilization`; too little
room for them is a warning too (HX324). A model whose architecture is not
known cannot be checked: that is an error saying what to add (HX320).
"""

from __future__ import annotations

from collections.abc import Iterator

from hxpc.compiler.architecture import ModelShape, ShapeProblem
from hxpc.compiler.capacity import NEAR_LIMIT_MARGIN, Estimate, GiB, cuda_graph_headroom_problem, estimate, gpu_of
from hxpc.compiler.load import KeyPath
from hxpc.compiler.model import Workload
from hxpc.compiler.spec import GpuBudget, LlmModel
from hxpc.diagnostics import Severity
from hxpc.records import record


@record
class KvProblem:
    """An HX32x problem of one model on one host, and the key path it points at."""

    code: str
    message: str
    path: KeyPath
    hint: str
    severity: Severity = "error"


def _remedies(model: LlmModel, est: Estimate) -> str:
    steps = [f"lower max_model_len to {est.longest_fitting:,} or less" if est.longest_fitting else None,
             "raise gpu_memory_utilization or tensor_parallel",
             "set kv_cache_dtype: fp8" if model.kv_cache_dtype == "auto" else None,
             "quantize the model" if model.quantization is None else None]
    return ", ".join(s for s in steps if s)


def check_model_on_host(name: str, workload: Workload, host: str, gpus: GpuBudget) -> Iterator[KvProblem]:
    """The KV-cache problems of model `name` on one GPU of `host` (its weights are known to fit)."""
    model = workload.model
    if model is None:
        return
    shape = workload.shape
    if not isinstance(shape, ModelShape):
        problem = shape or ShapeProblem(f"the architecture of `{model.source}` is not known", "add `architecture`",
                                        ("source",))
        yield KvProblem("HX320", f"model `{name}`: {problem.message}; its KV cache on `{host}` cannot be checked",
                        ("models", name, *problem.at), problem.hint)
        return
    # a length the spec does not set is shown at the model's name (the span falls back to the parent's key)
    path: KeyPath = ("models", name, "max_model_len")
    if model.max_model_len is None and shape.max_position_embeddings is None:
        yield KvProblem("HX320", f"model `{name}`: `max_model_len` is not set and hxpc does not know how many "
                                 f"positions `{model.source}` has, which vLLM would use instead", path,
                        "set `max_model_len`")
        return
    gpu = gpu_of(gpus.memory, gpus.model)
    est = estimate(model, shape, gpu)
    where = f"model `{name}` on `{host}`"
    said = f"{est.breakdown()}; {est.engine.describe()}"
    if est.verdict == "no_memory":
        yield KvProblem(
            "HX322", f"{where} would not start: no memory is left for a KV cache: {said}", path,
            "raise tensor_parallel or gpu_memory_utilization, quantize the model, or lower max_num_seqs (the "
            f"profiling run peaks at {est.activation_bytes / GiB:.2f} GiB with {est.profile_requests:,} requests)")
        return
    if est.engine.v1:
        have, ratio = est.kv_cache_bytes, est.headroom_ratio
    else:  # V0 compares whole blocks of tokens with max_model_len
        have, ratio = est.kv_cache_tokens * est.kv_bytes_per_token, est.kv_cache_tokens / est.max_model_len
    sequence = (f"one {est.max_model_len:,}-token sequence needs {est.request_bytes / GiB:.2f} GiB of KV cache per "
                f"GPU and {have / GiB:.2f} GiB is predicted ({est.kv_cache_tokens:,} tokens: {said})")
    if ratio < 1 - NEAR_LIMIT_MARGIN:
        yield KvProblem("HX321", f"{where} would not start: {sequence}", path, _remedies(model, est))
    elif ratio < 1 + NEAR_LIMIT_MARGIN:
        yield KvProblem("HX323", f"{where} is within {NEAR_LIMIT_MARGIN:.0%} of vLLM's KV-cache limit "
                                 f"(predicted at {ratio:.0%} of it), closer than hxpc can tell: vLLM may refuse to "
                                 f"start: {sequence}", path, "to be safe, " + _remedies(model, est),
                        severity="warning")
    graphs = cuda_graph_headroom_problem(model, gpu)
    if graphs is not None:
        yield KvProblem("HX324", f"{where} may run out of memory capturing CUDA graphs: {graphs}",
                        ("models", name, "gpu_memory_utilization"),
                        "lower gpu_memory_utilization, or set enforce_eager: true", severity="warning")
