"""The resources report: per host, who holds which GPU, memory per device, cpu and memory.

Built from the primary placement (systemd hosts, else the compose host, else
the hosts the spec declares). Returned as plain data, the same for the table
and for `--format json`; numbers are bytes and millicores, so nothing is
rounded before a reader sees it.
"""

from __future__ import annotations

from typing import Any

from hxpc.compiler.model import ResolvedStack


def resources_report(resolved: ResolvedStack) -> dict[str, Any]:
    placement = resolved.primary_placement
    hosts: list[dict[str, Any]] = []
    for host_name, host in resolved.spec.hosts.items():
        on_host = placement.on_host(host_name) if placement else []
        devices: dict[int, dict[str, Any]] = {}
        count = host.gpus.count if host.gpus else 0
        memory = host.gpus.memory if host.gpus else 0
        for i in range(count):
            devices[i] = {"index": i, "used_by": None, "memory_bytes": memory,
                          "weights_bytes": 0, "usable_bytes": memory, "headroom_bytes": memory}
        cpu = mem = 0
        replicas: list[dict[str, Any]] = []
        for name, replica in on_host:
            w = resolved.workloads[name]
            cpu += w.cpu_millis or 0
            mem += w.memory_bytes or 0
            replicas.append({"name": name, "kind": w.kind, "replica": replica.index,
                             "gpu_devices": list(replica.gpu_devices), "host_ports": replica.host_ports})
            for index in replica.gpu_devices:
                util = w.model.gpu_memory_utilization if w.model else 1.0
                weights = round(w.weights_bytes_per_gpu)
                usable = round(memory * util)
                devices[index] = {"index": index, "used_by": f"{name}[{replica.index}]", "memory_bytes": memory,
                                  "weights_bytes": weights, "usable_bytes": usable,
                                  "headroom_bytes": usable - weights}
        hosts.append({
            "host": host_name,
            "gpu_model": host.gpus.model if host.gpus else None,
            "gpus": {"count": count, "used": sum(1 for d in devices.values() if d["used_by"]),
                     "devices": [devices[i] for i in sorted(devices)]},
            "cpu_millis": {"capacity": host.cpu, "requested": cpu,
                           "headroom": None if host.cpu is None else host.cpu - cpu},
            "memory_bytes": {"capacity": host.memory, "requested": mem,
                             "headroom": None if host.memory is None else host.memory - mem},
            "replicas": replicas,
        })
    placed = placement.replicas.items() if placement else ()
    unplaced = sorted(n for n, reps in placed if any(r.host is None for r in reps))
    return {"project": resolved.project, "env": resolved.env,
            "placement": placement.target if placement else None, "hosts": hosts, "unplaced": unplaced}
