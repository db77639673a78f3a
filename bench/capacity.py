"""Benchmark: hxpc's KV-cache predictions against real vLLM start-up logs.

For every case of tests/data/capacity/vllm_startup_logs.yaml that a spec can
express, prints what vLLM logged and what hxpc predicts: the KV-cache tokens
(or, where the log gives none, the KV-cache GiB), the error, and whether
`hxpc validate`'s start/refuse decision agrees with what vLLM did; then the
totals per split (`train`: the cases hxpc's constants were read from; `holdout`:
nothing was fitted on them). `--markdown` prints the table for the README.
Run: python bench/capacity.py [--markdown]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from capacity_cases import Prediction, expressible, load_cases, predict

KV_TOLERANCE = 0.2


def _value(measure: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if measure == "tokens" else f"{value:.2f} GiB"


def _row(p: Prediction) -> list[str]:
    error = p.error
    return [p.case.id, p.case.split, p.case.outcome, _value(p.measure, p.logged), _value(p.measure, p.predicted),
            "-" if error is None else f"{error:+.1%}", f"{p.decision} ({'right' if p.right else 'WRONG'})",
            ",".join(p.codes) or "-"]


def summary(predictions: list[Prediction], split: str) -> str:
    chosen = [p for p in predictions if split == "all" or p.case.split == split]
    right = sum(p.right for p in chosen)
    started = [p for p in chosen if p.case.outcome == "started" and p.error is not None]
    close = sum(abs(p.error or 0) <= KV_TOLERANCE for p in started)
    return (f"{split}: decision right on {right}/{len(chosen)} ({right / max(1, len(chosen)):.0%}); "
            f"KV within ±{KV_TOLERANCE:.0%} on {close}/{len(started)} started cases with a logged KV figure")


def main() -> None:
    markdown = "--markdown" in sys.argv[1:]
    cases = load_cases()
    with tempfile.TemporaryDirectory() as tmp:
        predictions = [predict(c, Path(tmp)) for c in expressible(cases)]
    predictions.sort(key=lambda p: p.case.split != "train")  # train first, then holdout, each in file order
    header = ["case", "split", "vLLM", "logged", "predicted", "error", "hxpc decision", "hxpc codes"]
    rows = [_row(p) for p in predictions]
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("| " + " | ".join("---" for _ in header) + " |")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print()
    for split in ("train", "holdout", "all"):
        print(summary(predictions, split) + ("  " if markdown else ""))
    skipped = [c for c in cases if c.spec is None]
    print(f"not expressible as a spec, so not predicted: {len(skipped)} of {len(cases)} cases "
          f"({', '.join(sorted({c.not_expressible or '' for c in skipped}))})")


if __name__ == "__main__":
    main()
