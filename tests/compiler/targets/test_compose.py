"""The Compose target: schema-valid files that say what the spec says, and health checks that really run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import require, require_tool
from ruamel.yaml import YAML

from hxpc.compiler.bundle import Meta, TargetError, object_hash
from hxpc.compiler.compile import compile_env, targets_of
from hxpc.compiler.model import ResolvedStack
from hxpc.compiler.pipeline import environments, resolve_env
from hxpc.compiler.targets import compose
from hxpc.sources import FileSources

REPO = Path(__file__).resolve().parents[3]
SECRET_VALUE = "s3cr3t-value-that-must-never-be-written"


def _schema_path() -> Path:
    for candidate in (REPO / "../shared/schemas/compose-spec.json", Path("/work/shared/schemas/compose-spec.json")):
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError("compose-spec.json not found in ../shared/schemas beside the repository")


_VALIDATOR = jsonschema.Draft7Validator(json.loads(_schema_path().read_text()))


def _check_schema(text: str) -> dict[str, Any]:
    """Parse the emitted YAML as Compose would and validate it against the Compose Specification schema."""
    data = YAML(typ="safe", pure=True).load(text)
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    assert isinstance(data, dict)
    return data


def _resolve(tmp_path: Path, text: str, env: str = "default") -> ResolvedStack:
    spec = tmp_path / "stack.yaml"
    spec.write_text(text)
    return resolve_env(FileSources(str(spec)), env).stack


def _meta(stack: ResolvedStack) -> Meta:
    return Meta(stack.project, stack.env, "stack.yaml", "0" * 16)


def _emit(stack: ResolvedStack) -> tuple[str, dict[str, Any]]:
    text = compose.emit(stack, _meta(stack))[compose.FILE]
    return text, _check_schema(text)


HEADER = """\
apiVersion: hxpc/v1
project: demo
hosts:
  gpu-box:
    address: local
    cpu: 64
    memory: 512Gi
    gpus: {count: 8, model: A100-80GB, memory: 80Gi}
secrets:
  db-password: {env: DEMO_DB_PASSWORD}
  hf-token: {file: /etc/demo/hf-token}
"""

FULL = HEADER + """\
models:
  big:
    source: org/big-model
    params_b: 13
    architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}
    tensor_parallel: 2
    port: 8000
    secrets: {HF_TOKEN: hf-token}
    resources: {cpu: 8, memory: 64Gi}
  small:
    source: /models/small
    params_b: 1
    architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}
    replicas: 2
    port: 8100
services:
  db:
    image: postgres:16.4
    ports: {pg: 5432}
    secrets: {POSTGRES_PASSWORD: db-password}
    health: {exec: [pg_isready, -U, demo], interval: 5s, timeout: 2s, retries: 4, start_period: 15s}
    volumes: {data: {path: /var/lib/postgresql/data, size: 50Gi}}
    restart: always
  cache:
    image: redis:7.4
    ports: {redis: 6379}
    health: {tcp: {port: redis}}
  plain:
    image: busybox:1.36
    command: [sh, -c]
    args: ["echo $HOME; sleep 3600"]
    env: {GREETING: "cost: $5", ZED: z, ALPHA: a}
    restart: never
  web:
    image: ghcr.io/demo/web:1.0
    ports: {http: 8080, admin: 9090}
    replicas: 3
    secrets: {DB_PASSWORD: db-password, HF_TOKEN: hf-token}
    resources: {cpu: 500m, memory: 1536Mi, gpus: 1}
    depends_on: [db, cache, plain, big, small]
    health: {http: {path: /healthz, port: http}, start_period: 30s}
targets:
  compose: {host: gpu-box}
"""


@pytest.fixture
def full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ResolvedStack, str, dict[str, Any]]:
    monkeypatch.setenv("DEMO_DB_PASSWORD", SECRET_VALUE)  # present at compile time, and still never written
    stack = _resolve(tmp_path, FULL)
    text, data = _emit(stack)
    return stack, text, data


# --- every example environment that compiles to compose ------------------------------------------------------


def _compose_envs() -> list[tuple[str, str]]:
    """(spec, env) for every example spec and environment whose targets include compose."""
    out = []
    for spec in sorted((REPO / "specs").glob("*.yaml")):
        if spec.name.count(".") != 1:  # overlay files `<name>.<env>.yaml`
            continue
        rel = spec.relative_to(REPO).as_posix()
        for env in environments(FileSources(str(spec))):
            if "compose" in targets_of(resolve_env(FileSources(str(spec)), env).stack):
                out.append((rel, env))
    return out


COMPOSE_ENVS = _compose_envs()


def test_some_example_env_compiles_to_compose() -> None:
    assert ("specs/hxp.yaml", "dev") in COMPOSE_ENVS


@pytest.mark.parametrize(("spec", "env"), COMPOSE_ENVS)
def test_example_envs_validate_against_the_compose_schema(spec: str, env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    resolved = resolve_env(FileSources(spec), env)
    files = compile_env(resolved, spec, only=["compose"]).files
    assert list(files) == [f"{env}/compose/compose.yaml"]
    data = _check_schema(files[f"{env}/compose/compose.yaml"])
    assert data["name"] == f"{resolved.stack.project}-{env}"
    # every service and model is there (a split GPU workload as several services)
    assert {s["x-hxpc"]["workload"] for s in data["services"].values()} == set(resolved.stack.workloads)


# --- what the file says --------------------------------------------------------------------------------------


def test_header_project_name_and_determinism(full: tuple[ResolvedStack, str, dict[str, Any]]) -> None:
    stack, text, data = full
    assert text.startswith(_meta(stack).header())
    assert data["name"] == "demo-default"
    assert compose.emit(stack, _meta(stack))[compose.FILE] == text
    assert compose.compose_document(stack, _meta(stack)) == compose.compose_document(stack, _meta(stack))


def test_replica_port_ranges(full: tuple[ResolvedStack, str, dict[str, Any]]) -> None:
    _, _, data = full
    web = data["services"]["web-0"]  # GPU service with replicas is split (see test_gpu_replicas_are_split)
    assert web["ports"] == ["8080:8080", "9090:9090"]
    assert data["services"]["web-2"]["ports"] == ["8082:8080", "9092:9090"]
    assert data["services"]["db"]["ports"] == ["5432:5432"]


def test_replica_port_range_without_split(tmp_path: Path) -> None:
    stack = _resolve(tmp_path, HEADER + """\
services:
  api:
    image: api:1
    ports: {http: 8080, grpc: 7000}
    replicas: 2
targets:
  compose: {}
""")
    _, data = _emit(stack)
    api = data["services"]["api"]
    assert api["ports"] == ["7000-7001:7000", "8080-8081:8080"]
    assert api["deploy"]["replicas"] == 2
    assert [r["ports"] for r in api["x-hxpc"]["replicas"]] == [{"grpc": 7000, "http": 8080},
                                                                {"grpc": 7001, "http": 8081}]


def test_depends_on_conditions(full: tuple[ResolvedStack, str, dict[str, Any]]) -> None:
    _, _, data = full
    deps = data["services"]["web-1"]["depends_on"]
    assert deps["db"] == {"condition": "service_healthy"}        # exec check
    assert deps["cache"] == {"condition": "service_healthy"}     # tcp check
    assert deps["plain"] == {"condition": "service_started"}     # no check
    assert deps["big"] == {"condition": "service_healthy"}       # models always have /health
    # a split dependency is awaited replica by replica
    assert deps["small-0"] == deps["small-1"] == {"condition": "service_healthy"}
    assert "small" not in deps


def test_dependency_scaled_to_zero_does_not_block(tmp_path: Path) -> None:
    stack = _resolve(tmp_path, HEADER + """\
services:
  off: {image: off:1, replicas: 0, health: {exec: ["true"]}, ports: {http: 80}}
  on: {image: on:1, depends_on: [off]}
targets:
  compose: {}
""")
    _, data = _emit(stack)
    assert data["services"]["on"]["depends_on"] == {"off": {"condition": "service_started", "required": False}}
    assert data["services"]["off"]["deploy"]["replicas"] == 0
    assert data["services"]["off"]["ports"] == ["80:80"]


def _gpu(service: dict[str, Any]) -> dict[str, Any]:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    return dict(devices[0])


def test_gpus_with_compose_host_are_device_ids(full: tuple[ResolvedStack, str, dict[str, Any]]) -> None:
    stack, _, data = full
    big = _gpu(data["services"]["big"])
    assert big == {"driver": "nvidia", "capabilities": ["gpu"], "device_ids": ["0", "1"]}
    # models first in spec order, then services: big 0,1; small 2 and 3; web 4, 5, 6
    assert _gpu(data["services"]["small-0"])["device_ids"] == ["2"]
    assert _gpu(data["services"]["small-1"])["device_ids"] == ["3"]
    assert [_gpu(data["services"][f"web-{i}"])["device_ids"] for i in range(3)] == [["4"], ["5"], ["6"]]
    placed = stack.placements["compose"].replicas
    assert [list(r.gpu_devices) for r in placed["web"]] == [[4], [5], [6]]
    assert "count" not in json.dumps(data["services"])
    # device ids make the container see only its GPUs, renumbered: host indices would be wrong inside
    assert all("CUDA_VISIBLE_DEVICES" not in s.get("environment", {}) for s in data["services"].values())


def test_gpu_replicas_are_split_one_service_each(full: tuple[ResolvedStack, str, dict[str, Any]]) -> None:
    _, _, data = full
    services = data["services"]
    assert "small" not in services and "web" not in services
    for name, index, port in (("small-0", 0, "8100:8000"), ("small-1", 1, "8101:8000")):
        svc = services[name]
        assert svc["deploy"]["replicas"] == 1
        assert svc["networks"] == {"default": {"aliases": ["small"]}}  # still reachable as `small`
        assert svc["x-hxpc"]["workload"] == "small"
        assert svc["x-hxpc"]["replicas"][0]["index"] == index
        assert svc["x-hxpc"]["replicas"][0]["devices"] == [2 + index]
        assert svc["ports"][0].split(":")[0] == port.split(":")[0]


def test_gpus_without_compose_host_are_a_count(tmp_path: Path) -> None:
    stack = _resolve(tmp_path, HEADER + """\
models:
  m: {source: org/m, params_b: 1, tensor_parallel: 2, replicas: 2,
      architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}}
services:
  s: {image: s:1, resources: {gpus: 1}}
targets:
  compose: {}
""")
    _, data = _emit(stack)
    assert _gpu(data["services"]["m"]) == {"driver": "nvidia", "capabilities": ["gpu"], "count": 2}
    assert data["services"]["m"]["deploy"]["replicas"] == 2
    assert _gpu(data["services"]["s"]) == {"driver": "nvidia", "capabilities": ["gpu"], "count": 1}
    assert "device_ids" not in json.dumps(data)


def test_resources_limits(full: tuple[ResolvedStack, str, dict[str, Any]]) -> None:
    _, _, data = full
    assert data["services"]["big"]["deploy"]["resources"]["limits"] == {"cpus": "8", "memory": "64g"}
    assert data["services"]["web-0"]["deploy"]["resources"]["limits"] == {"cpus": "0.5", "memory": "1536m"}
    assert "limits" not in data["services"]["cache"]["deploy"].get("resources", {})


def test_decimal_memory_is_exact_bytes(tmp_path: Path) -> None:
    stack = _resolve(tmp_path, HEADER + "services:\n  s: {image: s:1, resources: {memory: 1.5G}}\n"
                     "targets:\n  compose: {}\n")
    _, data = _emit(stack)
    # Docker reads `1500m` as 1500 MiB; 1.5G is 1.5e9 bytes
    assert data["services"]["s"]["deploy"]["resources"]["limits"]["memory"] == "1500000000b"


def test_volumes_are_named_and_keep_their_size_as_a_label(full: tuple[ResolvedStack, str, dict[str, Any]]) -> None:
    _, _, data = full
    assert data["volumes"]["db-data"] == {
        "name": "demo-default_db-data",
        "labels": {"app.kubernetes.io/managed-by": "hxpc", "hxpc.dev/project": "demo", "hxpc.dev/env": "default",
                   "hxpc.dev/target": "compose", "hxpc.dev/size": "50Gi"}}
    assert {"type": "volume", "source": "db-data", "target": "/var/lib/postgresql/data"} in \
        data["services"]["db"]["volumes"]


def test_models_get_shared_memory_weights_cache_and_local_sources(
        full: tuple[ResolvedStack, str, dict[str, Any]]) -> None:
    stack, _, data = full
    big, small = data["services"]["big"], data["services"]["small-0"]
    assert big["image"] == "vllm/vllm-openai:v0.6.3"
    assert big["command"] == list(stack.workloads["big"].args)
    assert big["command"][:2] == ["--model", "org/big-model"]
    assert "entrypoint" not in big  # the image's entrypoint is vLLM's API server
    assert big["shm_size"] == "2g"
    assert big["volumes"] == [{"type": "volume", "source": "hf_cache", "target": "/root/.cache/huggingface"}]
    assert "hf_cache" in data["volumes"]
    assert small["volumes"] == [{"type": "bind", "source": "/models/small", "target": "/models/small",
                                 "read_only": True}]


def test_secrets_are_references_never_values(full: tuple[ResolvedStack, str, dict[str, Any]]) -> None:
    _, text, data = full
    assert SECRET_VALUE not in text
    assert data["secrets"] == {"db-password": {"environment": "DEMO_DB_PASSWORD"},
                               "hf-token": {"file": "/etc/demo/hf-token"}}
    web = data["services"]["web-0"]
    assert web["secrets"] == ["db-password", "hf-token"]
    assert web["environment"]["DB_PASSWORD_FILE"] == "/run/secrets/db-password"
    assert web["environment"]["HF_TOKEN_PATH"] == "/run/secrets/hf-token"  # what huggingface_hub reads
    assert "DB_PASSWORD" not in web["environment"]
    assert web["x-hxpc"]["secrets"] == {"DB_PASSWORD": "db-password", "HF_TOKEN": "hf-token"}
    assert data["services"]["db"]["environment"] == {"POSTGRES_PASSWORD_FILE": "/run/secrets/db-password"}
    assert "secrets" not in data["services"]["cache"]


def test_an_explicit_file_variable_wins(tmp_path: Path) -> None:
    stack = _resolve(tmp_path, HEADER + """\
services:
  s:
    image: s:1
    env: {PASSWORD_FILE: /custom/path}
    secrets: {PASSWORD: db-password}
targets:
  compose: {}
""")
    _, data = _emit(stack)
    assert data["services"]["s"]["environment"] == {"PASSWORD_FILE": "/custom/path"}
    assert data["services"]["s"]["x-hxpc"]["secrets"] == {"PASSWORD": "db-password"}


def test_only_used_secrets_are_declared(tmp_path: Path) -> None:
    stack = _resolve(tmp_path, HEADER + "services:\n  s: {image: s:1}\ntargets:\n  compose: {}\n")
    _, data = _emit(stack)
    assert "secrets" not in data  # an unused `environment:` secret would make Compose demand its variable


def test_entrypoint_command_environment_and_dollar_escaping(full: tuple[ResolvedStack, str, dict[str, Any]]) -> None:
    stack, text, data = full
    plain = data["services"]["plain"]
    assert plain["entrypoint"] == ["sh", "-c"]
    assert plain["command"] == ["echo $$HOME; sleep 3600"]  # the container's shell expands $HOME, not Compose
    assert list(plain["environment"]) == ["ALPHA", "GREETING", "ZED"]
    assert plain["environment"]["GREETING"] == "cost: $$5"
    plain_as_read = compose.unescape_document(compose.compose_document(stack, _meta(stack)))["services"]["plain"]
    assert plain_as_read["command"] == ["echo $HOME; sleep 3600"]
    assert "$HOME" not in text.replace("$$HOME", "")


def test_restart_hardening_and_labels(full: tuple[ResolvedStack, str, dict[str, Any]]) -> None:
    stack, text, data = full
    services = data["services"]
    assert services["db"]["restart"] == "always"
    assert services["cache"]["restart"] == "on-failure"
    assert services["plain"]["restart"] == "no"
    assert '  restart: "no"\n' in text  # quoted: a YAML 1.1 reader would see `false`
    meta = _meta(stack)
    for name, svc in services.items():
        assert svc["cap_drop"] == ["ALL"], name
        assert svc["security_opt"] == ["no-new-privileges:true"], name
        labels = dict(svc["labels"])
        digest = labels.pop("hxpc.dev/hash")
        assert labels == {**meta.owner_labels, "hxpc.dev/target": "compose"}
        assert digest == object_hash({**svc, "labels": labels}), name


def test_hash_follows_content(tmp_path: Path) -> None:
    spec = HEADER + "services:\n  s: {image: s:1}\n  t: {image: t:1}\ntargets:\n  compose: {}\n"
    before = _emit(_resolve(tmp_path, spec))[1]["services"]
    after = _emit(_resolve(tmp_path, spec.replace("s:1", "s:2")))[1]["services"]
    assert before["s"]["labels"]["hxpc.dev/hash"] != after["s"]["labels"]["hxpc.dev/hash"]
    assert before["t"]["labels"]["hxpc.dev/hash"] == after["t"]["labels"]["hxpc.dev/hash"]


def test_health_checks(full: tuple[ResolvedStack, str, dict[str, Any]]) -> None:
    _, _, data = full
    db = data["services"]["db"]["healthcheck"]
    assert db == {"test": ["CMD", "pg_isready", "-U", "demo"], "interval": "5s", "timeout": "2s", "retries": 4,
                  "start_period": "15s"}
    assert data["services"]["cache"]["healthcheck"]["test"][0] == "CMD-SHELL"
    web = data["services"]["web-0"]["healthcheck"]
    assert web["test"][0] == "CMD-SHELL" and "http://127.0.0.1:8080/healthz" in web["test"][1]
    assert web["start_period"] == "30s"
    big = data["services"]["big"]["healthcheck"]
    assert big["test"][:2] == ["CMD", "python3"] and "http://127.0.0.1:8000/health" in big["test"]
    # a model's start period is its startup budget: weights load before /health answers
    assert big["start_period"] == "430s"
    assert "healthcheck" not in data["services"]["plain"]


def test_split_name_that_meets_a_spec_name_is_an_error(tmp_path: Path) -> None:
    stack = _resolve(tmp_path, HEADER + """\
models:
  m: {source: org/m, params_b: 1, replicas: 2,
      architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}}
services:
  m-1: {image: x:1}
targets:
  compose: {host: gpu-box}
""")
    with pytest.raises(TargetError) as info:
        compose.compose_document(stack, _meta(stack))
    [diag] = info.value.diagnostics
    assert diag.code == "HX405"
    assert "model `m`" in diag.message and "service `m-1`" in diag.message and "target compose" in diag.message
    assert diag.hint is not None and "replicas: 1" in diag.hint


def test_volume_keys_that_collide_are_an_error(tmp_path: Path) -> None:
    # `a` + volume `b-c` and `a-b` + volume `c` are both `a-b-c`: the two services would share one data volume
    stack = _resolve(tmp_path, HEADER + """\
services:
  a: {image: x:1, volumes: {b-c: {path: /data}}}
  a-b: {image: x:1, volumes: {c: {path: /data}}}
targets:
  compose: {}
""")
    with pytest.raises(TargetError) as info:
        compose.emit(stack, _meta(stack))
    [diag] = info.value.diagnostics
    assert diag.code == "HX405" and "target compose" in diag.message
    assert "service `a`" in diag.message and "service `a-b`" in diag.message and "volume `a-b-c`" in diag.message
    assert diag.hint is not None and "rename" in diag.hint


def test_a_thousand_services_compile_quickly(tmp_path: Path) -> None:
    # block style and quoted images keep the spec on ruamel's C parser, so this times the target, not the loader
    body = "".join(f"  s{i}:\n    image: 's:1'\n    ports:\n      http: {10000 + i}\n    replicas: 1\n"
                   f"    health:\n      http:\n        path: /h\n        port: http\n"
                   f"    depends_on: [{'s' + str(i - 1) if i else 'db'}]\n" for i in range(1000))
    stack = _resolve(tmp_path, HEADER + "services:\n  db:\n    image: 'db:1'\n" + body + "targets:\n  compose: {}\n")
    start = time.process_time()  # CPU time: other work on a busy machine does not make this flaky
    text = compose.emit(stack, _meta(stack))[compose.FILE]
    elapsed = time.process_time() - start
    assert elapsed < 1.0, f"compose emit of 1,001 services took {elapsed:.2f}s of CPU (about 0.15 s expected)"
    assert text.count("hxpc.dev/hash") == 1001


def test_docker_compose_accepts_the_file(full: tuple[ResolvedStack, str, dict[str, Any]], tmp_path: Path) -> None:
    docker = require_tool("docker")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
    require("`docker compose` (the v2 plugin) is not installed (.ci/install-compose.sh builds it)",
            probe.returncode == 0)
    _, text, _ = full
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    result = subprocess.run([docker, "compose", "-f", str(path), "config", "-q"], capture_output=True, text=True,
                            check=False, env={**os.environ, "DEMO_DB_PASSWORD": SECRET_VALUE})
    assert result.returncode == 0, result.stderr


# --- the health check scripts, run for real against a local server --------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health_test(tmp_path: Path, service: str, port: int) -> list[str]:
    # one workload per stack: they all listen on the test server's port, which one engine could not publish twice
    workloads = {
        "m": f"models:\n  m: {{source: org/m, params_b: 1, port: {port},\n"
             "      architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}}\n",
        "h": f"services:\n  h: {{image: h:1, ports: {{http: {port}}}, "
             "health: {http: {path: /healthz, port: http}}}\n",
        "bad": f"services:\n  bad: {{image: b:1, ports: {{http: {port}}}, "
               "health: {http: {path: /down, port: http}}}\n",
        "t": f"services:\n  t: {{image: t:1, ports: {{tcp: {port}}}, health: {{tcp: {{port: tcp}}}}}}\n",
    }
    stack = _resolve(tmp_path, HEADER + workloads[service] + "targets:\n  compose: {}\n")
    doc = compose.unescape_document(compose.compose_document(stack, _meta(stack)))
    return list(doc["services"][service]["healthcheck"]["test"])


def _run(test: list[str], tmp_path: Path, tools: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """Run a Docker health check test as Docker would, in an 'image' whose PATH has only `tools`."""
    bin_dir = tmp_path / ("bin-" + "-".join(tools or ("none",)))
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        real = sys.executable if tool == "python3" else require_tool(tool)
        link = bin_dir / tool
        if not link.exists():
            link.symlink_to(real)
    env = {"PATH": str(bin_dir)}
    if test[0] == "CMD-SHELL":
        return subprocess.run(["/bin/sh", "-c", test[1]], capture_output=True, text=True, env=env, timeout=20,
                              check=False)
    assert test[0] == "CMD"
    argv = [sys.executable if test[1] == "python3" else test[1], *test[2:]]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=20, check=False)


# every branch of the scripts is run in tests/compiler/test_probes.py; these run them as the document holds
# them (`$` escaped as `$$` for Compose, unescaped as Compose reads it) with one tool each


@pytest.mark.parametrize("tools", [("python3",), ("busybox", "timeout", "true")], ids=lambda t: t[0])
def test_http_check_passes_and_fails(tools: tuple[str, ...], server: int, tmp_path: Path) -> None:
    assert _run(_health_test(tmp_path, "h", server), tmp_path, tools).returncode == 0
    assert _run(_health_test(tmp_path, "bad", server), tmp_path, tools).returncode != 0
    assert _run(_health_test(tmp_path, "h", _closed_port()), tmp_path, tools).returncode != 0


@pytest.mark.parametrize("tools", [("bash",), ("busybox", "timeout", "true")], ids=lambda t: t[0])
def test_tcp_check_passes_and_fails(tools: tuple[str, ...], server: int, tmp_path: Path) -> None:
    assert _run(_health_test(tmp_path, "t", server), tmp_path, tools).returncode == 0
    assert _run(_health_test(tmp_path, "t", _closed_port()), tmp_path, tools).returncode != 0


def test_check_without_any_tool_fails_and_says_why(tmp_path: Path, server: int) -> None:
    result = _run(_health_test(tmp_path, "h", server), tmp_path, ())
    assert result.returncode == 1
    assert "found none of curl, wget, busybox wget, python3, bash" in result.stderr


def test_scripts_are_escaped_for_compose(tmp_path: Path) -> None:
    stack = _resolve(tmp_path, HEADER + "services:\n  t: {image: t:1, ports: {tcp: 5432}, "
                                        "health: {tcp: {port: tcp}}}\ntargets:\n  compose: {}\n")
    script = compose.compose_document(stack, _meta(stack))["services"]["t"]["healthcheck"]["test"][1]
    assert "$$T " in script and "$T" not in script.replace("$$T", "")


def test_model_check_uses_python(tmp_path: Path, server: int) -> None:
    test = _health_test(tmp_path, "m", server)
    assert test[:2] == ["CMD", "python3"]
    # the vLLM server answers /health; this stand-in answers 503 there, 200 only on /healthz
    assert _run(test, tmp_path, ()).returncode != 0
    assert _run([*test[:-2], test[-2].replace("/health", "/healthz"), test[-1]], tmp_path, ()).returncode == 0
