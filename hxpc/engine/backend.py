"""The contract between the engine and a live system (Docker Engine, systemd hosts, Kubernetes).

A backend is split as pyinfra splits facts: `read_raw` does the I/O (one
call per kind of object, never one per object) and a pure `parse` turns the
payload into `LiveObject`s, so parsing is tested against recorded payloads.
`desired` describes what the compiled stack wants in the same normalized
shape. The executor calls `apply_action` once per action (from worker
threads: a backend must be safe to call concurrently for different objects),
keeps the returned `Undo` so `rollback` can restore the previous object when
a wave fails, and polls `health` for the gate. Errors: raise `TransientError`
for what may pass on retry (connection reset, timeout, HTTP 429 or 5xx), and
`BackendError` with the live system's own message for everything else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from hxpc.engine.objects import DesiredObject, LiveObject, LiveState, ObjectKey, RawState
from hxpc.errors import BackendError

if TYPE_CHECKING:
    from hxpc.engine.lock import LockHandle, LockInfo
    from hxpc.engine.plan import Action

T = TypeVar("T")


class TransientError(BackendError):
    """A failure that may pass on retry; the executor retries it with bounded backoff."""


@dataclass(frozen=True)
class HealthResult:
    """One probe round. `final` means waiting longer cannot help (the process exited for good)."""

    healthy: bool
    detail: str = ""
    final: bool = False


@dataclass
class Undo:
    """What `rollback` needs to restore the object as it was before the action: `data` is a frozen dataclass
    of the backend's own, one class per kind of change, which its `rollback` matches on by type."""

    key: ObjectKey
    description: str = ""
    data: object = None


@dataclass(frozen=True)
class ActionContext:
    """What an action runs with: the desired object (None for deletes), the live object as
    re-read under the lock (None when absent), the plan's identity, and the stop event."""

    project: str
    env: str
    spec_hash: str
    desired: DesiredObject | None
    live: LiveObject | None
    stop: threading.Event = field(default_factory=threading.Event)
    note: Callable[[str], None] = lambda message: None


@runtime_checkable
class Backend(Protocol):
    target: str

    def desired(self) -> Mapping[ObjectKey, DesiredObject]:
        """Every object the compiled stack wants on this target."""
        ...

    def read_raw(self, keys: Collection[ObjectKey] | None = None) -> RawState:
        """The live payload for `keys`, or (None) everything carrying this project's and environment's
        ownership labels plus any object whose name clashes with a desired one."""
        ...

    def parse(self, raw: RawState) -> LiveState:
        """Pure: the payload as live objects keyed like `desired`."""
        ...

    def apply_action(self, action: Action, ctx: ActionContext) -> Undo | None:
        """Carry out one non-noop action; return what rollback needs (None: nothing to undo)."""
        ...

    def rollback(self, undo: Undo) -> None:
        """Restore the object as it was before the action that produced `undo`, serving again."""
        ...

    def health(self, key: ObjectKey, deadline: float) -> HealthResult:
        """One probe round for the health gate; `deadline` is a time.monotonic() value."""
        ...

    def lock(self, info: LockInfo) -> LockHandle:
        """Take this project's and environment's apply lock (see `hxpc.engine.lock.acquire`);
        raises `LockHeld` naming the holder and since when."""
        ...


@runtime_checkable
class WaveHooks(Protocol):
    """Optional for a backend: told which of its actions a wave runs before any starts (no I/O, cannot
    fail), and that the wave is over (after its gate or rollback), so it can batch per wave (systemd: one
    daemon-reload per host) and undo what it prepared for actions that never started."""

    def begin_wave(self, actions: Sequence[Action]) -> None: ...

    def end_wave(self, actions: Sequence[Action]) -> None: ...


@runtime_checkable
class Preflight(Protocol):
    """Optional for a backend: check what the plan's actions need (secrets, images) once the lock is held
    and the plan is known fresh, before any action runs; raising refuses the apply with nothing touched."""

    def prepare(self, actions: Sequence[Action]) -> None: ...


@runtime_checkable
class PlanWarnings(Protocol):
    """Optional for a backend: what its last full read found that a human should know before applying
    (a workload that cannot be scheduled, objects skipped because the live system cannot hold them); the
    plan shows them first."""

    def plan_warnings(self) -> Sequence[str]: ...


def read_live(backend: Backend, keys: Collection[ObjectKey] | None = None) -> LiveState:
    return backend.parse(backend.read_raw(keys))


def retry_transient(call: Callable[[], T], attempts: int = 3, backoff_s: float = 0.5) -> T:
    """`call()`, retried on TransientError with doubling delays (for reads outside an apply)."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except TransientError:
            if attempt == attempts:
                raise
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
