"""The `promtool test rules` file for the generated alerts: synthetic series that make each fire, and keep it silent.

`rules` records a `Case` for every alert it writes, using the
helpers here to make series a label matcher selects (or does not), histogram
buckets above or below a threshold, and the annotations promtool expects with
their `$labels` filled in. `tests_file` batches the cases into two tests per
alert name.
"""

from __future__ import annotations

import re
from typing import Any

from hxpc.compiler.targets.prometheus.series import num, sel
from hxpc.records import record

_MATCHER = re.compile(r'^([a-zA-Z_][a-zA-Z0-9_]*)(=|!=|=~|!~)"((?:[^"\\]|\\.)*)"$')
_TEMPLATE_LABEL = re.compile(r"\{\{ \$labels\.([a-zA-Z_]+) \}\}")
# label values tried, in order, for one that a matcher selects and one it does not
_CANDIDATES = ("500", "5xx", "abort", "error", "failure", "true", "200", "2xx", "stop", "ok", "success", "false", "x",
               "/v1/chat/completions")


@record(frozen=False)
class Case:
    """A promtool test for one alert: series that make it fire, and series that keep it silent."""

    alert: str
    labels: dict[str, str]
    annotations: dict[str, str]
    fire: list[tuple[str, str]]
    quiet: list[tuple[str, str]]
    eval_minutes: int


def histogram(bucket: str, labels: dict[str, str], edges: list[float], *, slow: bool,
              above: float) -> list[tuple[str, str]]:
    """Cumulative buckets where every observation lands just above `above` (slow) or in the lowest bucket."""
    out = []
    for edge in [*edges, None]:
        le = "+Inf" if edge is None else num(edge)
        filled = (edge is None or edge > above) if slow else True
        out.append((f"{bucket}{sel({**labels, 'le': le})}", "0+10x25" if filled else "0x25"))
    return out


def render(template: str, labels: dict[str, str], value: str = "") -> str:
    """An annotation as the alert shows it: `{{ $labels.x }}` replaced by the value of `x`, `{{ $value }}` by
    the alert's value as the test's series give it."""
    if "{{" not in template:
        return template
    return _TEMPLATE_LABEL.sub(lambda m: labels.get(m.group(1), ""), template).replace("{{ $value }}", value)


def satisfy(matcher: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """A (label, value) that the matcher selects, and one it does not, for synthetic series."""
    m = _MATCHER.match(matcher)
    if m is None:
        raise ValueError(f"not a label matcher: {matcher}")
    label, op, value = m.group(1), m.group(2), m.group(3).encode().decode("unicode_escape")

    def selects(candidate: str) -> bool:
        if op in ("=", "!="):
            return (candidate == value) == (op == "=")
        try:
            hit = re.fullmatch(value, candidate) is not None
        except re.error:
            hit = False
        return hit == (op == "=~")

    literal = [value] if op == "=" else []
    yes = next((c for c in (*literal, *_CANDIDATES) if selects(c)), value)
    no = next((c for c in _CANDIDATES if not selects(c)), "")
    return (label, yes), (label, no)


def example(spec: str) -> str:
    """A concrete label value matching a selector value (`=v` or `=~a|b`)."""
    if spec.startswith("=~"):
        first = spec[2:].split("|")[0]
        return first.replace("[a-z0-9]+", "5d8f9c7b6", 1).replace("[a-z0-9]+", "x2x9z").replace("[0-9]+", "0")
    return spec[1:]


def tests_file(cases: list[Case]) -> dict[str, Any]:
    """Two tests per alert name: every workload's firing series together, then every workload's quiet ones.

    Workloads' series differ in their owner labels, so they do not disturb each
    other; batching keeps the file (and promtool's run) linear in alert kinds,
    not in workloads times alerts.
    """
    by_alert: dict[str, list[Case]] = {}
    for c in cases:
        by_alert.setdefault(c.alert, []).append(c)
    tests: list[dict[str, Any]] = []
    for alert, group in by_alert.items():
        eval_time = f"{max(c.eval_minutes for c in group)}m"
        for fires in (True, False):
            tests.append({
                "name": f"{alert} {'fires' if fires else 'stays silent'}",
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for c in group for s, v in (c.fire if fires else c.quiet)],
                "alert_rule_test": [{"eval_time": eval_time, "alertname": alert, "exp_alerts": [
                    {"exp_labels": c.labels, "exp_annotations": c.annotations} for c in group] if fires else []}],
            })
    return {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
