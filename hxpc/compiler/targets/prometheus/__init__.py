"""The `prometheus` target: scrape configs or ServiceMonitors, alerting and recording rules, and their tests.

Files, relative to `<env>/prometheus/`: `scrape_configs.yaml` (systemd or
compose: a job per scraped service and model, a static target per replica at
`host:hostport`, and a DCGM exporter job per GPU host), `rules.yaml` (one rule
group per workload, then `monitoring.rules`), `rules.test.yaml` (a
`promtool test rules` file: for every generated alert, synthetic series that
make it fire and series that keep it silent), and for kubernetes
`servicemonitors.yaml` and `prometheusrule.yaml`. This module lays out the
files and writes the scrape jobs and Kubernetes objects; the selectors and
recorded names are in `series`, the rules in `rules`,
their tests in `ruletests`, and the check of `monitoring.rules` in
`userrules`. `warnings` names, per model, what its vLLM release leaves
unmonitored (compile prints it; it never fails the compile).
"""

from __future__ import annotations

from typing import Any

from hxpc.compiler import yamlout
from hxpc.compiler.bundle import Meta, TargetError, object_hash
from hxpc.compiler.model import ResolvedStack, Workload
from hxpc.compiler.targets import Platform, Problem
from hxpc.compiler.targets.prometheus import vllm_metrics as vm
from hxpc.compiler.targets.prometheus.rules import rule_groups
from hxpc.compiler.targets.prometheus.ruletests import tests_file
from hxpc.compiler.targets.prometheus.series import (
    cluster_platform,
    dcgm_job,
    gpu_selectors,
    host_address,
    host_platform,
    owner,
    rules_platform,
    scrape_interval,
    scraped,
    slo_services_in_front,
)
from hxpc.compiler.targets.prometheus.userrules import check_user_rules
from hxpc.diagnostics import Diagnostic


def scrape_configs(stack: ResolvedStack, platform: Platform, interval: str) -> list[dict[str, Any]]:
    """A job per scraped workload on the hosts (static targets, or DNS for compose without a host), then DCGM's."""
    jobs: list[dict[str, Any]] = []
    placement = platform.placement
    for w in scraped(stack):
        assert w.metrics is not None
        port, path = w.metrics
        job: dict[str, Any] = {"job_name": f"{stack.project}-{stack.env}-{w.name}", "metrics_path": path,
                               "scrape_interval": interval}
        if placement is None:
            # compose without a host: Prometheus on the compose network finds every replica by DNS
            job["dns_sd_configs"] = [{"names": [w.name], "type": "A", "port": port}]
            job["relabel_configs"] = [{"target_label": k, "replacement": v} for k, v in owner(stack, w).items()]
        else:
            metrics_port = next((p for p, n in w.ports.items() if n == port), None)
            job["static_configs"] = [
                {"targets": [f"{host_address(stack, r.host)}:{r.host_ports.get(metrics_port or '', port + r.index)}"],
                 "labels": {**owner(stack, w), "host": r.host, "replica": str(r.index)}}
                for r in placement.replicas.get(w.name, ()) if r.host is not None]
        jobs.append(job)
    gpu_hosts = sorted({h for w in stack.workloads.values() if w.kind == "model"
                        for sel_ in gpu_selectors(stack, w, platform) for h in [sel_["host"][1:]]})
    if gpu_hosts:
        jobs.append({"job_name": dcgm_job(stack), "metrics_path": "/metrics", "scrape_interval": interval,
                     "static_configs": [{"targets": [f"{host_address(stack, h)}:{vm.DCGM_PORT}"],
                                         "labels": {"project": stack.project, "env": stack.env, "host": h}}
                                        for h in gpu_hosts]})
    return jobs


def _k8s_meta(meta: Meta, name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace,
            "labels": {**meta.owner_labels, "app.kubernetes.io/name": name}}


def hashed(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with the annotation `hxpc.dev/hash`: the hash of the object without it."""
    obj["metadata"]["annotations"] = {"hxpc.dev/hash": object_hash(obj)}
    return obj


def _prometheus_rule(meta: Meta, name: str, namespace: str, groups: list[dict[str, Any]]) -> dict[str, Any]:
    return hashed({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                   "metadata": _k8s_meta(meta, name, namespace), "spec": {"groups": groups}})


def _relabelings(stack: ResolvedStack, w: Workload) -> list[dict[str, Any]]:
    # a StatefulSet's `<name>-headless` Service carries the same labels: keep one target per pod
    out: list[dict[str, Any]] = [{"action": "keep", "sourceLabels": ["__meta_kubernetes_service_name"],
                                  "regex": w.name}]
    if w.kind == "model":
        # the operator labels targets with their Service's name as `service`; a model is not a service
        out.append({"action": "replace", "targetLabel": "service", "replacement": ""})
    out += [{"action": "replace", "targetLabel": k, "replacement": v} for k, v in owner(stack, w).items()]
    return out


def service_monitors(stack: ResolvedStack, meta: Meta, platform: Platform, interval: str) -> list[dict[str, Any]]:
    """A ServiceMonitor per scraped workload, selecting its Service's named port, then one for DCGM if GPUs are used."""
    ns = platform.namespace or ""
    out = []
    for w in scraped(stack):
        assert w.metrics is not None
        path = w.metrics[1]
        svc = stack.spec.services.get(w.name)
        port_name = "http" if w.kind == "model" or svc is None or svc.metrics is None else svc.metrics.port
        out.append(hashed({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": _k8s_meta(meta, w.name, ns),
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": w.name, "hxpc.dev/project": stack.project,
                                             "hxpc.dev/env": stack.env}},
                "namespaceSelector": {"matchNames": [ns]},
                "endpoints": [{"port": port_name, "path": path, "interval": interval,
                               "relabelings": _relabelings(stack, w)}],
            }}))
    if any(w.kind == "model" and w.gpus for w in stack.workloads.values()):
        # the NVIDIA GPU operator's exporter; honorLabels keeps the pod/namespace it maps each GPU to
        out.append(hashed({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": _k8s_meta(meta, f"{stack.project}-dcgm-exporter", ns),
            "spec": {"selector": {"matchLabels": {"app": "nvidia-dcgm-exporter"}},
                     "namespaceSelector": {"matchNames": ["gpu-operator"]},
                     "endpoints": [{"port": "gpu-metrics", "path": "/metrics", "interval": interval,
                                    "honorLabels": True}]}}))
    return out


def _slo_without_metrics(stack: ResolvedStack) -> list[Diagnostic]:
    return [Diagnostic("HX403", f"service `{w.name}` has an `slo` but no `metrics`: the SLO rules need its "
                                "request metrics scraped", hint=f"add `metrics: {{port: ..., path: /metrics}}` "
                                                                f"to services.{w.name}")
            for w in stack.workloads.values() if w.kind == "service" and w.slo is not None and w.metrics is None]


def warnings(stack: ResolvedStack) -> list[Problem]:
    """HX406 for every model whose vLLM release leaves something unmonitored, or whose tag names no release
    hxpc knows (its monitoring then assumes one)."""
    if stack.spec.monitoring is None or rules_platform(stack) is None:
        return []
    out = []
    for w in scraped(stack):
        if w.kind != "model":
            continue
        m = vm.for_image(w.image)
        where = ("models", w.name, "image")  # the model's name where the image is the default one
        if m.tag_note:
            out.append(Problem("HX406", f"model `{w.name}`: {m.tag_note}", where))
        if not m.failures:
            front = slo_services_in_front(stack, w)
            instead = "`up` (HxpcTargetDown)" + (f" and the SLO of {', '.join(front)}" if front else "")
            out.append(Problem(
                "HX406", f"model `{w.name}` (vLLM {vm.show(m.version)}): failed requests are not monitored: "
                         f"{m.failures_unavailable}; watched only through {instead}", where,
                hint=f"vLLM {vm.show(vm.HTTP_METRICS_FROM)} and later count HTTP 5xx responses, which hxpc alerts on"))
    return out


def emit(stack: ResolvedStack, meta: Meta) -> dict[str, str]:
    """Nothing without `monitoring` or a host or kubernetes target; HX402/HX403 for rules that cannot work."""
    mon = stack.spec.monitoring
    platform = rules_platform(stack)
    if mon is None or platform is None:
        return {}
    user = list(mon.rules)
    problems = _slo_without_metrics(stack)
    groups, cases = rule_groups(stack, platform)
    problems += check_user_rules(user, {g["name"] for g in groups})
    if problems:
        raise TargetError(problems)
    header = meta.header()
    interval = scrape_interval(mon)
    files: dict[str, str] = {
        "rules.yaml": header + yamlout.dump({"groups": groups + user}),
        "rules.test.yaml": header + yamlout.dump(tests_file(cases)),
    }
    hosts = host_platform(stack)
    if hosts is not None:
        files["scrape_configs.yaml"] = header + yamlout.dump({"scrape_configs": scrape_configs(stack, hosts, interval)})
    monitors, rules = _cluster_objects(stack, meta, platform, groups)
    # a file without objects would make `kubectl apply -f` fail with "no objects passed to apply"
    if monitors:
        files["servicemonitors.yaml"] = header + yamlout.dump_all(monitors)
    if rules:
        files["prometheusrule.yaml"] = header + yamlout.dump_all(rules)
    return files


def _cluster_objects(stack: ResolvedStack, meta: Meta, platform: Platform,
                     groups: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    mon = stack.spec.monitoring
    kube = cluster_platform(stack)
    if kube is None or mon is None:
        return [], []
    ns = kube.namespace or ""
    monitors = service_monitors(stack, meta, kube, scrape_interval(mon))
    kube_groups = groups if platform == kube else rule_groups(stack, kube)[0]
    rules = [_prometheus_rule(meta, g["name"].removeprefix("hxpc."), ns, [g]) for g in kube_groups]
    if mon.rules:
        rules.append(_prometheus_rule(meta, f"{stack.project}-custom-rules", ns, list(mon.rules)))
    return monitors, rules


def cluster_objects(stack: ResolvedStack, meta: Meta) -> list[dict[str, Any]]:
    """The ServiceMonitors and PrometheusRules of a stack on a cluster, as `emit` writes them (none without
    `monitoring` or a cluster target)."""
    platform = rules_platform(stack)
    if stack.spec.monitoring is None or platform is None:
        return []
    monitors, rules = _cluster_objects(stack, meta, platform, rule_groups(stack, platform)[0])
    return monitors + rules
