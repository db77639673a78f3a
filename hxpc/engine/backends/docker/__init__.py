"""The Docker Engine backend, which applies the compose target (backend.py: reading, changing, probing;
parse.py: its pure half). Built only when a stack needs it, so the docker SDK is imported only then."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hxpc.compiler.bundle import Meta
    from hxpc.compiler.model import ResolvedStack
    from hxpc.engine.backend import Backend


@dataclass(frozen=True)
class DockerOptions:
    """None: the Engine is found as the docker CLI finds it (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH)."""


Options = DockerOptions


def build(stack: ResolvedStack, meta: Meta, options: DockerOptions) -> Backend:
    from hxpc.engine.backends.docker.backend import DockerBackend

    return DockerBackend(stack, meta)
