"""A real Kubernetes control plane on 127.0.0.1 for the server-side tests.

This module owns starting and stopping that control plane: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler (Kubernetes v1.37.2) and kwok, which plays the
kubelet for fake nodes so that pods become Running/Ready without containers. The binaries
are built once per machine by `.ci/install-kube.sh` into a cache (`HXPC_KUBE_CACHE`,
default /var/cache/hxpc-test/kube-v1.37.2); `binaries()` finds them and `start_cluster()`
runs them as subprocesses of the test process, on free ports, with their logs in the
cluster's work directory. `Cluster` adds the helpers tests need on top: fake GPU nodes,
hostPath PersistentVolumes, a kubeconfig (context `hxpc-test`), a Python API client and
kubectl. Nothing here is a pytest fixture; conftest.py files build theirs from
`session_cluster()` or `start_cluster()`.

    cluster = kubecluster.start_cluster(tmp_path)
    cluster.add_nodes(2, gpus=8, labels={"nvidia.com/gpu.product": "A100-80GB"})
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    ...
    cluster.stop()
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import http.client
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import kubernetes.client
    import pytest

KUBE_VERSION = "v1.37.2"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# kwok stages (copied from its module by install-kube.sh): nodes become Ready at once and keep
# a heartbeat; pods on them become Running/Ready at once and are removed when deleted.
STAGES = ("node-fast", "node-heartbeat", "pod-fast")
INSTALL_HINT = "run `bash .ci/install-kube.sh`"
CONTEXT = "hxpc-test"
# Nodes whose annotations match are kwok's; any other node would be left alone.
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# TaintNodesByCondition admission puts this on every new node; without a kubelet nothing takes
# it off again (add_nodes does, once kwok reports the node Ready).
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
SERVICE_CIDR = "10.96.0.0/16"  # a /16: a /24 runs out after ~250 Services
STOP_GRACE_SECONDS = 5.0

# The controllers that turn objects into the state a real cluster would reach. Deliberately
# absent: node-lifecycle (a late kwok heartbeat on a busy 2-core machine would mark nodes
# NotReady and evict pods; add_nodes clears the not-ready taint instead), nodeipam, cloud
# and CSI/attach-detach controllers (nothing to talk to), HPA (no metrics API).
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "disruption-controller",
    "endpointslice-controller",
    "endpoints-controller",
    # ServiceAccount admission rejects pods until their namespace has its `default` account.
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "persistentvolume-binder-controller",
    # StorageObjectInUseProtection admission adds finalizers that only these remove: without
    # them deleting a PVC (or a namespace holding one) never finishes.
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    # ResourceQuota admission refuses pods under a quota whose usage nobody computed.
    "resourcequota-controller",
    "pod-garbage-collector-controller",
    "ephemeral-volume-controller",  # generic ephemeral volumes are PVCs it creates
    "clusterrole-aggregation-controller",  # fills admin/edit/view, which RoleBindings name
    "service-cidr-controller",
)

T = TypeVar("T")


class ClusterError(RuntimeError):
    """A component failed to start or the cluster did not reach the expected state in time."""


class ComponentExited(ClusterError):
    """A component's process ended while the cluster was expected to run (the message has its log's end)."""


def cache_dir() -> Path:
    """Where install-kube.sh puts the binaries: `HXPC_KUBE_CACHE` or the per-machine default."""
    return Path(os.environ.get("HXPC_KUBE_CACHE") or f"/var/cache/hxpc-test/kube-{KUBE_VERSION}")


def binaries() -> Path | None:
    """The cache's bin directory when every binary and kwok stage is in place, else None."""
    cache = cache_dir()
    if all(os.access(cache / "bin" / name, os.X_OK) for name in BINARIES) and all(
        (cache / "stage" / f"{name}.yaml").is_file() for name in STAGES
    ):
        return cache / "bin"
    return None


def require_binaries() -> Path:
    """The bin directory; in CI missing binaries fail the test, elsewhere they skip it (as conftest's require_tool)."""
    from conftest import require

    found = binaries()
    require(f"the Kubernetes test binaries are not in {cache_dir()}: {INSTALL_HINT}", found is not None)
    assert found is not None
    return found


def _transient_errors() -> tuple[type[BaseException], ...]:
    """What a probe may raise while the cluster catches up: API errors (404 before a controller acts, 409/422
    on a stale resourceVersion), refused or reset connections. Anything else is a bug and propagates."""
    errors: list[type[BaseException]] = [OSError, urllib.error.URLError, subprocess.CalledProcessError]
    with contextlib.suppress(ImportError):
        import urllib3.exceptions
        from kubernetes.client.exceptions import ApiException

        errors += [ApiException, urllib3.exceptions.HTTPError]
    return tuple(errors)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `check` until it returns something other than None/False; ClusterError naming `what` after `timeout` s.

    API and connection errors from `check` count as "not yet" and the last one is part of
    the timeout's message; anything else (a ComponentExited, a bug in `check`) propagates.
    """
    transient = _transient_errors()
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
        except transient as error:
            last_error = error
        else:
            if result is not None and result is not False:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def _free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (all sockets held open until every port is chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the process that started it dies.

    atexit does not run when pytest itself is SIGKILLed (a CI timeout, an impatient ^C^C);
    the kernel's parent-death signal covers that case, so no etcd or apiserver outlives it.
    """
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _write_service_account_key(path: Path) -> None:
    """An EC private key in PEM for signing (and verifying) service-account tokens."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(path)],
                       check=True, capture_output=True)
        return
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))


@dataclass
class _Component:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass(eq=False)
class Cluster:
    """A running control plane: its work directory, endpoints, credentials and processes."""

    workdir: Path
    bin_dir: Path
    kubeconfig: Path
    server: str
    token: str
    ca_file: Path
    components: list[_Component] = field(default_factory=list)
    _node_count: int = 0
    _pv_count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # --- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        return [component.process.pid for component in self.components]

    def _start(self, name: str, args: Sequence[str]) -> _Component:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # Go honours proxy variables; the control plane only ever talks to 127.0.0.1.
        env["NO_PROXY"] = env["no_proxy"] = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1,localhost"]))
        env.pop("KUBECONFIG", None)
        with log.open("ab") as out:
            process = subprocess.Popen(
                [str(self.bin_dir / name), *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                # Its own session: a ^C in the terminal reaches pytest, whose teardown then stops
                # the components in order, instead of killing them under a still-running test.
                start_new_session=True,
                # The parent-death signal is per *thread*: only safe from the main thread.
                preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
            )
        component = _Component(name, process, log)
        self.components.append(component)
        return component

    def _check_alive(self, component: _Component) -> None:
        code = component.process.poll()
        if code is not None:
            raise ComponentExited(f"{component.name} exited with code {code}; the end of {component.log}:\n"
                               f"{_log_tail(component.log)}")

    def _wait_healthy(self, component: _Component, url: str, timeout: float = 60.0) -> None:
        """Poll an HTTP(S) health endpoint of `component`, failing fast (with its log) if the process dies."""
        context = ssl.create_default_context()
        # Probes only: components serve self-signed certificates the kubeconfig's CA does not cover.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})

        def healthy() -> bool:
            self._check_alive(component)
            try:
                with urllib.request.urlopen(request, timeout=2, context=context) as response:
                    return bool(response.status == 200)
            except (OSError, http.client.HTTPException):  # not listening yet, or not ready (HTTPError)
                return False

        try:
            wait_for(healthy, timeout, f"{component.name} at {url}", interval=0.1)
        except ComponentExited:
            raise
        except ClusterError as error:  # alive but never healthy: its log says why
            raise ClusterError(f"{error}; the end of {component.log}:\n{_log_tail(component.log)}") from None

    def stop(self) -> None:
        """Stop every component, last started first: SIGTERM, SIGKILL after a few seconds, reap. Idempotent.

        One at a time on purpose: the apiserver shuts down in about a second while etcd is
        still there, but hangs out its whole grace period when etcd went first.
        """
        for component in reversed(self.components):
            if component.process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(component.process.pid, signal.SIGTERM)
            try:
                component.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(component.process.pid, signal.SIGKILL)
                component.process.wait()
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)

    # --- clients ---------------------------------------------------------------------------

    def api_client(self) -> kubernetes.client.ApiClient:
        """A fresh `kubernetes.client.ApiClient` for this cluster (the kubeconfig's `hxpc-test` context)."""
        import kubernetes.config

        client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(
            config_file=str(self.kubeconfig), context=CONTEXT)
        return client

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (text in, text out); raises CalledProcessError when `check` and it fails."""
        return subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], input=input, text=True,
                              capture_output=True, check=check, timeout=timeout)

    # --- objects tests need ------------------------------------------------------------------

    def create_namespace(self, name: str, timeout: float = 30) -> None:
        """Create a namespace and wait for its `default` ServiceAccount (pods are refused until it exists)."""
        import kubernetes.client

        core = kubernetes.client.CoreV1Api(self.api_client())
        core.create_namespace({"metadata": {"name": name}})
        wait_for(lambda: core.read_namespaced_service_account("default", name), timeout,
                 f"the default ServiceAccount of namespace {name}")

    def add_nodes(self, n: int, gpus: int = 8, labels: Mapping[str, str] | None = None, cpu: str = "64",
                  memory: str = "512Gi", name_prefix: str = "gpu-", pods: int = 110,
                  taints: Iterable[Mapping[str, str]] = (), timeout: float = 60) -> list[str]:
        """Create `n` kwok fake nodes with `gpus` nvidia.com/gpu each, wait until they are Ready and schedulable.

        `labels` come on top of the usual kubernetes.io/hostname, os and arch labels; `taints`
        ({"key", "value", "effect"}) are kept, only the not-ready taint is cleared. Returns the
        node names (`name_prefix` + a number, unique within the cluster).
        """
        import kubernetes.client

        core = kubernetes.client.CoreV1Api(self.api_client())
        resources = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "1Ti"}
        if gpus:
            resources["nvidia.com/gpu"] = str(gpus)
        with self._lock:
            first, self._node_count = self._node_count, self._node_count + n
        names = [f"{name_prefix}{index}" for index in range(first, first + n)]
        for name in names:
            core.create_node({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1]},
                    "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                               "kubernetes.io/arch": "amd64", "type": "kwok", **(labels or {})},
                },
                "spec": {"taints": [dict(taint) for taint in taints]},
                # Created with its status, as a kubelet registers; kwok's node-initialize stage keeps
                # capacity and allocatable and adds the conditions.
                "status": {"capacity": resources, "allocatable": resources},
            })

        def ready(name: str) -> bool:
            node = core.read_node(name)
            conditions = {c.type: c.status for c in node.status.conditions or []}
            if conditions.get("Ready") != "True":
                return False
            taints_now = node.spec.taints or []
            if any(t.key == NOT_READY_TAINT for t in taints_now):
                kept = [core.api_client.sanitize_for_serialization(t) for t in taints_now if t.key != NOT_READY_TAINT]
                # A strategic merge patch cannot drop one taint by key, so replace the list; the
                # resourceVersion test makes a concurrent change (kwok's heartbeat) fail and retry.
                core.patch_node(name, [
                    {"op": "test", "path": "/metadata/resourceVersion", "value": node.metadata.resource_version},
                    {"op": "replace", "path": "/spec/taints", "value": kept},
                ])
                return False
            return True

        for name in names:
            wait_for(functools.partial(ready, name), timeout, f"node {name} to become Ready and lose its taint")
        return names

    def add_persistent_volumes(self, n: int, size: str = "10Gi", storage_class: str = "",
                               access_modes: Sequence[str] = ("ReadWriteOnce",),
                               name_prefix: str = "pv-") -> list[str]:
        """Create `n` hostPath PersistentVolumes for PVCs to bind to (class "" matches claims naming no class)."""
        import kubernetes.client

        core = kubernetes.client.CoreV1Api(self.api_client())
        with self._lock:
            first, self._pv_count = self._pv_count, self._pv_count + n
        names = [f"{name_prefix}{index}" for index in range(first, first + n)]
        for name in names:
            core.create_persistent_volume({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": list(access_modes),
                    "storageClassName": storage_class,
                    # Delete would need a recycler/deleter plugin; Retain keeps released PVs inert.
                    "persistentVolumeReclaimPolicy": "Retain",
                    # Never mounted (kwok runs no containers): the path only has to be valid.
                    "hostPath": {"path": f"/tmp/hxpc-test-pv/{name}"},
                },
            })
        return names


def _kubeconfig(server: str, ca_file: Path, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "hxpc-test-admin", "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": "hxpc-test-admin"}}],
        "current-context": CONTEXT,
    }


def start_cluster(workdir: Path, bin_dir: Path | None = None, timeout: float = 60.0) -> Cluster:
    """Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok; return once all answer.

    `workdir` receives the data, certificates, kubeconfig and `logs/<component>.log`. Raises
    ClusterError (with the end of the failing component's log) when something does not come
    up within `timeout` seconds each; whatever was started is stopped again in that case.
    The cluster is also stopped at interpreter exit should the caller forget.
    """
    bin_dir = bin_dir or binaries()
    if bin_dir is None:
        raise ClusterError(f"the Kubernetes test binaries are not in {cache_dir()}: {INSTALL_HINT}")
    workdir = workdir.resolve()
    pki = workdir / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    etcd_port, peer_port, api_port, cm_port, sched_port, kwok_port = _free_ports(6)
    token = secrets.token_hex(16)
    server = f"https://127.0.0.1:{api_port}"
    cluster = Cluster(workdir=workdir, bin_dir=bin_dir, kubeconfig=workdir / "kubeconfig", server=server,
                      token=token, ca_file=pki / "apiserver.crt")
    atexit.register(cluster.stop)
    try:
        _start_all(cluster, etcd_port, peer_port, api_port, cm_port, sched_port, kwok_port, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start_all(cluster: Cluster, etcd_port: int, peer_port: int, api_port: int, cm_port: int, sched_port: int,
               kwok_port: int, timeout: float) -> None:
    workdir, pki, token = cluster.workdir, cluster.workdir / "pki", cluster.token
    sa_key = pki / "service-account.key"
    _write_service_account_key(sa_key)
    tokens = pki / "tokens.csv"
    tokens.write_text(f'{token},hxpc-test-admin,hxpc-test-admin,"system:masters"\n')
    tokens.chmod(0o600)
    # Python's json is valid YAML, and kubectl, client-go and the Python client all read it.
    cluster.kubeconfig.write_text(json.dumps(_kubeconfig(cluster.server, cluster.ca_file, token), indent=2) + "\n")

    etcd = cluster._start("etcd", [
        f"--data-dir={workdir / 'etcd'}",
        f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
        f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
    ])
    # The apiserver would retry etcd on its own, but a dead etcd is clearer reported as such.
    cluster._wait_healthy(etcd, f"http://127.0.0.1:{etcd_port}/health", timeout)

    apiserver = cluster._start("kube-apiserver", [
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        # The endpoint reconciler refuses a loopback address for the `kubernetes` Service's
        # endpoints; nothing in the tests reaches the apiserver through that Service anyway.
        "--endpoint-reconciler-type=none",
        f"--secure-port={api_port}",
        # Self-signed serving certificate (for localhost and 127.0.0.1) with its CA in the same
        # file, apiserver.crt, which the kubeconfig names as certificate-authority.
        f"--cert-dir={pki}",
        f"--token-auth-file={tokens}",
        "--authorization-mode=Node,RBAC",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={sa_key}",
        f"--service-account-signing-key-file={sa_key}",
        "--api-audiences=https://kubernetes.default.svc.cluster.local",
        # Manifests for GPU servers may ask for privileged containers; a real cluster allows them.
        "--allow-privileged=true",
        "--profiling=false",
        "--enable-priority-and-fairness=false",  # less bootstrap work; tests never saturate it
    ])
    cluster._wait_healthy(apiserver, f"{cluster.server}/readyz", timeout)

    kubeconfig = str(cluster.kubeconfig)
    client_flags = [f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}", "--bind-address=127.0.0.1"]
    controller_manager = cluster._start("kube-controller-manager", [
        *client_flags,
        f"--secure-port={cm_port}",
        f"--cert-dir={workdir / 'controller-manager-pki'}",
        "--leader-elect=false",
        f"--controllers={','.join(CONTROLLERS)}",
        f"--service-account-private-key-file={sa_key}",
        f"--root-ca-file={cluster.ca_file}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--use-service-account-credentials=false",
        "--concurrent-deployment-syncs=10",
        "--concurrent-statefulset-syncs=10",
    ])
    scheduler = cluster._start("kube-scheduler", [
        *client_flags,
        f"--secure-port={sched_port}",
        f"--cert-dir={workdir / 'scheduler-pki'}",
        "--leader-elect=false",
    ])
    stages = cluster.bin_dir.parent / "stage"
    kwok = cluster._start("kwok", [
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION[0]}={KWOK_ANNOTATION[1]}",
        f"--server-address=127.0.0.1:{kwok_port}",
        "--cidr=10.244.0.0/16",  # pod IPs kwok hands out
        "--node-ip=127.0.0.1",
        *(f"--config={stages / f'{name}.yaml'}" for name in STAGES),
    ])
    cluster._wait_healthy(controller_manager, f"https://127.0.0.1:{cm_port}/healthz", timeout)
    cluster._wait_healthy(scheduler, f"https://127.0.0.1:{sched_port}/healthz", timeout)
    cluster._wait_healthy(kwok, f"http://127.0.0.1:{kwok_port}/healthz", timeout)


def session_cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    """A started cluster in a fresh temp directory, or skip/fail (CI) the test when the binaries are missing.

    For a session fixture in a conftest.py:

        @pytest.fixture(scope="session")
        def kube_cluster(tmp_path_factory):
            cluster = kubecluster.session_cluster(tmp_path_factory)
            yield cluster
            cluster.stop()
    """
    bin_dir = require_binaries()
    return start_cluster(tmp_path_factory.mktemp("kube"), bin_dir=bin_dir)
