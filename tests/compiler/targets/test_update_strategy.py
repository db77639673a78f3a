"""`update.max_unavailable` on every deploying target: what each compiles it to, and what validation refuses.

A replica that holds something exclusive (GPUs, a fixed host port, a systemd unit, a StatefulSet pod's
name and volume) is replaced stop-first, at most `max_unavailable` at a time; any other starts beside its
old one. `0` is accepted only where every replica can start beside its old one (HX314 otherwise, located).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool
from ruamel.yaml import YAML

from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import compile_env
from hxpc.compiler.model import ResolvedStack
from hxpc.compiler.pipeline import resolve_env
from hxpc.compiler.targets import compose, kubernetes
from hxpc.errors import SpecError
from hxpc.sources import FileSources

META = Meta("demo", "test", "demo.yaml", "0123456789abcdef")

SPEC = """
apiVersion: hxpc/v1
project: demo
hosts:
  gpu-a: {cpu: 64, memory: 512Gi, gpus: {count: 8, model: H100-80GB, memory: 80Gi}}
defaults:
  update: {max_unavailable: 2}
models:
  chat: {source: Qwen/Qwen2.5-1.5B-Instruct, params_b: 1.5, max_model_len: 4096, replicas: 3,
         hosts: [gpu-a]}
services:
  web:
    image: nginx:1.27
    ports: {http: 8080}
    replicas: 3
    update: {max_unavailable: 1}
  worker: {image: busybox:1, replicas: 4, update: {max_unavailable: 0}}
  batch: {image: busybox:1, replicas: 4}
  db:
    image: postgres:16.4
    replicas: 3
    volumes: {data: {path: /var/lib/postgresql/data, size: 1Gi}}
  cache:
    image: redis:7.4
    replicas: 2
    volumes: {data: {path: /data, size: 1Gi}}
    update: {max_unavailable: 1}
targets:
  TARGETS
environments: {test: {}}
"""


def _resolve(tmp_path: Path, targets: str, text: str = SPEC) -> ResolvedStack:
    spec = tmp_path / "demo.yaml"
    spec.write_text(text.replace("TARGETS", targets))
    return resolve_env(FileSources(str(spec)), "test").stack


def _problems(tmp_path: Path, targets: str, text: str = SPEC) -> list[tuple[str, str, int]]:
    spec = tmp_path / "demo.yaml"
    spec.write_text(text.replace("TARGETS", targets))
    with pytest.raises(SpecError) as caught:
        resolve_env(FileSources(str(spec)), "test")
    return [(d.code, d.message, d.span.line if d.span else 0) for d in caught.value.diagnostics]


def test_defaults_reach_services_and_models(tmp_path: Path) -> None:
    stack = _resolve(tmp_path, "kubernetes: {}")
    got = {n: w.max_unavailable for n, w in stack.workloads.items()}
    assert got == {"chat": 2, "web": 1, "worker": 0, "batch": 2, "db": 2, "cache": 1}


def test_kubernetes_never_surges_a_gpu_pod(tmp_path: Path) -> None:
    stack = _resolve(tmp_path, "kubernetes: {}")
    objects = {(o["kind"], o["metadata"]["name"]): o for o in kubernetes.kubernetes_objects(stack, META)}

    def rolling(name: str) -> dict[str, Any]:
        strategy = objects[("Deployment", name)]["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        return dict(strategy["rollingUpdate"])

    assert rolling("chat") == {"maxSurge": 0, "maxUnavailable": 2}        # GPUs: stop-first, 2 at a time
    assert rolling("web") == {"maxSurge": 1, "maxUnavailable": 0}         # no host ports on kubernetes
    assert rolling("worker") == {"maxSurge": 1, "maxUnavailable": 0}
    assert rolling("batch") == {"maxSurge": 2, "maxUnavailable": 0}
    assert objects[("StatefulSet", "db")]["spec"]["updateStrategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}
    assert "updateStrategy" not in objects[("StatefulSet", "cache")]["spec"]  # one at a time is the default


def test_kubernetes_manifests_with_strategies_validate(tmp_path: Path) -> None:
    tool = require_tool("kubernetes-validate")
    files = compile_env(resolve_env(FileSources(str(_write(tmp_path, "kubernetes: {}"))), "test"), "demo.yaml",
                        ["kubernetes"])
    paths = []
    for rel, text in files.files.items():
        path = tmp_path / "out" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(str(path))
    done = subprocess.run([tool, "--strict", "--quiet", "-k", "1.33.0", *paths], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0 and "WARN" not in done.stdout and "ERROR" not in done.stdout, done.stdout


def _write(tmp_path: Path, targets: str) -> Path:
    spec = tmp_path / "demo.yaml"
    spec.write_text(SPEC.replace("TARGETS", targets))
    return spec


def test_compose_update_config_says_what_apply_does(tmp_path: Path) -> None:
    text = SPEC.replace("update: {max_unavailable: 0}}", "update: {max_unavailable: 3}}")
    stack = _resolve(tmp_path, "compose: {host: gpu-a}", text)
    doc = compose.compose_document(stack, META)
    update = {name: svc["deploy"]["update_config"] for name, svc in doc["services"].items()}
    assert update["web"] == {"parallelism": 1, "order": "stop-first", "failure_action": "rollback"}
    assert update["worker"] == {"parallelism": 3, "order": "start-first", "failure_action": "rollback"}
    assert update["db"] == {"parallelism": 2, "order": "start-first", "failure_action": "rollback"}
    # a GPU model is split into one service per replica on a named host; each is stop-first
    assert {update[f"chat-{i}"]["order"] for i in range(3)} == {"stop-first"}
    YAML(typ="safe", pure=True).load(compose.emit(stack, META)[compose.FILE])


def test_zero_is_refused_where_a_replica_cannot_start_beside_its_old_one(tmp_path: Path) -> None:
    text = SPEC.replace("defaults:\n  update: {max_unavailable: 2}\n", "defaults:\n  update: {max_unavailable: 0}\n")
    defaults_line = text.splitlines().index("  update: {max_unavailable: 0}") + 1
    # kubernetes: the GPU model (by defaults) and the StatefulSet are refused; worker and batch start beside
    stateful = text.replace("    replicas: 3\n    volumes:", "    replicas: 3\n    update: {max_unavailable: 0}\n"
                                                             "    volumes:")
    db_line = stateful.splitlines().index("    update: {max_unavailable: 0}") + 1
    found = _problems(tmp_path, "kubernetes: {}", stateful)
    assert sorted((code, line) for code, _, line in found) == [("HX314", defaults_line), ("HX314", db_line)]
    messages = sorted(m for _, m, _ in found)
    assert "model `chat`" in messages[0] and "holds 1 GPU(s)" in messages[0]
    assert "service `db`" in messages[1] and "StatefulSet" in messages[1]
    # compose: a published port refuses it (web, once its own `update` is gone) and so does the model's GPU
    found = _problems(tmp_path, "compose: {}", text.replace("    update: {max_unavailable: 1}\n  worker",
                                                             "    update: {max_unavailable: 0}\n  worker"))
    assert sorted(m.split("`")[1] for _, m, _ in found) == ["chat", "web"]
    assert any("publishes its ports on the host (8080 + replica index)" in m for _, m, _ in found)
    # systemd: every replica is one unit, so 0 is never possible, ports or not (worker's own line is reported;
    # those set by `defaults` share its line, where one report stands for all)
    found = _problems(tmp_path, "systemd: {hosts: [gpu-a], runtime: docker}", text)
    worker_line = next(i for i, t in enumerate(text.splitlines(), start=1) if t.startswith("  worker:"))
    assert sorted(line for _, _, line in found) == [defaults_line, worker_line]
    assert all("one systemd unit" in m for _, m, _ in found)
