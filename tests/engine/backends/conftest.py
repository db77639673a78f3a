"""Fixtures the backend tests share: one real Kubernetes control plane for the whole session.

The cluster (tests/kubecluster.py) starts once, with two kwok GPU nodes of 8 GPUs labelled as the
manifests select and one node kwok does not manage (tests/harnesses/kubernetes.py says why); each test
then works in its own project and namespace and removes them afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import kubecluster
import pytest
from harnesses.kubernetes import GPU_MODEL, add_manual_node


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kubecluster.Cluster]:
    cluster = kubecluster.session_cluster(tmp_path_factory)
    try:
        cluster.add_nodes(2, gpus=8, labels={"nvidia.com/gpu.product": GPU_MODEL})
        add_manual_node(cluster)
        yield cluster
    finally:
        cluster.stop()
