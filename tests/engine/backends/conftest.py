"""Fixtures the backend tests share: one of each live system for the whole session.

`docker_client` is the local Docker Engine (with the test images); `systemd_hosts` two containers running
systemd as PID 1; `kube_cluster` a real Kubernetes control plane (tests/kubecluster.py) with two kwok GPU
nodes of 8 GPUs labelled as the manifests select and one node kwok does not manage
(tests/harnesses/kubernetes.py says why). Each is started only when a test asks for it; each test then
works in its own project and removes it afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import kubecluster
import pytest
from harnesses.docker import docker_client as connect_docker
from harnesses.kubernetes import GPU_MODEL, add_manual_node
from harnesses.systemd import Hosts
from harnesses.systemd import systemd_hosts as start_systemd_hosts


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = connect_docker()
    yield client
    client.close()


@pytest.fixture(scope="session")
def systemd_hosts() -> Iterator[Hosts]:
    yield from start_systemd_hosts()


def _start_cluster(tmp_path_factory: pytest.TempPathFactory, attempts: int = 3) -> kubecluster.Cluster:
    """The session cluster; started again when a free port it picked was taken before a component bound it
    (other test runs share the machine)."""
    for attempt in range(attempts):
        try:
            return kubecluster.session_cluster(tmp_path_factory)
        except kubecluster.ComponentExited as exc:
            if "address already in use" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kubecluster.Cluster]:
    cluster = _start_cluster(tmp_path_factory)
    try:
        cluster.add_nodes(2, gpus=8, labels={"nvidia.com/gpu.product": GPU_MODEL})
        add_manual_node(cluster)
        yield cluster
    finally:
        cluster.stop()
