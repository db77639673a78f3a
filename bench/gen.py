"""Generators of large specs for the benchmarks: N services and models, with overlays."""

from __future__ import annotations

from pathlib import Path


def write_spec(directory: Path, n: int, envs: tuple[str, ...] = ("staging", "prod")) -> Path:
    """A spec of n workloads (one model per 10 services) on enough hosts, plus one overlay file per env."""
    models = max(1, n // 10)
    services = n - models
    hosts = max(1, models // 4 + 1)
    lines = ["apiVersion: hxpc/v1", "project: bench", "defaults:", "  restart: on-failure",
             "  resources: {cpu: 1, memory: 512Mi}", "hosts:"]
    for h in range(hosts):
        lines += [f"  gpu-{h:04d}:", f"    address: gpu-{h:04d}.internal", "    cpu: 64", "    memory: 512Gi",
                  "    gpus: {count: 8, model: A100-80GB, memory: 80Gi}"]
    apps = max(1, services // 200 + 1)
    for a in range(apps):
        lines += [f"  app-{a:04d}:", f"    address: app-{a:04d}.internal", "    cpu: 512", "    memory: 4Ti"]
    lines += ["secrets:", "  db-password: {env: BENCH_DB_PASSWORD}", "models:"]
    for m in range(models):
        lines += [f"  model-{m:05d}:", "    source: meta-llama/Llama-3.1-8B-Instruct", f"    served_name: m{m}",
                  "    params_b: 8.0", "    tensor_parallel: 2", f"    port: {60000 + m}",
                  f"    hosts: [gpu-{m // 4:04d}]"]
    lines.append("services:")
    for s in range(services):
        app = s // 200
        port = 10000 + s * 10  # unique: the compose target publishes every port on one engine
        deps = f"[svc-{s - 1:05d}]" if s % 200 else f"[model-{s % models:05d}]"
        lines += [f"  svc-{s:05d}:", f"    image: registry.example/svc-{s}:1.0.{s}", f"    ports: {{http: {port}}}",
                  f"    env: {{LOG_LEVEL: INFO, SVC_INDEX: \"{s}\"}}", "    secrets: {DB_PASSWORD: db-password}",
                  "    resources: {cpu: 500m, memory: 256Mi}", f"    depends_on: {deps}",
                  "    health: {http: {path: /health, port: http}, interval: 10s}",
                  "    metrics: {port: http}", f"    hosts: [app-{app:04d}]"]
    all_hosts = [f"gpu-{h:04d}" for h in range(hosts)] + [f"app-{a:04d}" for a in range(apps)]
    lines += ["monitoring: {scrape_interval: 15s}", "targets:", f"  systemd: {{hosts: [{', '.join(all_hosts)}]}}",
              "  compose: {}", "  kubernetes: {}", "environments:", "  dev:",
              "    services: {svc-00000: {replicas: 1}}"]
    spec = directory / "bench.yaml"
    spec.write_text("\n".join(lines) + "\n")
    for env in envs:
        overlay = ["services:"]
        for s in range(0, services, 7):
            overlay += [f"  svc-{s:05d}:", "    env: {LOG_LEVEL: WARNING}", "    resources: {memory: 512Mi}"]
        (directory / f"bench.{env}.yaml").write_text("\n".join(overlay) + "\n")
    return spec
