"""The structural check of `monitoring.rules`, the user's own rule groups that hxpc passes through.

Reported as HX402 at compile time: unknown keys, missing names, duplicate
group names (`hxpc.` names are hxpc's own), bad durations, metric or label
names, and expressions that are not valid PromQL (parsed and type-checked by
promql-parser, the Rust parser GreptimeDB maintains, so a typo fails the
compile rather than Prometheus' rule reload).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from hxpc.diagnostics import Diagnostic

_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_GROUP_KEYS = frozenset({"name", "interval", "rules", "limit", "query_offset"})
_RULE_KEYS = frozenset({"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"})


def check_user_rules(groups: list[dict[str, Any]], taken: set[str]) -> list[Diagnostic]:
    """A structural check of `monitoring.rules`; `taken` are the group names hxpc's own rules use."""
    seen = set(taken)
    return [d for i, group in enumerate(groups) for d in _check_group(f"[{i}]", group, seen)]


def _bad(at: str, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic("HX402", f"monitoring.rules{at}: {message}", hint=hint)


def _check_group(at: str, group: dict[str, Any], seen: set[str]) -> Iterator[Diagnostic]:
    """The problems of one group; adds its name to `seen`."""
    unknown = sorted(set(group) - _GROUP_KEYS)
    if unknown:
        yield _bad(at, f"unknown key `{unknown[0]}` in a rule group", "a group has `name`, `interval` and `rules`")
    name = group.get("name")
    if not isinstance(name, str) or not name:
        yield _bad(at, "a rule group needs a `name`")
    elif name in seen:
        yield _bad(at, f"rule group `{name}` is defined twice", "names starting with `hxpc.` are hxpc's own")
    else:
        seen.add(name)
    if "interval" in group and not _is_duration(group["interval"]):
        yield _bad(at, f"`interval` `{group['interval']}` is not a Prometheus duration", "e.g. `30s`, `1m`")
    rules = group.get("rules")
    if not isinstance(rules, list):
        yield _bad(at, "a rule group needs a `rules` list")
        return
    for j, rule in enumerate(rules):
        yield from _check_rule(f"{at}.rules[{j}]", rule)


def _check_rule(at: str, rule: object) -> Iterator[Diagnostic]:
    if not isinstance(rule, dict):
        yield _bad(at, "a rule must be a mapping with `alert` or `record`, and `expr`")
        return
    unknown = sorted(set(rule) - _RULE_KEYS)
    if unknown:
        yield _bad(at, f"unknown key `{unknown[0]}` in a rule")
    if ("alert" in rule) == ("record" in rule):
        yield _bad(at, "a rule needs exactly one of `alert` or `record`")
    if "record" in rule:
        if not isinstance(rule["record"], str) or not _METRIC.match(rule["record"]):
            yield _bad(at, f"`record` `{rule['record']}` is not a valid metric name")
        for key in ("for", "keep_firing_for", "annotations"):
            if key in rule:
                yield _bad(at, f"`{key}` is only allowed on alerting rules")
    if "alert" in rule and (not isinstance(rule["alert"], str) or not rule["alert"]):
        yield _bad(at, "`alert` must be a non-empty name")
    expr = rule.get("expr")
    if isinstance(expr, bool) or not isinstance(expr, (str, int, float)) or not str(expr).strip():
        yield _bad(at, "a rule needs an `expr`")
    else:
        problem = promql_problem(str(expr))
        if problem:
            yield _bad(at, f"`expr` does not parse: {problem}")
    for key in ("for", "keep_firing_for"):
        if key in rule and not _is_duration(rule[key]):
            yield _bad(at, f"`{key}` `{rule[key]}` is not a Prometheus duration", "e.g. `5m`")
    for key in ("labels", "annotations"):
        value = rule.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) and _LABEL.match(k) and isinstance(v, str)
                                                  for k, v in value.items()):
            yield _bad(at, f"`{key}` must map label names to text values", "quote numbers: `team: \"42\"`")


def _is_duration(value: object) -> bool:
    return isinstance(value, str) and value != "" and _DURATION.match(value) is not None


def promql_problem(expr: str) -> str | None:
    """The parser's complaint about a PromQL expression, or None when it parses and type-checks."""
    import promql_parser  # only specs with their own rules pay for the import

    try:
        promql_parser.parse(expr)
    except ValueError as exc:
        return str(exc)
    return None
