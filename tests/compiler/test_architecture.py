"""Model shapes (hxpc/compiler/architecture.py): the catalogue, its lookup, config.json files, the spec's numbers."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from hxpc.compiler.architecture import (
    ConfigInvalid,
    Mla,
    ModelShape,
    ModelShapes,
    ShapeProblem,
    catalogue,
    catalogue_entry,
    shape_from_config,
)
from hxpc.compiler.spec import LlmModel, pydantic_adapter
from hxpc.diagnostics import Diagnostic
from hxpc.errors import SpecError

SHAPE_KEYS = ("layers", "kv_heads", "head_dim", "hidden_size", "intermediate_size", "vocab_size",
              "max_position_embeddings", "sliding_window", "sliding_layers")


def model(**fields: Any) -> LlmModel:
    stack = pydantic_adapter().validate_python(
        {"apiVersion": "hxpc/v1", "project": "p", "models": {"m": {"params_b": 7, **fields}}})
    return stack.models["m"]


def test_every_catalogue_entry_names_its_source_and_is_consistent() -> None:
    seen: dict[str, str] = {}
    assert len(catalogue()) >= 40
    for entry in catalogue():
        assert re.match(r"^https://github\.com/\S+", entry["source"]), entry["id"]
        for key in ("layers", "kv_heads", "head_dim"):
            assert isinstance(entry[key], int) and entry[key] > 0, (entry["id"], key)
        for key in SHAPE_KEYS[3:]:
            assert entry.get(key) is None or (isinstance(entry[key], int) and entry[key] >= 0), (entry["id"], key)
        assert entry.get("sliding_layers", 0) <= entry["layers"]
        assert bool(entry.get("sliding_window")) == bool(entry.get("sliding_layers")), entry["id"]
        assert entry["kv_heads"] <= 128 and entry["layers"] <= 200
        for name in (entry["id"], *entry["aliases"]):  # one name, one shape
            assert seen.setdefault(name.lower(), entry["id"]) == entry["id"], name


@pytest.mark.parametrize(("source", "expected"), [
    ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
    ("META-LLAMA/llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct"),
    ("meta-llama/Meta-Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
    ("/models/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
    ("/models/Llama-3.1-8B-Instruct/", "meta-llama/Llama-3.1-8B-Instruct"),
    ("hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", "meta-llama/Llama-3.1-70B-Instruct"),
    ("RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic", "meta-llama/Llama-3.1-70B-Instruct"),
    ("neuralmagic/Meta-Llama-3.1-70B-Instruct-quantized.w8a8", "meta-llama/Llama-3.1-70B-Instruct"),
    ("unsloth/Qwen2.5-7B-Instruct-bnb-4bit", "Qwen/Qwen2.5-7B-Instruct"),
    ("Qwen/Qwen2.5-72B-Instruct-GPTQ-Int4", "Qwen/Qwen2.5-72B-Instruct"),
    ("TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ", "mistralai/Mixtral-8x7B-Instruct-v0.1"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Mistral-7B-Instruct-v0.3"),
    ("deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-V3"),
    ("org/unknown-model-7b", None),
    ("Qwen/Qwen2.5-7B-Instruct-Finetune", None),
])
def test_catalogue_lookup(source: str, expected: str | None) -> None:
    entry = catalogue_entry(source)
    assert (entry["id"] if entry else None) == expected


def test_catalogued_shapes_carry_sliding_windows_and_mla() -> None:
    gemma = ModelShapes().of(model(source="google/gemma-3-27b-it"))
    assert isinstance(gemma, ModelShape)
    assert (gemma.layers, gemma.sliding_layers, gemma.sliding_window) == (62, 52, 1024)
    assert "catalogue entry google/gemma-3-27b-it (https://github.com/" in gemma.origin
    deepseek = ModelShapes().of(model(source="deepseek-ai/DeepSeek-V3"))
    assert isinstance(deepseek, ModelShape) and deepseek.mla == Mla(512, 64)


def config(**fields: Any) -> str:
    base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
            "tie_word_embeddings": False}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None})


def test_config_json_of_a_dense_model() -> None:
    shape = shape_from_config(config(), "models/llama/config.json")
    assert shape == ModelShape(layers=32, kv_heads=8, head_dim=128, hidden_size=4096, intermediate_size=14336,
                               vocab_size=128256, tie_word_embeddings=False, max_position_embeddings=131072,
                               origin="models/llama/config.json")
    # an explicit head_dim wins over hidden_size / heads; no num_key_value_heads means one per attention head
    assert shape_from_config(config(head_dim=64, num_key_value_heads=None), "c").kv_heads == 32
    assert shape_from_config(config(head_dim=64), "c").head_dim == 64


def test_config_json_of_a_multimodal_model_uses_its_language_model() -> None:
    text = json.dumps({"architectures": ["Mistral3ForConditionalGeneration"], "tie_word_embeddings": False,
                       "vision_config": {"num_hidden_layers": 24, "hidden_size": 1024, "num_attention_heads": 16},
                       "text_config": json.loads(config(num_hidden_layers=40, hidden_size=5120, head_dim=128,
                                                        tie_word_embeddings=None))})
    shape = shape_from_config(text, "c")
    assert (shape.layers, shape.hidden_size, shape.head_dim, shape.tie_word_embeddings) == (40, 5120, 128, False)


def test_config_json_of_moe_and_mla_models() -> None:
    moe = shape_from_config(config(num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768), "c")
    assert moe.intermediate_size == 8 * 768
    mixtral = shape_from_config(config(num_local_experts=8, num_experts_per_tok=2), "c")
    assert mixtral.intermediate_size == 2 * 14336
    deepseek = shape_from_config(config(num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=128,
                                        kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
                                        n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=8,
                                        moe_intermediate_size=2048), "c")
    assert deepseek.mla == Mla(512, 64) and deepseek.head_dim == 192
    assert deepseek.intermediate_size == 8 * 2048 + 2048


def test_config_json_sliding_windows() -> None:
    gemma2 = shape_from_config(config(model_type="gemma2", num_hidden_layers=42, sliding_window=4096,
                                      max_position_embeddings=8192), "c")
    assert (gemma2.sliding_window, gemma2.sliding_layers) == (4096, 21)
    gemma3 = shape_from_config(config(model_type="gemma3_text", num_hidden_layers=26, sliding_window=512,
                                      max_position_embeddings=32768), "c")
    assert gemma3.sliding_layers == 22
    explicit = shape_from_config(config(sliding_window=128, num_hidden_layers=4,
                                        layer_types=["sliding_attention", "full_attention"] * 2), "c")
    assert (explicit.sliding_window, explicit.sliding_layers) == (128, 2)
    mistral = shape_from_config(config(sliding_window=4096, max_position_embeddings=32768), "c")
    assert mistral.sliding_layers == 32  # every layer
    # Qwen2 configs name a window they do not use; a window longer than any sequence changes nothing
    assert shape_from_config(config(sliding_window=4096, use_sliding_window=False), "c").sliding_layers == 0
    assert shape_from_config(config(sliding_window=262144), "c").sliding_layers == 0


@pytest.mark.parametrize(("text", "reason"), [
    ("{", "it is not JSON"),
    ("[1, 2]", "it is not a JSON object"),
    (config(num_hidden_layers=None), "no `num_hidden_layers`"),
    (config(hidden_size=None), "neither `head_dim` nor `hidden_size`"),
    (config(layer_types=["linear_attention", "full_attention"]), "linear_attention, which hold recurrent state"),
    (config(mamba_d_state=128), "`mamba_d_state`: a hybrid of attention and linear-attention or state-space"),
])
def test_config_json_that_cannot_be_sized_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ConfigInvalid, match=re.escape(reason)):
        shape_from_config(text, "c")


def test_the_specs_numbers_win_and_the_catalogue_fills_the_rest() -> None:
    shape = ModelShapes().of(model(source="meta-llama/Llama-3.1-8B-Instruct",
                                   architecture={"layers": 30, "kv_heads": 4, "head_dim": 128}))
    assert isinstance(shape, ModelShape)
    assert (shape.layers, shape.kv_heads, shape.vocab_size, shape.hidden_size) == (30, 4, 128256, 4096)
    assert shape.origin.startswith("the spec's `architecture`, the rest from the catalogue entry")
    # other attention numbers for a model with sliding windows describe another model: no windows then
    gemma = ModelShapes().of(model(source="google/gemma-3-27b-it", architecture={"layers": 10, "kv_heads": 4,
                                                                                "head_dim": 128}))
    assert isinstance(gemma, ModelShape) and (gemma.sliding_layers, gemma.sliding_window) == (0, None)
    same = ModelShapes().of(model(source="google/gemma-3-27b-it", architecture={"layers": 62, "kv_heads": 16,
                                                                               "head_dim": 128}))
    assert isinstance(same, ModelShape) and same.sliding_layers == 52
    bare = ModelShapes().of(model(source="org/private", architecture={"layers": 30, "kv_heads": 4, "head_dim": 128,
                                                                     "vocab_size": 32000}))
    assert bare == ModelShape(layers=30, kv_heads=4, head_dim=128, vocab_size=32000,
                              origin="the spec's `architecture`")


def test_unknown_models_and_unreadable_configs_are_problems_at_their_key() -> None:
    unknown = ModelShapes().of(model(source="org/private"))
    assert isinstance(unknown, ShapeProblem) and unknown.at == ("source",)
    assert "hxpc does not know the architecture of `org/private`" in unknown.message
    assert "architecture: {layers: N, kv_heads: N, head_dim: N}" in unknown.hint

    def missing(path: str) -> str:
        raise SpecError([Diagnostic("HX106", f"cannot read {path}: No such file or directory")])

    problem = ModelShapes(missing).of(model(source="org/private", architecture={"config": "m/config.json"}))
    assert isinstance(problem, ShapeProblem) and problem.at == ("architecture", "config")
    assert "the model config `m/config.json` cannot be read: cannot read m/config.json" in problem.message
    bad = ModelShapes(lambda _: "{").of(model(source="x", architecture={"config": "c.json"}))
    assert isinstance(bad, ShapeProblem) and "cannot be used: it is not JSON" in bad.message


def test_configs_are_read_once_per_model_shape() -> None:
    reads: list[str] = []

    def read(path: str) -> str:
        reads.append(path)
        return config()

    shapes = ModelShapes(read)
    m = model(source="org/a", architecture={"config": "a/config.json"})
    assert shapes.of(m) == shapes.of(m)
    assert reads == ["a/config.json"]
