"""The systemd backend, which applies the systemd target to its hosts (backend.py: the batch per host and
wave, locks, the health gate; desired.py and parse.py: its pure halves; transport.py: how a host is reached)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hxpc.engine.backends import option

if TYPE_CHECKING:
    from hxpc.compiler.bundle import Meta
    from hxpc.compiler.model import ResolvedStack
    from hxpc.engine.backend import Backend


@dataclass(frozen=True)
class SystemdOptions:
    ssh_config: str | None = option("--ssh-config", envvar="HXPC_SSH_CONFIG",
                                    help="ssh config file passed to ssh as -F (systemd hosts)")


Options = SystemdOptions


def build(stack: ResolvedStack, meta: Meta, options: SystemdOptions) -> Backend:
    from hxpc.engine.backends.systemd.backend import SystemdBackend

    return SystemdBackend(stack, meta, ssh_config=options.ssh_config)
