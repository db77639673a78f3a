"""`security` on every target that runs processes, and the kubernetes target's `model_cache`.

A service's or model's `security` block names the user and group it runs as, whether its root filesystem
is read-only, and whether it must run as root; kubernetes, compose, docker (through compose) and systemd
(container runtimes and native units) each express it, and the kubernetes Namespace enforces the Pod
Security level its pods meet. `targets.kubernetes.model_cache` keeps model weights across restarts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hxpc.compiler.bundle import Meta
from hxpc.compiler.model import ResolvedStack
from hxpc.compiler.pipeline import resolve_env
from hxpc.compiler.targets import compose, kubernetes, systemd
from hxpc.errors import SpecError
from hxpc.sources import FileSources

META = Meta("demo", "default", "demo.yaml", "0123456789abcdef")
BASE = """
apiVersion: hxpc/v1
project: demo
hosts:
  gpu: {address: local, gpus: {count: 8, model: A100-80GB, memory: 80Gi}}
services:
  web:
    image: ghcr.io/demo/web:1
    exec: [/usr/bin/web]
    ports: {http: 8080}
    hosts: [gpu]
    SECURITY
models:
  llm:
    source: org/llm
    params_b: 1.0
    architecture: {layers: 16, kv_heads: 8, head_dim: 64}
    max_model_len: 4096
    replicas: 2
    hosts: [gpu]
targets:
  TARGETS
"""


def stack(tmp_path: Path, security: str = "", targets: str = "kubernetes: {}") -> ResolvedStack:
    spec = tmp_path / "demo.yaml"
    spec.write_text(BASE.replace("SECURITY", security).replace("TARGETS", targets))
    return resolve_env(FileSources(str(spec)), "default").stack


def objects(s: ResolvedStack) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in kubernetes.kubernetes_objects(s, META)}


def pod(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj["spec"]["template"]["spec"])


def test_security_sets_the_user_on_kubernetes(tmp_path: Path) -> None:
    found = objects(stack(tmp_path, "security: {run_as_user: 10001, read_only_root_filesystem: true}"))
    web = pod(found[("Deployment", "web")])
    assert (web["securityContext"]["runAsUser"], web["securityContext"]["runAsGroup"],
            web["securityContext"]["fsGroup"], web["securityContext"]["runAsNonRoot"]) == (10001, 10001, 10001, True)
    assert web["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    llm = pod(found[("Deployment", "llm")])                   # untouched: the default user, read-only models
    assert llm["securityContext"]["runAsUser"] == 65532
    assert llm["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    labels = found[("Namespace", "demo-default")]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_running_as_root_lowers_the_namespaces_pod_security_to_baseline(tmp_path: Path) -> None:
    found = objects(stack(tmp_path, "security: {run_as_root: true, run_as_group: 7}"))
    web = pod(found[("Deployment", "web")])["securityContext"]
    assert (web["runAsUser"], web["runAsGroup"], web["runAsNonRoot"]) == (0, 7, False)
    labels = found[("Namespace", "demo-default")]["metadata"]["labels"]
    assert {labels[f"pod-security.kubernetes.io/{m}"] for m in ("enforce", "audit", "warn")} == {"baseline"}
    level, why = kubernetes.pod_security_level(stack(tmp_path, "security: {run_as_root: true}").workloads["web"],
                                               None)
    assert level == "baseline" and "security.run_as_root" in why


@pytest.mark.parametrize(("security", "message"), [
    ("security: {run_as_user: 0}", "uid 0 is root: say so with `run_as_root: true`"),
    ("security: {run_as_root: true, run_as_user: 5}", "`run_as_root: true` runs as uid 0"),
    ("security: {run_as_group: 5}", "`run_as_group` needs `run_as_user`"),
    ("security: {run_as_user: -1}", "greater than or equal to 0"),
])
def test_contradictory_security_is_refused(tmp_path: Path, security: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        stack(tmp_path, security)
    assert any(message in d.message for d in caught.value.diagnostics), caught.value.diagnostics


def test_security_reaches_compose_and_both_systemd_runtimes(tmp_path: Path) -> None:
    secure = "security: {run_as_user: 10001, run_as_group: 20002, read_only_root_filesystem: true}"
    doc = compose.compose_document(stack(tmp_path, secure, "compose: {host: gpu}"), META)
    assert (doc["services"]["web"]["user"], doc["services"]["web"]["read_only"]) == ("10001:20002", True)
    assert "user" not in doc["services"]["llm-0"]
    docker_units = systemd.emit(stack(tmp_path, secure, "systemd: {hosts: [gpu], runtime: docker}"), META)
    web = next(text for path, text in docker_units.items() if "demo-web" in path and path.endswith(".service"))
    assert "--user 10001:20002" in web and "--read-only" in web
    native = systemd.emit(stack(tmp_path, secure, "systemd: {hosts: [gpu], runtime: native}"), META)
    unit = next(text for path, text in native.items() if "demo-web" in path and path.endswith(".service"))
    assert "User=10001\nGroup=20002\n" in unit and "DynamicUser=yes" not in unit
    model = next(text for path, text in native.items() if "model-llm" in path and path.endswith(".service"))
    assert "DynamicUser=yes" in model                          # no security block: a dynamic user still


def test_a_shared_model_cache_claim(tmp_path: Path) -> None:
    found = objects(stack(tmp_path, targets="kubernetes: {model_cache: {size: 500Gi, storage_class: fast}}"))
    claim = found[("PersistentVolumeClaim", "model-cache")]
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "500Gi"}},
                             "storageClassName": "fast"}
    assert claim["metadata"]["labels"]["hxpc.dev/project"] == "demo"         # hxpc's own: kept, never pruned
    volumes = {v["name"]: v for v in pod(found[("Deployment", "llm")])["volumes"]}
    assert volumes["hf-cache"] == {"name": "hf-cache", "persistentVolumeClaim": {"claimName": "model-cache"}}
    assert found[("Deployment", "llm")]["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert "volumes" not in pod(found[("Deployment", "web")])                # services do not mount it


def test_a_claim_per_replica_makes_models_statefulsets_without_surge(tmp_path: Path) -> None:
    found = objects(stack(tmp_path, targets="kubernetes: {model_cache: {size: 200Gi, access_mode: ReadWriteOnce}}"))
    assert ("Deployment", "llm") not in found and ("PersistentVolumeClaim", "model-cache") not in found
    sts = found[("StatefulSet", "llm")]["spec"]
    assert sts["podManagementPolicy"] == "Parallel" and sts["serviceName"] == "llm-headless"
    assert ("Service", "llm-headless") in found
    [claim] = sts["volumeClaimTemplates"]
    assert (claim["metadata"]["name"], claim["spec"]["accessModes"]) == ("hf-cache", ["ReadWriteOnce"])
    assert "hf-cache" not in {v["name"] for v in sts["template"]["spec"]["volumes"]}   # from the template
    assert "hf-cache" in {m["name"] for m in sts["template"]["spec"]["containers"][0]["volumeMounts"]}


def test_a_host_path_cache_needs_privileged_pods(tmp_path: Path) -> None:
    found = objects(stack(tmp_path, targets="kubernetes: {model_cache: {host_path: /var/cache/hf}}"))
    volumes = {v["name"]: v for v in pod(found[("Deployment", "llm")])["volumes"]}
    assert volumes["hf-cache"]["hostPath"] == {"path": "/var/cache/hf", "type": "DirectoryOrCreate"}
    labels = found[("Namespace", "demo-default")]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


@pytest.mark.parametrize(("cache", "message"), [
    ("{}", "exactly one of `size` (a claim) or `host_path`"),
    ("{size: 1Gi, host_path: /x}", "exactly one of `size` (a claim) or `host_path`"),
    ("{host_path: relative}", "`host_path` must be an absolute path"),
    ("{size: 1Gi, access_mode: ReadOnlyMany}", "`ReadOnlyMany` is not allowed"),
])
def test_a_model_cache_must_say_where(tmp_path: Path, cache: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        stack(tmp_path, targets=f"kubernetes: {{model_cache: {cache}}}")
    assert any(message in d.message for d in caught.value.diagnostics), [d.message for d in caught.value.diagnostics]
