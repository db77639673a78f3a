"""The apply lock protocol: one apply at a time per project and environment on a live system.

A backend provides only the atomic primitive (`LockPrimitive`: create if
absent, read, remove if still the same lock), e.g. a uniquely named container
or a `mkdir` on a host. `acquire` builds the protocol on it: a lock carries
its holder (`user@host pid N`), since when, the spec hash and a time to live;
a lock past its TTL belonged to an apply that died and is taken over;
otherwise `LockHeld` names the holder and since when. The executor releases
every lock in a `finally`, and sizes the TTL to outlast the slowest health
gates, so a live apply's lock never expires under it.
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from hxpc.errors import LockHeld

DEFAULT_TTL_S = 900


@dataclass(frozen=True)
class LockInfo:
    holder: str
    since: float          # epoch seconds
    spec_hash: str
    ttl_s: int

    @property
    def since_iso(self) -> str:
        return datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def expires_at(self) -> float:
        return self.since + self.ttl_s

    def expired(self, now: float) -> bool:
        return now >= self.expires_at()

    def to_dict(self) -> dict[str, str]:
        """Strings only, so a backend can keep the lock in labels, annotations or a file."""
        return {"holder": self.holder, "since": self.since_iso, "spec_hash": self.spec_hash, "ttl_s": str(self.ttl_s)}

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> LockInfo:
        since = datetime.strptime(data["since"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        return cls(data["holder"], since, data.get("spec_hash", ""), int(data["ttl_s"]))


def new_lock_info(spec_hash: str, ttl_s: int = DEFAULT_TTL_S, now: float | None = None) -> LockInfo:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = str(os.getuid())
    # whole seconds: the lock's `since` round-trips through its string form unchanged
    since = float(int(now if now is not None else time.time()))
    return LockInfo(f"{user}@{socket.gethostname()} pid {os.getpid()}", since, spec_hash, ttl_s)


class LockPrimitive(Protocol):
    def try_create(self, payload: Mapping[str, str]) -> bool:
        """Atomically create the lock carrying `payload`; False when one already exists."""
        ...

    def read(self) -> Mapping[str, str] | None:
        """The current lock's payload, or None when there is none."""
        ...

    def remove(self, payload: Mapping[str, str]) -> None:
        """Remove the lock if it is still the one carrying `payload` (never someone else's)."""
        ...


class LockHandle(Protocol):
    info: LockInfo

    def release(self) -> None: ...


@dataclass
class PrimitiveLock:
    """A held lock; `took_over` is the expired lock it replaced, for the report."""

    primitive: LockPrimitive
    info: LockInfo
    took_over: LockInfo | None = None
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.primitive.remove(self.info.to_dict())
            self.released = True


@dataclass
class MultiLock:
    """Several locks held as one (e.g. one per host); released in reverse order of taking."""

    info: LockInfo
    handles: list[LockHandle] = field(default_factory=list)

    def release(self) -> None:
        errors: list[BaseException] = []
        while self.handles:
            try:
                self.handles.pop().release()
            except Exception as exc:  # noqa: BLE001 - release the others, then report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]


class LockHeldBy(LockHeld):
    """`LockHeld` with the holder and since when, for callers that render them."""

    def __init__(self, message: str, holder: str, since: str):
        super().__init__(message)
        self.holder, self.since = holder, since


def _held_message(what: str, held: LockInfo, now: float) -> str:
    left = max(0, int(held.expires_at() - now))
    return (f"another apply holds the lock for {what}: {held.holder} since {held.since_iso} "
            f"(spec {held.spec_hash or 'unknown'}; taken over after its TTL, in {left}s)")


def acquire(primitive: LockPrimitive, info: LockInfo, what: str,
            clock: Callable[[], float] = time.time, attempts: int = 5) -> PrimitiveLock:
    """Take the lock, taking over one whose TTL expired; raise `LockHeld` when it is held."""
    took_over: LockInfo | None = None
    for _ in range(attempts):
        if primitive.try_create(info.to_dict()):
            return PrimitiveLock(primitive, info, took_over)
        current = primitive.read()
        if current is None:
            continue  # released between our create and read: try again
        try:
            held = LockInfo.from_dict(current)
        except (KeyError, ValueError):
            held = LockInfo("an unreadable lock", 0.0, "", 0)  # corrupt: nobody can prove they hold it
        if not held.expired(clock()):
            raise LockHeldBy(_held_message(what, held, clock()), held.holder, held.since_iso)
        primitive.remove(current)
        took_over = held
    raise LockHeld(f"could not take the lock for {what}: it changed hands {attempts} times while trying")


class RenewablePrimitive(LockPrimitive, Protocol):
    def renew(self, payload: Mapping[str, str]) -> bool:
        """Extend the life of the lock carrying `payload` if it is still that one; False when it is not."""
        ...


@dataclass
class RenewedLock:
    """A held lock kept alive by a thread that renews it every `every_s` until released, for a primitive
    whose lock expires soon after its last renewal (a Kubernetes Lease): a killed holder's lock is taken over
    quickly, a live one's never. `lost` says when a renewal found the lock no longer ours."""

    held: PrimitiveLock
    primitive: RenewablePrimitive
    every_s: float
    lost: str = ""
    info: LockInfo = field(init=False)
    took_over: LockInfo | None = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.info, self.took_over = self.held.info, self.held.took_over

    def start(self) -> RenewedLock:
        self._thread = threading.Thread(target=self._run, name="hxpc-lock-renewal", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if not self.primitive.renew(self.held.info.to_dict()):
                    self.lost = "the lock was no longer this apply's when renewing it"
                    return
            except Exception as exc:  # noqa: BLE001 - a failed renewal is retried at the next tick
                self.lost = f"renewing the lock failed: {exc}"

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.held.release()


def lock_ttl(budgets_per_wave: Sequence[float], floor_s: int = DEFAULT_TTL_S) -> int:
    """A TTL that outlasts the apply: every wave's slowest gate, plus a margin for the actions."""
    return int(max(floor_s, sum(budgets_per_wave) * 1.5 + 300))
