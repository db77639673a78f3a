"""The calibration set of the KV-cache model: real vLLM start-ups, and what hxpc predicts for each of them.

Each case of tests/data/capacity/vllm_startup_logs.yaml that an hxpc spec can
express becomes a one-model spec on a host with the case's GPU; `predict`
resolves it through the real pipeline (so the catalogue lookup, the checks and
their HX codes are what a user gets) for the start/refuse decision, and reads
the numbers from the memory model. Shared by
tests/compiler/test_capacity_calibration.py and bench/capacity.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML

from hxpc.compiler.architecture import ModelShape, ModelShapes
from hxpc.compiler.capacity import Estimate, GiB, estimate, gpu_of
from hxpc.compiler.pipeline import resolve_env
from hxpc.compiler.quantities import parse_size
from hxpc.compiler.spec import LlmModel, pydantic_adapter
from hxpc.errors import SpecError
from hxpc.sources import FileSources

CASES_FILE = Path(__file__).resolve().parent / "data" / "capacity" / "vllm_startup_logs.yaml"
# a spec that vLLM would refuse fails validation with one of these
REFUSALS = frozenset({"HX307", "HX321", "HX322"})

Decision = Literal["start", "refuse"]


@dataclass(frozen=True)
class Case:
    id: str
    source: str
    split: str
    outcome: str
    logged_tokens: int | None
    logged_kv_gib: float | None
    spec: dict[str, Any] | None
    not_expressible: str | None

    @property
    def expected(self) -> Decision:
        return "start" if self.outcome == "started" else "refuse"


@dataclass(frozen=True)
class Prediction:
    case: Case
    decision: Decision
    codes: tuple[str, ...]
    estimate: Estimate
    measure: str  # what is compared with the log: "tokens" or "KV GiB"
    predicted: float | None
    logged: float | None

    @property
    def right(self) -> bool:
        return self.decision == self.case.expected

    @property
    def error(self) -> float | None:
        if self.predicted is None or not self.logged:
            return None
        return (self.predicted - self.logged) / self.logged


def load_cases(path: Path = CASES_FILE) -> list[Case]:
    data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    return [Case(id=c["id"], source=c["source"], split=c["split"], outcome=c["outcome"],
                 logged_tokens=c["logged"].get("kv_cache_tokens"), logged_kv_gib=c["logged"].get("kv_cache_gib"),
                 spec=c.get("spec"), not_expressible=c.get("not_expressible")) for c in data]


def spec_text(case: Case) -> str:
    """A one-model hxpc spec for the case: its GPUs on one host, the model placed there."""
    assert case.spec is not None
    gpu, model = case.spec["gpu"], dict(case.spec["model"])
    host = {"gpus": {"count": model["tensor_parallel"], "model": gpu["model"], "memory": gpu["memory"]}}
    model["hosts"] = ["gpu"]
    stack = {"apiVersion": "hxpc/v1", "project": "calibration", "hosts": {"gpu": host}, "models": {"m": model},
             "targets": {"systemd": {"hosts": ["gpu"]}}}
    return json.dumps(stack, indent=1) + "\n"  # JSON is YAML


def _numbers(case: Case) -> Estimate:
    assert case.spec is not None
    model: LlmModel = pydantic_adapter().validate_python(  # validates the model through the whole Stack type
        {"apiVersion": "hxpc/v1", "project": "c", "models": {"m": case.spec["model"]}}).models["m"]
    shape = ModelShapes().of(model)
    assert isinstance(shape, ModelShape), f"{case.id}: {shape}"
    gpu = case.spec["gpu"]
    return estimate(model, shape, gpu_of(parse_size(gpu["memory"]), gpu["model"]))


def predict(case: Case, workdir: Path) -> Prediction:
    """What hxpc says of the case: `validate`'s decision and the predicted KV cache."""
    spec = workdir / f"{case.id}.yaml"
    spec.write_text(spec_text(case), encoding="utf-8")
    try:
        resolved = resolve_env(FileSources(str(spec)), "default")
        decision: Decision = "start"
        codes = tuple(d.code for d in resolved.warnings)
    except SpecError as exc:
        codes = tuple(d.code for d in exc.diagnostics)
        errors = {d.code for d in exc.diagnostics if d.severity == "error"}
        if not errors <= REFUSALS:
            raise AssertionError(f"{case.id}: the spec is invalid for another reason: {exc.diagnostics}") from None
        decision = "refuse"
    est = _numbers(case)
    if case.logged_tokens:
        measure, predicted, logged = "tokens", float(est.kv_cache_tokens), float(case.logged_tokens)
    elif case.logged_kv_gib is not None:
        measure, predicted, logged = "KV GiB", est.kv_cache_bytes / GiB, case.logged_kv_gib
    else:
        measure, predicted, logged = "-", None, None
    return Prediction(case, decision, codes, est, measure, predicted, logged)


def expressible(cases: list[Case]) -> list[Case]:
    return [c for c in cases if c.spec is not None]
