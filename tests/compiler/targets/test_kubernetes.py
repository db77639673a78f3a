"""The kubernetes target: manifests pass `kubernetes-validate --strict`, and say what the spec says."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, example_specs, require_tool

from hxpc.compiler import yamlout
from hxpc.compiler.bundle import Meta, TargetError, object_hash
from hxpc.compiler.compile import compile_env
from hxpc.compiler.model import ResolvedStack
from hxpc.compiler.pipeline import Resolved, environments, resolve_env
from hxpc.compiler.targets import kubernetes
from hxpc.errors import SpecError
from hxpc.sources import FileSources

# Validated against the oldest Kubernetes still widely run and a recent one; pinned so a new
# kubernetes-validate release cannot silently change what "valid" means here.
K8S_VERSIONS = ("1.30.0", "1.33.0")
META = Meta("demo", "test", "demo.yaml", "0123456789abcdef")
OWNER_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/part-of",
                "app.kubernetes.io/managed-by", "hxpc.dev/project", "hxpc.dev/env")

# A spec with every shape the target has to handle: a GPU model with replicas (PDB), a stateful
# service (StatefulSet), http/tcp/exec probes, secrets, env, an entrypoint override and a
# service that clears the entrypoint.
FULL = """
apiVersion: hxpc/v1
project: demo
hosts:
  gpu-a: {cpu: 64, memory: 512Gi, gpus: {count: 8, model: H100-80GB, memory: 80Gi}}
  cpu-a: {cpu: 16, memory: 64Gi}
secrets:
  db-password: {env: DEMO_DB_PASSWORD}
  hf-token: {file: /run/secrets/hf-token}
models:
  chat:
    source: org/chat-13b
    params_b: 13
    architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}
    tensor_parallel: 2
    replicas: 2
    port: 8000
    secrets: {HF_TOKEN: hf-token}
    env: {VLLM_LOGGING_LEVEL: INFO}
    resources: {cpu: 8, memory: 64Gi}
    hosts: [gpu-a]
services:
  db:
    image: postgres:16.4
    ports: {pg: 5432}
    env: {POSTGRES_USER: demo, PGDATA: /var/lib/postgresql/data/pgdata}
    secrets: {POSTGRES_PASSWORD: db-password}
    resources: {cpu: 500m, memory: 1Gi}
    health: {exec: [pg_isready, -U, demo], interval: 10s, timeout: 5s, retries: 5, start_period: 20s}
    volumes: {data: {path: /var/lib/postgresql/data, size: 5Gi}, wal: {path: /wal, size: 1Gi}}
  cache:
    image: redis:7.4
    command: [redis-server]
    args: [--save, "", --appendonly, "no"]
    ports: {redis: 6379}
    health: {tcp: {port: redis}, interval: 5s}
  web:
    image: ghcr.io/demo/web:1.0
    ports: {http: 8080, admin: 9090}
    env: {ENABLED: "yes", PORT: 8080}
    secrets: {DB_PASSWORD: db-password}
    replicas: 3
    depends_on: [db, cache, chat]
    health: {http: {path: /healthz, port: http}, interval: 15s, timeout: 2s, retries: 4, start_period: 2m}
    metrics: {port: admin}
  worker:
    image: ghcr.io/demo/worker:1.0
    command: []
    args: [/bin/worker, --once]
    replicas: 0
  trainer:
    image: ghcr.io/demo/trainer:1.0
    resources: {gpus: 1}
    hosts: [gpu-a]
targets:
  kubernetes: {}
"""


def _resolve(tmp_path: Path, text: str, env: str = "test") -> Resolved:
    spec = tmp_path / "demo.yaml"
    spec.write_text(text if "environments:" in text else text + f"environments: {{{env}: {{}}}}\n")
    return resolve_env(FileSources(str(spec)), env)


def _stack(tmp_path: Path, text: str = FULL) -> ResolvedStack:
    return _resolve(tmp_path, text).stack


def _by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = _pod(obj)["containers"][0]
    return container


def _validate(files: dict[str, str], where: Path) -> None:
    """Run the real validator on the files as written; any error or warning fails."""
    tool = require_tool("kubernetes-validate")
    paths = []
    for rel, text in files.items():
        path = where / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(str(path))
    flags = [arg for version in K8S_VERSIONS for arg in ("-k", version)]
    done = subprocess.run([tool, "--strict", "--quiet", *flags, *paths], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # a kind or apiVersion the validator has no schema for is only a WARN with exit 0
    assert "WARN" not in done.stdout and "ERROR" not in done.stdout, done.stdout


def _kubernetes_envs() -> list[tuple[Path, str]]:
    """Every (example spec, environment) that compiles to kubernetes."""
    cases = []
    for spec in example_specs():
        sources = FileSources(str(spec))
        for env in environments(sources):
            if resolve_env(sources, env).stack.spec.targets.kubernetes is not None:
                cases.append((spec, env))
    return cases


# -- validity ---------------------------------------------------------------------------------------


def test_validator_rejects_what_kubernetes_rejects(tmp_path: Path) -> None:
    """The harness is not a no-op: a typo'd field and a wrong type both fail --strict."""
    require_tool("kubernetes-validate")
    bad = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "x", "labelz": {}}, "data": {}}
    with pytest.raises(AssertionError):
        _validate({"bad.yaml": yamlout.dump(bad)}, tmp_path)
    wrong = {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "x"}, "spec": {"ports": [{"port": "x"}]}}
    with pytest.raises(AssertionError):
        _validate({"wrong.yaml": yamlout.dump(wrong)}, tmp_path)


@pytest.mark.parametrize(("spec", "env"), _kubernetes_envs(), ids=lambda v: v.stem if isinstance(v, Path) else v)
def test_example_envs_validate(spec: Path, env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    rel = spec.relative_to(REPO).as_posix()
    resolved = resolve_env(FileSources(rel), env)
    files = compile_env(resolved, rel, only=["kubernetes"]).files
    expected = {f"{env}/kubernetes/{name}.yaml" for name in [*resolved.stack.workloads, "namespace"]}
    assert set(files) == expected
    _validate(files, tmp_path)


def test_constructed_spec_validates(tmp_path: Path) -> None:
    files = kubernetes.emit(_stack(tmp_path), META)
    assert sorted(files) == ["cache.yaml", "chat.yaml", "db.yaml", "namespace.yaml", "trainer.yaml",
                             "web.yaml", "worker.yaml"]
    for text in files.values():
        assert text.startswith(META.header())
    _validate(files, tmp_path / "out")


# -- names, labels, hashes --------------------------------------------------------------------------


def test_objects_names_and_order(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    objects = kubernetes.kubernetes_objects(stack, META)
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert keys[0] == ("Namespace", "demo-test")  # default namespace: <project>-<env>
    assert keys[1:] == [
        ("Service", "cache"), ("Deployment", "cache"),
        ("ConfigMap", "chat-env"), ("Service", "chat"), ("Deployment", "chat"), ("PodDisruptionBudget", "chat"),
        ("ConfigMap", "db-env"), ("Service", "db"), ("Service", "db-headless"), ("StatefulSet", "db"),
        ("Deployment", "trainer"),
        ("Deployment", "worker"),
        ("ConfigMap", "web-env"), ("Service", "web"), ("Deployment", "web"), ("PodDisruptionBudget", "web"),
    ]
    assert all(o["metadata"]["namespace"] == "demo-test" for o in objects[1:])
    assert "namespace" not in objects[0]["metadata"]


def test_namespace_from_target(tmp_path: Path) -> None:
    stack = _stack(tmp_path, FULL.replace("kubernetes: {}", "kubernetes: {namespace: demo-ns}"))
    objects = kubernetes.kubernetes_objects(stack, META)
    assert objects[0]["metadata"]["name"] == "demo-ns"
    assert {o["metadata"].get("namespace", "demo-ns") for o in objects} == {"demo-ns"}


def test_labels_and_hash_on_every_object(tmp_path: Path) -> None:
    for obj in kubernetes.kubernetes_objects(_stack(tmp_path), META):
        meta = obj["metadata"]
        labels = meta["labels"]
        assert set(OWNER_LABELS) <= set(labels), obj["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "hxpc"
        assert (labels["hxpc.dev/project"], labels["hxpc.dev/env"]) == ("demo", "test")
        assert labels["app.kubernetes.io/part-of"] == "demo"
        assert all(len(v) <= 63 and re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", v)
                   for v in labels.values())
        unhashed = {**obj, "metadata": {**meta, "annotations": {
            k: v for k, v in meta["annotations"].items() if k != "hxpc.dev/hash"}}}
        assert meta["annotations"]["hxpc.dev/hash"] == object_hash(unhashed)
        if obj["kind"] in ("Deployment", "StatefulSet"):
            template_labels = obj["spec"]["template"]["metadata"]["labels"]
            # pods are not hxpc's objects: no ownership marker, so nothing prunes or adopts them by label
            assert not {"app.kubernetes.io/managed-by", "hxpc.dev/project", "hxpc.dev/env"} & set(template_labels)
            assert template_labels["app.kubernetes.io/part-of"] == "demo"
            selector = obj["spec"]["selector"]["matchLabels"]
            assert selector.items() <= template_labels.items()
            assert selector["app.kubernetes.io/name"] == meta["name"]


def test_hash_changes_with_content_only(tmp_path: Path) -> None:
    before = _by_key(kubernetes.kubernetes_objects(_stack(tmp_path), META))
    after = _by_key(kubernetes.kubernetes_objects(
        _stack(tmp_path, FULL.replace("image: redis:7.4", "image: redis:7.4.1")), META))
    changed = {k for k in before if before[k]["metadata"]["annotations"] != after[k]["metadata"]["annotations"]}
    assert changed == {("Deployment", "cache")}


def test_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert kubernetes.emit(_stack(tmp_path), META) == kubernetes.emit(_stack(tmp_path), META)
    monkeypatch.chdir(REPO)

    def compiled() -> dict[str, str]:
        return compile_env(resolve_env(FileSources("specs/hxp.yaml"), "prod"), "specs/hxp.yaml",
                           only=["kubernetes"]).files

    assert compiled() == compiled()


def test_example_prod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    resolved = resolve_env(FileSources("specs/hxp.yaml"), "prod")
    meta = Meta("hxp", "prod", "specs/hxp.yaml", "x")
    objects = _by_key(kubernetes.kubernetes_objects(resolved.stack, meta))
    assert objects[("Namespace", "hxp")]["metadata"]["labels"]["hxpc.dev/env"] == "prod"
    assert {k for k in objects if k[0] in ("Deployment", "StatefulSet")} == {
        ("Deployment", "llama-70b"), ("Deployment", "mixtral-8x7b"), ("Deployment", "llama-8b"),
        ("StatefulSet", "postgres"), ("StatefulSet", "qdrant"), ("Deployment", "redis"),
        ("Deployment", "api-gateway")}
    assert objects[("Deployment", "api-gateway")]["spec"]["replicas"] == 3
    assert {k[1] for k in objects if k[0] == "PodDisruptionBudget"} == {"api-gateway", "llama-8b"}
    llama = objects[("Deployment", "llama-70b")]
    assert _container(llama)["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert _pod(llama)["nodeSelector"] == {"nvidia.com/gpu.product": "A100-80GB"}
    startup = _container(llama)["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 300 + 706  # 5 min + 10 s per 70.6B params
    volumes = objects[("StatefulSet", "postgres")]["spec"]["volumeClaimTemplates"]
    assert volumes[0]["spec"]["resources"]["requests"]["storage"] == "500Gi"  # the prod overlay's size
    staging = resolve_env(FileSources("specs/hxp.yaml"), "staging").stack
    assert kubernetes.namespace_of(staging) == "hxp-staging"


# -- workloads --------------------------------------------------------------------------------------


def test_env_configmap_and_secret_refs_never_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_value = "s3cr3t-value-that-must-not-leak"
    monkeypatch.setenv("DEMO_DB_PASSWORD", secret_value)
    stack = _stack(tmp_path)
    files = kubernetes.emit(stack, META)
    assert not any(secret_value in text for text in files.values())
    objects = _by_key(kubernetes.kubernetes_objects(stack, META))
    assert not any(kind == "Secret" for kind, _ in objects)  # apply creates Secrets; manifests never hold them
    assert objects[("ConfigMap", "web-env")]["data"] == {"ENABLED": "yes", "PORT": "8080"}
    web = _container(objects[("Deployment", "web")])
    assert web["envFrom"] == [{"configMapRef": {"name": "web-env"}}]
    assert web["env"] == [{"name": "DB_PASSWORD",
                           "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "value"}}}]
    chat = _container(objects[("Deployment", "chat")])
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "value"}}} in chat["env"]
    # the pod template changes (and pods roll) when the ConfigMap does
    template = objects[("Deployment", "web")]["spec"]["template"]["metadata"]["annotations"]
    assert template["hxpc.dev/config-hash"] == objects[("ConfigMap", "web-env")]["metadata"]["annotations"][
        "hxpc.dev/hash"]
    assert 'ENABLED: "yes"' in files["web.yaml"]  # a YAML 1.1 reader must not see a boolean


def test_services_ports_by_name(tmp_path: Path) -> None:
    objects = _by_key(kubernetes.kubernetes_objects(_stack(tmp_path), META))
    svc = objects[("Service", "web")]["spec"]
    assert svc["type"] == "ClusterIP"
    assert svc["ports"] == [{"name": "http", "port": 8080, "targetPort": "http"},
                            {"name": "admin", "port": 9090, "targetPort": "admin"}]
    assert _container(objects[("Deployment", "web")])["ports"] == [
        {"name": "http", "containerPort": 8080}, {"name": "admin", "containerPort": 9090}]
    assert ("Service", "worker") not in objects and ("Service", "trainer") not in objects  # no ports, no Service
    assert _container(objects[("Deployment", "cache")])["command"] == ["redis-server"]
    assert _container(objects[("Deployment", "cache")])["args"] == ["--save", "", "--appendonly", "no"]
    # `command: []` clears the entrypoint: the first arg becomes the command
    worker = _container(objects[("Deployment", "worker")])
    assert (worker["command"], worker["args"]) == (["/bin/worker"], ["--once"])
    assert objects[("Deployment", "worker")]["spec"]["replicas"] == 0


def test_volumes_make_a_statefulset(tmp_path: Path) -> None:
    objects = _by_key(kubernetes.kubernetes_objects(_stack(tmp_path), META))
    assert ("Deployment", "db") not in objects
    sts = objects[("StatefulSet", "db")]["spec"]
    assert sts["serviceName"] == "db-headless"
    headless = objects[("Service", "db-headless")]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["selector"] == sts["selector"]["matchLabels"]
    claims = {c["metadata"]["name"]: c["spec"] for c in sts["volumeClaimTemplates"]}
    assert claims == {"data": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}},
                      "wal": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    assert all((c["apiVersion"], c["kind"]) == ("v1", "PersistentVolumeClaim") for c in sts["volumeClaimTemplates"])
    assert not any("hxpc.dev/project" in c["metadata"]["labels"] for c in sts["volumeClaimTemplates"])
    mounts = {m["name"]: m["mountPath"] for m in _container(objects[("StatefulSet", "db")])["volumeMounts"]}
    assert mounts == {"data": "/var/lib/postgresql/data", "wal": "/wal"}


def test_pdb_only_with_more_than_one_replica(tmp_path: Path) -> None:
    objects = _by_key(kubernetes.kubernetes_objects(_stack(tmp_path), META))
    pdbs = {name: o for (kind, name), o in objects.items() if kind == "PodDisruptionBudget"}
    assert set(pdbs) == {"chat", "web"}
    for name, pdb in pdbs.items():
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"] == objects[("Deployment", name)]["spec"]["selector"][
            "matchLabels"]


def test_resources_requests_equal_limits(tmp_path: Path) -> None:
    objects = _by_key(kubernetes.kubernetes_objects(_stack(tmp_path), META))
    db = _container(objects[("StatefulSet", "db")])["resources"]
    assert db == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "500m", "memory": "1Gi"}}
    assert "resources" not in _container(objects[("Deployment", "web")])


def test_gpu_model(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    objects = _by_key(kubernetes.kubernetes_objects(stack, META))
    chat = objects[("Deployment", "chat")]
    container, pod = _container(chat), _pod(chat)
    assert container["image"] == stack.workloads["chat"].image
    assert container["args"] == list(stack.workloads["chat"].args)
    assert "command" not in container  # the vLLM image's own entrypoint runs the args
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"}
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000}]
    # its (first) host's GPU model names the product
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100-80GB"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/dev/shm": "dshm", "/tmp": "tmp", "/var/cache/huggingface": "hf-cache"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HF_HOME"] == "/var/cache/huggingface" and env["HOME"] == "/tmp"
    # a surge pod would wait forever for a GPU the budget does not have
    assert chat["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert chat["spec"]["progressDeadlineSeconds"] >= stack.workloads["chat"].startup_budget_s
    # a GPU service gets the same treatment; CPU-only pods neither
    trainer = objects[("Deployment", "trainer")]
    assert _container(trainer)["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert _pod(trainer)["nodeSelector"] == {"nvidia.com/gpu.product": "H100-80GB"}
    assert "tolerations" not in _pod(objects[("Deployment", "web")])
    assert "nodeSelector" not in _pod(objects[("Deployment", "web")])


def test_gpu_resource_and_node_selector_override(tmp_path: Path) -> None:
    text = FULL.replace("kubernetes: {}", "kubernetes: {gpu_resource: amd.com/gpu, node_selector: {pool: gpu}}")
    objects = _by_key(kubernetes.kubernetes_objects(_stack(tmp_path, text), META))
    chat = objects[("Deployment", "chat")]
    assert _container(chat)["resources"]["limits"]["amd.com/gpu"] == "2"
    assert _pod(chat)["nodeSelector"] == {"pool": "gpu"}
    off = FULL.replace("kubernetes: {}", "kubernetes: {node_selector: {}}")
    assert "nodeSelector" not in _pod(_by_key(kubernetes.kubernetes_objects(_stack(tmp_path, off), META))[
        ("Deployment", "chat")])


def test_probes_cover_the_startup_budget(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    objects = _by_key(kubernetes.kubernetes_objects(stack, META))
    handlers = {}
    for (kind, name), obj in objects.items():
        if kind not in ("Deployment", "StatefulSet"):
            continue
        container, w = _container(obj), stack.workloads[name]
        if w.probe is None:
            assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(container)
            continue
        startup = container["startupProbe"]
        assert startup["failureThreshold"] * startup["periodSeconds"] >= w.startup_budget_s
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["failureThreshold"] == w.probe.retries
            assert container[probe]["periodSeconds"] == math.ceil(w.probe.interval_ms / 1000)
            assert container[probe]["timeoutSeconds"] == math.ceil(w.probe.timeout_ms / 1000)
        handlers[name] = {k: v for k, v in startup.items() if k in ("httpGet", "tcpSocket", "exec")}
    assert handlers == {
        "chat": {"httpGet": {"path": "/health", "port": "http"}},
        "db": {"exec": {"command": ["pg_isready", "-U", "demo"]}},
        "cache": {"tcpSocket": {"port": "redis"}},
        "web": {"httpGet": {"path": "/healthz", "port": "http"}},
    }
    # web: 2m start period + 4 x 15s retries = 180 s, checked every 15 s
    assert objects[("Deployment", "web")]["spec"]["template"]["spec"]["containers"][0]["startupProbe"][
        "failureThreshold"] == 12


def test_restricted_security_everywhere(tmp_path: Path) -> None:
    objects = kubernetes.kubernetes_objects(_stack(tmp_path), META)
    ns_labels = objects[0]["metadata"]["labels"]
    assert ns_labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = _pod(obj)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
        for volume in pod.get("volumes", []):
            assert set(volume) <= {"name", "emptyDir"}  # no hostPath: the restricted profile forbids it
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            is_model = obj["metadata"]["name"] == "chat"
            assert sc["readOnlyRootFilesystem"] is is_model


def test_metrics_and_dependencies_are_kept(tmp_path: Path) -> None:
    objects = _by_key(kubernetes.kubernetes_objects(_stack(tmp_path), META))
    web = objects[("Deployment", "web")]
    assert web["metadata"]["annotations"]["hxpc.dev/depends-on"] == "db,cache,chat"
    pod_annotations = web["spec"]["template"]["metadata"]["annotations"]
    assert (pod_annotations["prometheus.io/port"], pod_annotations["prometheus.io/path"]) == ("9090", "/metrics")


# -- lossless or loud -------------------------------------------------------------------------------


def _problems(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    with pytest.raises(TargetError) as caught:
        kubernetes.kubernetes_objects(_stack(tmp_path, text), META)
    return [(d.code, d.message) for d in caught.value.diagnostics]


def test_restart_never_is_an_error(tmp_path: Path) -> None:
    text = FULL.replace("    image: redis:7.4\n", "    image: redis:7.4\n    restart: never\n")
    problems = _problems(tmp_path, text)
    assert len(problems) == 1
    code, message = problems[0]
    assert code == "HX401" and "(field `services.cache.restart`, target kubernetes)" in message
    # compile reports it as a spec error, with every other target's problems
    with pytest.raises(SpecError) as caught:
        compile_env(_resolve(tmp_path, text), "demo.yaml", only=["kubernetes"])
    assert [d.code for d in caught.value.diagnostics] == ["HX401"]


@pytest.mark.parametrize("restart", ["always", "on-failure"])
def test_restart_always_and_on_failure_map_to_deployments(tmp_path: Path, restart: str) -> None:
    text = FULL.replace("    image: redis:7.4\n", f"    image: redis:7.4\n    restart: {restart}\n")
    objects = _by_key(kubernetes.kubernetes_objects(_stack(tmp_path, text), META))
    assert _pod(objects[("Deployment", "cache")]).get("restartPolicy", "Always") == "Always"


@pytest.mark.parametrize(("old", "new", "code", "words"), [
    ("admin: 9090}", "admin: 9090, grpc-streaming-api: 9091}", "HX404", "port `grpc-streaming-api`"),
    ("  cache:\n", "  9cache:\n", "HX404", "start with a letter"),
    ("wal: {path: /wal, size: 1Gi}", "wal: {path: /wal}", "HX403", "volume `wal`"),
    ("kubernetes: {}", "kubernetes: {namespace: kube-system}", "HX404", "kube-system"),
    ("kubernetes: {}", "kubernetes: {gpu_resource: gpu}", "HX404", "gpu_resource"),
    ("  worker:\n", "  namespace:\n", "HX404", "namespace.yaml"),
    ("  worker:\n    image: ghcr.io/demo/worker:1.0\n    command: []\n    args: [/bin/worker, --once]\n",
     "  worker:\n    image: ghcr.io/demo/worker:1.0\n    command: []\n", "HX401", "command: []"),
])
def test_what_kubernetes_cannot_take_is_loud(tmp_path: Path, old: str, new: str, code: str, words: str) -> None:
    assert old in FULL
    text = FULL.replace(old, new).replace("depends_on: [db, cache, chat]", "depends_on: [db]")
    problems = _problems(tmp_path, text)
    assert any(c == code and words in m for c, m in problems), problems


def test_headless_service_name_clash_is_loud(tmp_path: Path) -> None:
    text = FULL.replace("  worker:\n", "  db-headless:\n    image: x:1\n    ports: {http: 80}\n  worker:\n")
    assert any("Service `db-headless`" in m for _, m in _problems(tmp_path, text))


# -- scale ------------------------------------------------------------------------------------------


def test_a_thousand_services_compile(tmp_path: Path) -> None:
    """Scale, not speed: bench/compile.py measures time beside kustomize; a timed test only measures the load."""
    services = "".join(
        f"  svc-{i}:\n    image: ghcr.io/demo/svc:{i}\n    ports: {{http: {10000 + i}}}\n    env: {{N: \"{i}\"}}\n"
        f"    replicas: 2\n    health: {{http: {{path: /h, port: http}}}}\n"
        for i in range(1000))
    stack = _stack(tmp_path, f"apiVersion: hxpc/v1\nproject: big\nservices:\n{services}targets:\n  kubernetes: {{}}\n")
    files = kubernetes.emit(stack, META)
    assert len(files) == 1001


def test_dollar_parens_in_args_stay_literal(tmp_path: Path) -> None:
    """The kubelet expands `$(VAR)` in command and args; the spec means the text, as on the other targets."""
    spec = tmp_path / "s.yaml"
    spec.write_text("apiVersion: hxpc/v1\nproject: demo\nservices:\n  web:\n    image: web:1\n"
                    "    command: [/bin/sh, -c]\n    args: ['echo $(HOME) $HOME']\n"
                    "    secrets: {TOKEN: tok}\nsecrets:\n  tok: {env: DEMO_TOKEN}\ntargets: {kubernetes: {}}\n")
    objects = kubernetes.kubernetes_objects(resolve_env(FileSources(str(spec)), "default").stack, META)
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["echo $$(HOME) $HOME"]
    assert container["command"] == ["/bin/sh", "-c"]
