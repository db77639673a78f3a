"""Terminal rendering of the resources report with rich: per host a table of GPUs, one of model replicas' KV
cache, and the totals."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _gb(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f} GiB"


def _cores(value: int | None) -> str:
    return "-" if value is None else f"{value / 1000:g}"


def print_resources(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(soft_wrap=True)
    console.print(f"[bold]{report['project']}[/] env [bold]{report['env']}[/] "
                  f"(placement: {report['placement'] or 'none'})")
    for host in report["hosts"]:
        gpus = host["gpus"]
        title = f"{host['host']}: {gpus['used']}/{gpus['count']} GPUs"
        if host["gpu_model"]:
            title += f" {host['gpu_model']}"
        table = Table(title=title, title_justify="left", show_edge=False)
        for column in ("device", "used by", "memory", "weights", "usable", "headroom"):
            table.add_column(column, justify="left" if column in ("device", "used by") else "right")
        for d in gpus["devices"]:
            table.add_row(str(d["index"]), d["used_by"] or "[dim]free[/]", _gb(d["memory_bytes"]),
                          _gb(d["weights_bytes"]), _gb(d["usable_bytes"]), _gb(d["headroom_bytes"]))
        if gpus["devices"]:
            console.print(table)
        else:
            console.print(f"[bold]{title}[/]")
        cpu, mem = host["cpu_millis"], host["memory_bytes"]
        console.print(f"  cpu    requested {_cores(cpu['requested'])} of {_cores(cpu['capacity'])} cores, "
                      f"headroom {_cores(cpu['headroom'])}")
        console.print(f"  memory requested {_gb(mem['requested'])} of {_gb(mem['capacity'])}, "
                      f"headroom {_gb(mem['headroom'])}")
        for r in host["replicas"]:
            devices = ",".join(map(str, r["gpu_devices"])) or "-"
            ports = ", ".join(f"{k}={v}" for k, v in r["host_ports"].items()) or "-"
            console.print(f"    {r['kind']:<7} {r['name']}[{r['replica']}]  gpus {devices}  ports {ports}")
        _print_capacity(console, host)
    if report["unplaced"]:
        console.print(f"not placed on any host: {', '.join(report['unplaced'])}")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"


def _print_capacity(console: Console, host: dict[str, Any]) -> None:
    """Per model replica: weights, non-KV memory, KV cache, KV tokens and concurrency, per GPU (predicted)."""
    models = [r for r in host["replicas"] if r["kind"] == "model"]
    if not models:
        return
    table = Table(title=f"{host['host']}: model replicas, GiB per GPU (predicted); requests: of max len at once",
                  title_justify="left", show_edge=False)
    for column in ("replica", "weights", "non-KV", "KV cache", "KV tokens", "max len", "requests"):
        table.add_column(column, justify="left" if column == "replica" else "right")
    notes: dict[str, str] = {}
    for r in models:
        capacity = r["capacity"]
        table.add_row(f"{r['name']}[{r['replica']}]", _num(r["weights_gib"]), _num(r["non_kv_gib"]),
                      _num(r["kv_cache_gib"]), _num(r["kv_cache_tokens"]), _num(r["max_model_len"]),
                      "-" if r["max_concurrency"] is None else f"{r['max_concurrency']:.2f}x")
        if "unknown" in capacity:
            notes.setdefault(r["name"], f"not predicted: {capacity['unknown']}")
        else:
            notes.setdefault(r["name"], "; ".join(capacity["assumptions"]))
    console.print(table)
    for name, note in notes.items():
        console.print(f"  {name}: {note}", highlight=False)
