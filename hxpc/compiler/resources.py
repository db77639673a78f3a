"""The resources report: per host, GPUs and memory per device, cpu and memory; per model replica, its KV cache.

Built from the primary placement (systemd hosts, else the compose host, else
the hosts the spec declares). Returned as plain data, the same for the table
and for `--format json`; numbers are bytes and millicores, so nothing is
rounded before a reader sees it, except the capacity of a model replica
(hxpc.compiler.capacity), which is a prediction and given in GiB to two
places like vLLM's own log: `weights_gib`, `non_kv_gib`, `kv_cache_gib`,
`kv_cache_tokens` and `max_concurrency` (full `max_model_len` requests at
once), with the assumptions the prediction rests on.
"""

from __future__ import annotations

from typing import Any

from hxpc.compiler.capacity import Estimate, GiB, estimate, gpu_of
from hxpc.compiler.model import ResolvedStack, Workload
from hxpc.compiler.spec import GpuBudget


def replica_estimate(workload: Workload, gpus: GpuBudget | None) -> Estimate | str:
    """The KV-cache prediction for one GPU of a model replica on a host with `gpus`, or why there is none."""
    if workload.model is None:
        return "not a model"
    if gpus is None:
        return "its host declares no GPU budget"
    shape = workload.known_shape
    if shape is None:
        return "its architecture is not known"
    if workload.model.max_model_len is None and shape.max_position_embeddings is None:
        return "max_model_len is not set and the model's positions are not known"
    return estimate(workload.model, shape, gpu_of(gpus.memory, gpus.model))


def predicted_kv_tokens(resolved: ResolvedStack, name: str) -> int | None:
    """The KV-cache tokens one replica of model `name` is predicted to hold (the smallest over its hosts), or None.

    For monitoring: the capacity a KV-usage panel can draw, or an alert can compare queued requests with.
    """
    placement = resolved.primary_placement
    workload = resolved.workloads.get(name)
    if placement is None or workload is None or workload.model is None:
        return None
    found = []
    for replica in placement.replicas.get(name, ()):
        host = resolved.spec.hosts.get(replica.host) if replica.host else None
        est = replica_estimate(workload, host.gpus if host else None)
        if isinstance(est, Estimate):
            found.append(est.kv_cache_tokens)
    return min(found) if found else None


def _gib(value: float) -> float:
    return round(value / GiB, 2)


def capacity_report(workload: Workload, gpus: GpuBudget | None) -> dict[str, Any]:
    """The capacity keys of a model replica in the resources report."""
    est = replica_estimate(workload, gpus)
    if not isinstance(est, Estimate):
        return {"weights_gib": None, "non_kv_gib": None, "kv_cache_gib": None, "kv_cache_tokens": None,
                "max_concurrency": None, "max_model_len": None, "capacity": {"unknown": est}}
    return {
        "weights_gib": _gib(est.weights.per_gpu_bytes), "non_kv_gib": _gib(est.non_kv_bytes),
        "kv_cache_gib": _gib(est.kv_cache_bytes), "kv_cache_tokens": est.kv_cache_tokens,
        "max_concurrency": round(est.max_concurrency, 2), "max_model_len": est.max_model_len,
        "capacity": {
            "verdict": est.verdict, "engine": est.engine.describe(),
            "gpu_total_gib": _gib(est.gpu.total_bytes), "usable_gib": _gib(est.usable_bytes),
            "activation_gib": _gib(est.activation_bytes), "non_torch_gib": _gib(est.non_torch_bytes),
            "cuda_graph_gib": _gib(est.cuda_graph_bytes), "kv_bytes_per_token": est.kv_bytes_per_token,
            "block_size": est.block_size, "longest_max_model_len": est.longest_fitting,
            "profile_tokens": est.profile_tokens, "profile_requests": est.profile_requests,
            "weights": est.weights.formula, "assumptions": list(est.assumptions),
        },
    }


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
            entry = {"name": name, "kind": w.kind, "replica": replica.index,
                     "gpu_devices": list(replica.gpu_devices), "host_ports": replica.host_ports}
            if w.model is not None:
                entry.update(capacity_report(w, host.gpus))
            replicas.append(entry)
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
