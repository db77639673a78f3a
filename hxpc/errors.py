"""The exception tree of hxpc; every error a user can cause maps to one exit code (`exit_code`).

Classes defined elsewhere carry their module in brackets; tests/test_errors.py
compares this drawing with HxpcError's subclasses, so it cannot drift.

::

    HxpcError (exit 1)                  base; an unexpected failure of hxpc itself
    ├── SpecError (exit 3)              bad spec; holds Diagnostics
    ├── UsageError (exit 3)             bad command line or saved-plan file
    ├── WriteFailed (exit 1)            the output directory could not be written (disk full); left as it was
    ├── UnownedFiles (exit 4)           compile refused: files in the output that hxpc did not write
    ├── BackendError (exit 1)           a live system refused or failed (cause chained)
    │   ├── TransientError (exit 1)     [hxpc.engine.backend] may pass on retry; retried with backoff
    │   ├── NameClash (exit 1)          [hxpc.engine.plan] objects in the way that hxpc does not own
    │   ├── ApiError (exit 1)           [hxpc.engine.backends.kubernetes.client] the API server's error status
    │   │   ├── NotFound (exit 1)       [hxpc.engine.backends.kubernetes.client] HTTP 404
    │   │   └── Conflict (exit 1)       [hxpc.engine.backends.kubernetes.client] HTTP 409
    │   └── ApplyError (exit 1)         apply failed part-way (rolled back or reported)
    │       └── ApplyFailed (exit 1)    [hxpc.engine.report] an action or gate failed; the wave rolled back
    ├── StalePlan (exit 4)              a saved plan no longer matches the live system
    ├── LockHeld (exit 4)               another apply holds the lock
    │   └── LockHeldBy (exit 4)         [hxpc.engine.lock] with the holder and since when
    ├── NeedsPermission (exit 4)        [hxpc.engine.plan] the plan holds actions refused without a flag
    └── Interrupted (exit 130)          SIGINT/SIGTERM
        └── ApplyInterrupted (exit 130) [hxpc.engine.report] during apply, with what was applied so far
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


class WriteFailed(HxpcError):
    """Writing the output failed (the OS error says why); the previous output is unchanged."""

    exit_code = 1


class UnownedFiles(HxpcError):
    """A compile would overwrite or delete files hxpc did not write; nothing was changed."""

    exit_code = 4

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)
        shown = "\n".join(f"  {p}" for p in self.paths)
        super().__init__(f"refusing to compile: {len(self.paths)} file(s) in the way that hxpc did not write "
                         f"(or that were changed since); nothing was changed:\n{shown}\n"
                         "move them away, or pass --replace-unowned to replace them")


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
