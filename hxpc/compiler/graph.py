"""The dependency graph and its apply waves, rendered as mermaid, Graphviz dot or JSON.

Edges point from a workload to what it depends on (it starts after them);
each wave is drawn as a cluster so a reader sees what apply starts together.
"""

from __future__ import annotations

import json
from typing import Any

from hxpc.compiler.model import ResolvedStack


def graph_data(resolved: ResolvedStack) -> dict[str, Any]:
    return {
        "project": resolved.project,
        "env": resolved.env,
        "nodes": [{"name": n, "kind": w.kind, "replicas": w.replicas} for n, w in resolved.workloads.items()],
        "edges": [{"from": n, "to": d} for n, w in resolved.workloads.items() for d in w.depends_on],
        "waves": [list(w) for w in resolved.waves],
    }


def _id(name: str) -> str:
    return name.replace("-", "_")


def render_mermaid(resolved: ResolvedStack) -> str:
    lines = ["flowchart TD"]
    for i, wave in enumerate(resolved.waves):
        lines.append(f"  subgraph wave{i}[\"wave {i}\"]")
        for name in wave:
            w = resolved.workloads[name]
            shape = f"{_id(name)}[(\"{name}\")]" if w.kind == "model" else f"{_id(name)}[\"{name}\"]"
            lines.append(f"    {shape}")
        lines.append("  end")
    for name, w in resolved.workloads.items():
        for dep in w.depends_on:
            lines.append(f"  {_id(name)} --> {_id(dep)}")
    return "\n".join(lines) + "\n"


def render_dot(resolved: ResolvedStack) -> str:
    lines = [f'digraph "{resolved.project}-{resolved.env}" {{', "  rankdir=BT;"]
    for i, wave in enumerate(resolved.waves):
        lines.append(f'  subgraph "cluster_wave{i}" {{')
        lines.append(f'    label="wave {i}";')
        for name in wave:
            shape = "cylinder" if resolved.workloads[name].kind == "model" else "box"
            lines.append(f'    "{name}" [shape={shape}];')
        lines.append("  }")
    for name, w in resolved.workloads.items():
        for dep in w.depends_on:
            lines.append(f'  "{name}" -> "{dep}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_json(resolved: ResolvedStack) -> str:
    return json.dumps(graph_data(resolved), indent=2) + "\n"
