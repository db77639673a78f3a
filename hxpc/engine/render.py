"""Views of a plan: text for a terminal, markdown for a pull-request comment, JSON to save and apply.

The text view reads like `terraform plan`: each wave, each action with its
symbol (+ create, ~ update or restart, -/+ replace, - destroy, = kept) and
reason, how it rolls the replicas it replaces (or the downtime it cannot
avoid, with its expected length), its field-level changes beneath, and the
summary line; the backends' warnings come first, and an action apply would
refuse says so and why. The markdown view puts the warnings and any
unavoidable downtime first, then a table per target and service and one of
the rolling updates, and folds the details; it never exceeds 60 KB (GitHub
refuses comments over 65,536 characters): what does not fit is cut at a line
with a note saying so. The JSON view is the saved-plan format documented on
`Plan.to_dict`. Every view shows only redacted changes, so no secret value
can appear in any of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from hxpc.engine.objects import Change
from hxpc.engine.plan import KINDS, SYMBOLS, Action, Plan
from hxpc.engine.rollout import natural

MARKDOWN_LIMIT = 60 * 1024
_VALUE_LIMIT = 200
_CHANGE_SYMBOL = {"add": "+", "remove": "-", "change": "~"}
_MD_SYMBOL = {"create": "+", "update": "!", "replace": "!", "restart": "!", "delete": "-", "keep": "#", "noop": " "}
_MD_CHANGE = {"add": "+", "remove": "-", "change": "!"}
_VERBS = {"create": "create", "update": "update in place", "replace": "replace", "restart": "restart",
          "delete": "destroy", "keep": "kept, not pruned", "noop": "unchanged"}


def _value(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= _VALUE_LIMIT else text[: _VALUE_LIMIT - 1] + "…"


def change_line(change: Change) -> str:
    by = f"   (changed outside hxpc by {change.by})" if change.by else ""
    if change.op == "add":
        return f"{change.where} = {_value(change.new)}{by}"
    if change.op == "remove":
        return f"{change.where} = {_value(change.old)}{by}"
    return f"{change.where}: {_value(change.old)} -> {_value(change.new)}{by}"


def _head(action: Action) -> str:
    refused = f" REFUSED: {action.refused}" if action.refused else ""
    return f"{action.key}  ({_VERBS[action.kind]}: {action.reason}){refused}"


def _action_lines(action: Action, symbols: dict[str, str], change_symbols: dict[str, str]) -> list[str]:
    lines = [f"{symbols[action.kind]:>3} {_head(action)}"]
    if action.update is not None:
        lines.append(f"      update: {action.update.describe()}")
    lines += [f"      {change_symbols[c.op]} {change_line(c)}" for c in action.changes]
    return lines


def _diff_lines(action: Action) -> list[str]:
    """For a ```diff block: the symbol must be in column 0 for GitHub to colour the line."""
    lines = [f"{_MD_SYMBOL[action.kind]} {_head(action)}"]
    if action.update is not None:
        lines.append(f"      update: {action.update.describe()}")
    lines += [f"{_MD_CHANGE[c.op]}     {change_line(c)}" for c in action.changes]
    return lines


def _shown(action: Action) -> bool:
    """Worth a line without --show-unchanged: a change, or an object kept rather than pruned."""
    return action.kind != "noop"
def downtime_lines(plan: Plan) -> list[str]:
    """One line per workload and target whose change cannot avoid serving nothing for a while."""
    seen: dict[tuple[str, str], tuple[float, str]] = {}
    for a in plan.actions:
        u = a.update
        if u is not None and u.downtime_s is not None:
            where = (a.key.target, a.workload or str(a.key))
            longest = max(seen.get(where, (0.0, ""))[0], u.downtime_s)
            seen[where] = (longest, u.why)
    return [f"{workload} on {target}: up to {budget:g}s (its startup budget), because it {why} and no other "
            f"replica serves meanwhile" for (target, workload), (budget, why) in sorted(seen.items())]


def _rolling_table(plan: Plan) -> list[str]:
    rows: dict[tuple[str, str], list[Action]] = {}
    for a in plan.actions:
        if a.update is not None:
            rows.setdefault((a.key.target, a.workload or ""), []).append(a)
    if not rows:
        return []
    lines = ["### rolling updates", "", "| target | service | replicas | at once | order | why | downtime |",
             "| --- | --- | ---: | ---: | --- | --- | --- |"]
    for (target, workload), actions in sorted(rows.items()):
        updates = [a.update for a in actions if a.update is not None]
        first = updates[0]
        count = sum(len(u.replicas) for u in updates)
        orders = ", ".join(sorted({u.order for u in updates}))
        downtime = max((u.downtime_s for u in updates if u.downtime_s is not None), default=None)
        said = f"**up to {downtime:g}s**" if downtime is not None else "none"
        whys = sorted({u.why for u in updates}, key=natural)
        why = whys[0] + (f" (and {len(whys) - 1} more like it)" if len(whys) > 1 else "")
        why = why.replace("|", "\\|")
        lines.append(f"| {target} | `{workload}` | {count} of {first.serving} | {first.at_once} | {orders} | {why} "
                     f"| {said} |")
    return [*lines, ""]


def _wave_title(wave: int, actions: Iterable[Action]) -> str:
    kinds = {a.kind for a in actions}
    return f"wave {wave}" + (" (deletes, reverse dependency order)" if kinds == {"delete"} else "")


def render_text(plan: Plan, show_unchanged: bool = False) -> str:
    lines = [f"hxpc plan for {plan.project}/{plan.env} (spec {plan.spec_hash}; targets: {', '.join(plan.targets)})",
             ""]
    if plan.warnings:
        lines += [*(f"Warning: {w}" for w in plan.warnings), ""]
    if plan.has_changes or plan.counts()["keep"]:
        lines += ["Symbols: + create, ~ update in place or restart, -/+ replace, - destroy, = kept", ""]
    for wave, actions in plan.waves():
        shown = [a for a in actions if _shown(a) or show_unchanged]
        if not shown:
            continue
        lines.append(_wave_title(wave, shown) + ":")
        for action in shown:
            lines += _action_lines(action, SYMBOLS, _CHANGE_SYMBOL)
        lines.append("")
    unchanged = plan.counts()["noop"]
    if unchanged and not show_unchanged:
        lines.append(f"{unchanged} object(s) unchanged.")
    downtime = downtime_lines(plan)
    if downtime:
        lines.append("Downtime this plan cannot avoid:")
        lines += [f"  {line}" for line in downtime]
    lines.append(plan.summary_line())
    return "\n".join(lines) + "\n"


def render_json(plan: Plan) -> str:
    return json.dumps(plan.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _table(plan: Plan, target: str) -> list[str]:
    rows: dict[str, dict[str, int]] = {}
    for a in plan.actions:
        if a.key.target == target:
            row = rows.setdefault(a.workload or "", dict.fromkeys(KINDS, 0))
            row[a.kind] += 1
    kept = any(n["keep"] for n in rows.values())  # the column only when something is kept
    lines = [f"### {target}", "", "| service | add | change | replace | destroy | restart | "
             + ("kept | " if kept else "") + "unchanged |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if kept else "")]
    for name in sorted(rows):
        n = rows[name]
        label = f"`{name}`" if name else "*(shared)*"
        lines.append(f"| {label} | {n['create']} | {n['update']} | {n['replace']} | {n['delete']} | "
                     f"{n['restart']} | " + (f"{n['keep']} | " if kept else "") + f"{n['noop']} |")
    return [*lines, ""]


def _fence(lines: list[str]) -> str:
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    return "`" * max(3, longest + 1)


class _Budget:
    """Lines of output within a byte limit, keeping room for what must still follow."""

    def __init__(self, limit: int):
        self.lines: list[str] = []
        self.size = 0
        self.limit = limit

    def fits(self, *texts: str) -> bool:
        return self.size + sum(len(t.encode()) + 1 for t in texts) <= self.limit

    def add(self, *lines: str) -> None:
        for line in lines:
            self.lines.append(line)
            self.size += len(line.encode()) + 1


def render_markdown(plan: Plan, limit: int = MARKDOWN_LIMIT) -> str:
    """A PR comment: summary, a table per target and service, folded details; at most `limit` bytes."""
    n = plan.counts()
    note = ("*Truncated: {} more line(s) not shown; this comment is capped at {} KB. "
            "Run `hxpc plan` for the full plan.*")
    out = _Budget(limit - len(note.format(10**9, limit // 1024).encode()) - 1)  # the note always fits
    out.add(f"## hxpc plan: `{plan.project}` / `{plan.env}`", "",
            f"**{plan.summary_line()}** Spec `{plan.spec_hash}`; {n['noop']} object(s) unchanged.", "")
    for warning in plan.warnings:
        if out.fits(f"> **Warning:** {warning}", ""):
            out.add(f"> **Warning:** {warning}", "")
    downtime = downtime_lines(plan)
    if downtime:
        out.add("> [!WARNING]", "> **Downtime this plan cannot avoid:**", *(f"> - {line}" for line in downtime), "")
    cut = 0
    for lines in [*(_table(plan, target) for target in plan.targets), _rolling_table(plan)]:
        for line in lines:
            if cut or not out.fits(line):
                cut += 1
            else:
                out.add(line)
    for target in plan.targets:
        body = [line for a in plan.actions if a.key.target == target and _shown(a) for line in _diff_lines(a)]
        if not body:
            continue
        fence = _fence(body)
        opening = [f"<details><summary>{target}: {sum(1 for a in plan.touched if a.key.target == target)} "
                   f"change(s)</summary>", "", f"{fence}diff"]
        closing = [fence, "", "</details>", ""]
        if cut or not out.fits(*opening, *closing):
            cut += len(body)
            continue
        out.add(*opening)
        for i, line in enumerate(body):
            if not out.fits(line, *closing):
                cut += len(body) - i
                break
            out.add(line)
        out.add(*closing)
    if cut:
        out.lines.append(note.format(cut, limit // 1024))
    return "\n".join(out.lines) + "\n"
