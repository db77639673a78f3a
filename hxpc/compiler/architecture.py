"""A model's shape for capacity planning: from the spec, a local Hugging Face config.json, or the built-in catalogue.

The KV cache of a model depends on its attention layers, KV heads and head
size; its weights and the peak of vLLM's profiling run on its hidden size,
MLP width and vocabulary. `ModelShapes.of(model)` finds those numbers: the
spec's `architecture` numbers win, then a `config.json` the spec points to
(read through the `Sources` the pipeline passes in, so `diff --base` reads it
as it was at the revision), then the catalogue shipped in `catalogue.json`
(matched by `source`: the Hugging Face id, an alias, or the last part of a
local path, ignoring quantization suffixes such as `-AWQ` or `-FP8-dynamic`).
Layers that keep no full-length KV (sliding-window layers) and multi-head
latent attention are described, so that the memory model can size them;
hybrid models with linear-attention or state-space layers are refused with a
reason, never sized as if every layer were attention.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from hxpc.records import record

if TYPE_CHECKING:
    from hxpc.compiler.spec import LlmModel

CATALOGUE_FILE = "catalogue.json"

# Suffixes that name how a checkpoint is stored, not what it is: `Llama-3.3-70B-Instruct-FP8-dynamic` and
# `Meta-Llama-3.1-70B-Instruct-AWQ-INT4` have the shape of the model they quantize.
_STORAGE_SUFFIXES = frozenset({
    "awq", "gptq", "gguf", "fp8", "fp16", "bf16", "int4", "int8", "w4a16", "w8a8", "w8a16", "nf4", "bnb", "4bit",
    "8bit", "dynamic", "quantized", "marlin", "unsloth", "g128", "128g", "exl2", "mlx", "hf",
})
_LAST_TOKEN = re.compile(r"[-_.]([a-z0-9]+)$")

# Layer kinds in a config's `layer_types` that hold a full-length KV cache or a sliding window of one; any other
# kind (linear attention, mamba, conv) keeps recurrent state that this model does not size.
_FULL_ATTENTION = frozenset({"full_attention", "attention", "global_attention"})
_SLIDING_ATTENTION = frozenset({"sliding_attention", "local_attention", "chunked_attention"})
# config.json keys that mark a hybrid attention/state-space model
_STATE_SPACE_KEYS = ("mamba_d_state", "ssm_cfg", "linear_num_key_heads", "full_attention_interval",
                     "attn_layer_indices", "hybrid_override_pattern", "layers_block_type")
# model types whose config says `sliding_window` but interleaves it with full attention every Nth layer
# (HF modelling code: Gemma 2 alternates, Gemma 3 has five local layers per global one)
_INTERLEAVE_BY_MODEL_TYPE = {"gemma2": 2, "gemma3": 6, "gemma3_text": 6, "cohere2": 4}


@record
class Mla:
    """Multi-head latent attention (DeepSeek V2/V3): one compressed KV vector per token and layer."""

    kv_lora_rank: int
    qk_rope_head_dim: int


@record
class ModelShape:
    """The numbers the memory model needs; None where nobody said (the memory model then assumes, and says so)."""

    layers: int
    """attention layers (each holds KV)"""
    kv_heads: int
    head_dim: int
    hidden_size: int | None = None
    intermediate_size: int | None = None
    """MLP width one token activates (MoE: experts per token x expert width, plus shared experts)"""
    vocab_size: int | None = None
    tie_word_embeddings: bool | None = None
    max_position_embeddings: int | None = None
    sliding_window: int | None = None
    sliding_layers: int = 0
    """how many of `layers` attend over a sliding window of `sliding_window` tokens"""
    mla: Mla | None = None
    origin: str = ""
    """where the numbers come from, for `resources` and messages"""


@record
class ShapeProblem:
    """Why a model's shape is not known: a message, a hint, and the key under `models.<name>` to point at."""

    message: str
    hint: str
    at: tuple[str, ...]


ConfigReader = Callable[[str], str]
"""Reads a file the spec names, relative to the spec; raises hxpc.errors.SpecError when it cannot."""


def _storage_free(name: str) -> str:
    """The last path part of a model id, lower case, without storage suffixes."""
    base = name.rstrip("/").rsplit("/", 1)[-1].lower()
    while (token := _LAST_TOKEN.search(base)) is not None and token.group(1) in _STORAGE_SUFFIXES:
        base = base[: token.start()]
    return base


@functools.cache
def catalogue() -> tuple[dict[str, Any], ...]:
    """The built-in catalogue's entries, as shipped in the package."""
    text = resources.files("hxpc.compiler").joinpath(CATALOGUE_FILE).read_text(encoding="utf-8")
    return tuple(json.loads(text)["models"])


@functools.cache
def _catalogue_index() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    by_id: dict[str, dict[str, Any]] = {}
    by_name: dict[str, dict[str, Any]] = {}
    for entry in catalogue():
        for name in (entry["id"], *entry["aliases"]):
            by_id.setdefault(name.lower(), entry)
            by_name.setdefault(_storage_free(name), entry)
    return by_id, by_name


def catalogue_entry(source: str) -> dict[str, Any] | None:
    """The catalogue entry for a model `source` (hub id, alias or local path), or None."""
    by_id, by_name = _catalogue_index()
    return by_id.get(source.lower()) or by_name.get(_storage_free(source))


def _from_entry(entry: dict[str, Any]) -> ModelShape:
    mla = entry.get("mla")
    return ModelShape(
        layers=entry["layers"], kv_heads=entry["kv_heads"], head_dim=entry["head_dim"],
        hidden_size=entry.get("hidden_size"), intermediate_size=entry.get("intermediate_size"),
        vocab_size=entry.get("vocab_size"), tie_word_embeddings=entry.get("tie_word_embeddings"),
        max_position_embeddings=entry.get("max_position_embeddings"), sliding_window=entry.get("sliding_window"),
        sliding_layers=entry.get("sliding_layers", 0),
        mla=Mla(mla["kv_lora_rank"], mla["qk_rope_head_dim"]) if mla else None,
        origin=f"catalogue entry {entry['id']} ({entry['source']})")


class ConfigInvalid(ValueError):
    """A config.json that cannot be turned into a shape; the message says why."""


def _int(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _mlp_width(config: dict[str, Any]) -> int | None:
    """The MLP width one token activates: dense `intermediate_size`, or the experts it is routed to."""
    per_expert = _int(config, "moe_intermediate_size")
    experts_per_token = _int(config, "num_experts_per_tok", "experts_per_token", "moe_topk")
    experts = _int(config, "num_experts", "num_local_experts", "n_routed_experts")
    if experts and experts_per_token:
        width = (per_expert or _int(config, "intermediate_size") or 0) * experts_per_token
        shared = _int(config, "shared_expert_intermediate_size") or (
            (per_expert or 0) * (_int(config, "n_shared_experts") or 0))
        return (width + shared) or None
    return _int(config, "intermediate_size", "ffn_hidden_size", "n_inner")


def _sliding(config: dict[str, Any], layers: int, max_position: int | None) -> tuple[int | None, int]:
    """(window, how many layers use it) from `layer_types`, or `sliding_window` and the model type's pattern."""
    window = _int(config, "sliding_window")
    types = config.get("layer_types")
    if isinstance(types, list) and types:
        kinds = {str(t) for t in types}
        unknown = kinds - _FULL_ATTENTION - _SLIDING_ATTENTION
        if unknown:
            raise ConfigInvalid(f"its layers include {', '.join(sorted(unknown))}, which hold recurrent state "
                                "instead of a KV cache; hxpc does not size such hybrid models")
        sliding = sum(1 for t in types if t in _SLIDING_ATTENTION)
        return (window, sliding) if window and sliding else (None, 0)
    if window is None or config.get("use_sliding_window") is False:
        return None, 0
    if max_position is not None and window >= max_position:
        return None, 0  # a window longer than any sequence changes nothing
    pattern = _int(config, "sliding_window_pattern") or _INTERLEAVE_BY_MODEL_TYPE.get(str(config.get("model_type")))
    if pattern and pattern > 1:
        return window, layers - layers // pattern
    return window, layers


def shape_from_config(text: str, origin: str) -> ModelShape:
    """A shape from the text of a Hugging Face config.json (its `text_config` for multimodal models)."""
    try:
        outer = json.loads(text)
    except ValueError as exc:
        raise ConfigInvalid(f"it is not JSON ({exc})") from None
    if not isinstance(outer, dict):
        raise ConfigInvalid("it is not a JSON object")
    # a multimodal model's language model sits in `text_config`; the outer keys fill what it leaves out
    inner = outer.get("text_config")
    config: dict[str, Any] = {k: v for k, v in outer.items() if k not in ("text_config", "vision_config")}
    if isinstance(inner, dict):
        config.update(inner)
    for key in _STATE_SPACE_KEYS:
        if key in config:
            raise ConfigInvalid(f"it has `{key}`: a hybrid of attention and linear-attention or state-space layers, "
                                "whose memory hxpc does not size")
    layers = _int(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _int(config, "num_attention_heads", "n_head")
    hidden = _int(config, "hidden_size", "n_embd", "d_model")
    if layers is None or heads is None:
        raise ConfigInvalid("it has no `num_hidden_layers` or `num_attention_heads`")
    kv_heads = _int(config, "num_key_value_heads", "multi_query_group_num", "n_head_kv") or (
        1 if config.get("multi_query") is True else heads)
    head_dim = _int(config, "head_dim", "kv_channels") or (hidden // heads if hidden else None)
    if head_dim is None:
        raise ConfigInvalid("it has neither `head_dim` nor `hidden_size`")
    max_position = _int(config, "max_position_embeddings", "n_positions", "seq_length")
    mla = None
    if _int(config, "kv_lora_rank") and _int(config, "qk_rope_head_dim"):
        mla = Mla(config["kv_lora_rank"], config["qk_rope_head_dim"])
        head_dim = (_int(config, "qk_nope_head_dim") or 0) + config["qk_rope_head_dim"]
    window, sliding_layers = _sliding(config, layers, max_position)
    tie = config.get("tie_word_embeddings")
    return ModelShape(
        layers=layers, kv_heads=kv_heads, head_dim=head_dim, hidden_size=hidden, intermediate_size=_mlp_width(config),
        vocab_size=_int(config, "vocab_size", "padded_vocab_size"),
        tie_word_embeddings=tie if isinstance(tie, bool) else None, max_position_embeddings=max_position,
        sliding_window=window, sliding_layers=sliding_layers, mla=mla, origin=origin)


_ADD_ARCHITECTURE = ("add `architecture: {layers: N, kv_heads: N, head_dim: N}` (num_hidden_layers, "
                     "num_key_value_heads and head_dim of the model's config.json), or point at the config with "
                     "`architecture: {config: path/to/config.json}`")


class ModelShapes:
    """Every model's shape, found once per (source, architecture); config files read through `read`."""

    def __init__(self, read: ConfigReader | None = None):
        self._read = read
        self._found: dict[tuple[str, Any], ModelShape | ShapeProblem] = {}

    def of(self, model: LlmModel) -> ModelShape | ShapeProblem:
        key = (model.source, model.architecture)
        if key not in self._found:
            self._found[key] = self._find(model)
        return self._found[key]

    def _find(self, model: LlmModel) -> ModelShape | ShapeProblem:
        arch = model.architecture
        entry = catalogue_entry(model.source)
        if arch is not None and arch.config is not None:
            return self._from_config(arch.config)
        if arch is not None and arch.layers is not None and arch.kv_heads is not None and arch.head_dim is not None:
            base = _from_entry(entry) if entry else None
            given = {k: getattr(arch, k) for k in ("hidden_size", "intermediate_size", "vocab_size",
                                                   "tie_word_embeddings", "max_position_embeddings")
                     if getattr(arch, k) is not None}
            if base is not None:
                kept = _fields(base)
                if (base.layers, base.kv_heads, base.head_dim) != (arch.layers, arch.kv_heads, arch.head_dim):
                    # other attention numbers describe another model: its windows and latent KV do not apply
                    kept.update(sliding_window=None, sliding_layers=0, mla=None)
                return ModelShape(**{**kept, "layers": arch.layers, "kv_heads": arch.kv_heads,
                                     "head_dim": arch.head_dim, **given,
                                     "origin": f"the spec's `architecture`, the rest from the {base.origin}"})
            return ModelShape(layers=arch.layers, kv_heads=arch.kv_heads, head_dim=arch.head_dim, **given,
                              origin="the spec's `architecture`")
        if entry is not None:
            return _from_entry(entry)
        return ShapeProblem(f"hxpc does not know the architecture of `{model.source}`, which its KV cache and "
                            "weights are sized from", _ADD_ARCHITECTURE, ("source",))

    def _from_config(self, path: str) -> ModelShape | ShapeProblem:
        from hxpc.errors import SpecError

        at = ("architecture", "config")
        if self._read is None:
            return ShapeProblem(f"`{path}` cannot be read here", "give the numbers instead", at)
        try:
            text = self._read(path)
        except SpecError as exc:
            reason = exc.diagnostics[0].message if exc.diagnostics else "cannot be read"
            return ShapeProblem(f"the model config `{path}` cannot be read: {reason}",
                                "the path is relative to the spec file; or give the numbers: " + _ADD_ARCHITECTURE, at)
        try:
            return shape_from_config(text, f"{path}")
        except ConfigInvalid as exc:
            return ShapeProblem(f"the model config `{path}` cannot be used: {exc}",
                                "give the numbers of its attention layers: " + _ADD_ARCHITECTURE, at)


def _fields(shape: ModelShape) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(shape, f.name) for f in dataclasses.fields(shape)}
