"""Terminal rendering of the resources report with rich: one table of GPUs and one of totals per host."""

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
    if report["unplaced"]:
        console.print(f"not placed on any host: {', '.join(report['unplaced'])}")
