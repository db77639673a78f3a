"""The Kubernetes backend, which applies the kubernetes target to an API server (backend.py: reading, changing
and probing; client.py: configuration and calls; lease.py: the lock; desired.py, parse.py, normalize.py,
fields.py, inventory.py, kstatus.py, pods.py and feasibility.py: its pure halves). Built only when a stack
needs it, so the kubernetes client is imported only then."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hxpc.engine.backends import option

if TYPE_CHECKING:
    from hxpc.compiler.bundle import Meta
    from hxpc.compiler.model import ResolvedStack
    from hxpc.engine.backend import Backend


@dataclass(frozen=True)
class KubernetesOptions:
    kubeconfig: str | None = option("--kubeconfig", envvar="KUBECONFIG",
                                    help="kubeconfig file(s) for the kubernetes target, as kubectl reads them "
                                         "(default: ~/.kube/config, else the in-cluster service account)")
    context: str | None = option("--context", help="kubeconfig context for the kubernetes target")
    allow_replace: bool = option("--allow-replace", switch=True,
                                 help="kubernetes: delete and recreate objects whose immutable fields change")
    allow_delete_data: bool = option("--allow-delete-data", switch=True,
                                     help="kubernetes: also prune PersistentVolumeClaims and Namespaces "
                                          "the spec no longer has")
    adopt: bool = option("--adopt", switch=True,
                         help="kubernetes: take over objects in the way that are not hxpc's (else refused)")


Options = KubernetesOptions


def build(stack: ResolvedStack, meta: Meta, options: KubernetesOptions) -> Backend:
    from hxpc.engine.backends.kubernetes.backend import KubernetesBackend

    return KubernetesBackend(stack, meta, options)
