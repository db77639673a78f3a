"""The exception tree of hxpc; every error a user can cause maps to one exit code.

::

    HxpcError                    base; carries the CLI exit code
    ├── SpecError  (exit 3)      bad spec or command line; holds Diagnostics
    ├── BackendError (exit 1)    a live system refused or failed (cause chained)
    │   └── ApplyError (exit 1)  apply failed part-way (rolled back or reported)
    ├── StalePlan (exit 4)       a saved plan no longer matches the live system
    ├── LockHeld  (exit 4)       another apply holds the lock
    └── Interrupted (exit 130)   SIGINT/SIGTERM during apply
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hxpc.diagnostics import Diagnostic


class HxpcError(Exception):
    exit_code = 1


class SpecError(HxpcError):
    """The input is invalid; nothing was touched."""

    exit_code = 3

    def __init__(self, diagnostics: Sequence[Diagnostic], texts: Mapping[str, str] | None = None):
        self.diagnostics = list(diagnostics)
        self.texts: Mapping[str, str] = texts or {}
        first = self.diagnostics[0].message if self.diagnostics else "invalid spec"
        super().__init__(f"{len(self.diagnostics)} problem(s); first: {first}")


class UsageError(HxpcError):
    """The command line is invalid."""

    exit_code = 3


class BackendError(HxpcError):
    exit_code = 1


class ApplyError(BackendError):
    exit_code = 1


class StalePlan(HxpcError):
    exit_code = 4


class LockHeld(HxpcError):
    exit_code = 4


class Interrupted(HxpcError):
    exit_code = 130
