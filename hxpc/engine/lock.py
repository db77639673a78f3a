"""The apply lock protocol: one apply at a time per project and environment on a live system.

A backend provides only the atomic primitive (`LockPrimitive`: create if
absent, read, remove if still the same lock; optionally `renew`), e.g. a
uniquely named container, a `mkdir` on a host or a Kubernetes Lease. Everything
else is built here, once, for every primitive:

- A lock carries an id (`lock_id`, shown whenever an apply is refused), its
  holder (`user@host pid N`), since when, the spec hash, a time to live, and
  what proves whether its holder still runs: the kernel's boot id, the pid
  namespace, the pid and the process's start time. A holder that provably
  died on this machine (same boot and pid namespace, and that process is gone
  or another one has its pid) is taken over at once, saying so; a holder
  elsewhere is respected until its TTL runs out.
- The TTL is renewed while an apply runs (`Renewal`, every `renew_interval`
  seconds, through the primitive's `renew`), so a long apply never outlives
  its lock however long its image pulls or gates take; it is also sized above
  the plan's health-gate budgets, which bounds it for a primitive that cannot
  renew. A renewal that finds the lock no longer theirs stops the apply.
- An apply with nothing to change removes the locks of holders that provably
  died here (`reap_dead`): one killed after its last change leaves no lock.
- `break_locks` is `hxpc unlock`: it removes the locks carrying one lock id,
  and refuses, touching nothing, when a lock held carries another.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from hxpc.errors import LockHeld

DEFAULT_TTL_S = 900
_ISO = "%Y-%m-%dT%H:%M:%SZ"


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime(_ISO)


def _epoch(text: str) -> float:
    return datetime.strptime(text, _ISO).replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class LockInfo:
    holder: str
    since: float          # epoch seconds
    spec_hash: str
    ttl_s: int
    lock_id: str = ""
    boot_id: str = ""     # the holder's kernel boot, pid namespace, pid and process start: proof of life
    pid_ns: str = ""
    pid: int = 0
    pid_start: str = ""
    renewed: float = 0.0  # epoch seconds of the last renewal (0: never)

    @property
    def since_iso(self) -> str:
        return _iso(self.since)

    def expires_at(self) -> float:
        return max(self.since, self.renewed) + self.ttl_s

    def expired(self, now: float) -> bool:
        return now >= self.expires_at()

    def to_dict(self) -> dict[str, str]:
        """Strings only, so a backend can keep the lock in labels, annotations or a file."""
        out = {"holder": self.holder, "since": self.since_iso, "spec_hash": self.spec_hash, "ttl_s": str(self.ttl_s),
               "lock_id": self.lock_id, "boot_id": self.boot_id, "pid_ns": self.pid_ns, "pid": str(self.pid),
               "pid_start": self.pid_start}
        if self.renewed:
            out["renewed"] = _iso(self.renewed)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> LockInfo:
        # a lock written before lock ids gets one derived from what it holds, so it can be named and broken
        lock_id = data.get("lock_id") or "legacy-" + hashlib.sha256(
            repr(sorted(data.items())).encode()).hexdigest()[:12]
        renewed = data.get("renewed")
        return cls(data["holder"], _epoch(data["since"]), data.get("spec_hash", ""), int(data["ttl_s"]), lock_id,
                   data.get("boot_id", ""), data.get("pid_ns", ""), int(data.get("pid") or 0),
                   data.get("pid_start", ""), _epoch(renewed) if renewed else 0.0)


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22); None when no such process."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def new_lock_info(spec_hash: str, ttl_s: int = DEFAULT_TTL_S, now: float | None = None) -> LockInfo:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = str(os.getuid())
    # whole seconds: the lock's `since` round-trips through its string form unchanged
    since = float(int(now if now is not None else time.time()))
    pid = os.getpid()
    return LockInfo(f"{user}@{socket.gethostname()} pid {pid}", since, spec_hash, ttl_s, uuid.uuid4().hex,
                    _read("/proc/sys/kernel/random/boot_id"), _pid_namespace(), pid, _start_time(pid) or "")


def holder_gone(held: LockInfo) -> str | None:
    """Why the lock's holder is provably dead (it ran on this machine, in this pid namespace, and that process
    is gone), else None: alive, or not provable from here (another machine, container or boot)."""
    if not (held.boot_id and held.pid_ns and held.pid):
        return None
    if held.boot_id != _read("/proc/sys/kernel/random/boot_id") or held.pid_ns != _pid_namespace():
        return None
    started = _start_time(held.pid)
    if started is None:
        return f"its holder, pid {held.pid} on this machine, is no longer running"
    if held.pid_start and started and started != held.pid_start:
        return f"its holder, pid {held.pid} on this machine, is no longer running (another process has its pid)"
    return None


class LockPrimitive(Protocol):
    def try_create(self, payload: Mapping[str, str]) -> bool:
        """Atomically create the lock carrying `payload`; False when one already exists."""
        ...

    def read(self) -> Mapping[str, str] | None:
        """The current lock's payload (its latest renewal included), or None when there is none."""
        ...

    def remove(self, payload: Mapping[str, str]) -> None:
        """Remove the lock if it is still the one carrying `payload`'s `lock_id` (never someone else's)."""
        ...


@runtime_checkable
class RenewablePrimitive(Protocol):
    """Optional for a primitive: extend the lock's life while its apply runs."""

    def renew(self, payload: Mapping[str, str]) -> bool:
        """Store `payload` (the same lock, a later `renewed`) if the lock is still the one carrying its `lock_id`;
        False when it is not (it was broken or taken over): the apply must stop."""
        ...


@runtime_checkable
class LockPrimitives(Protocol):
    """Optional for a backend: the primitives its lock is made of, by where they are (`hxpc unlock` needs them)."""

    def lock_primitives(self) -> Mapping[str, LockPrimitive]: ...


class LockHandle(Protocol):
    info: LockInfo

    def release(self) -> None: ...


@dataclass
class PrimitiveLock:
    """A held lock; `took_over` is the lock it replaced and `took_over_why` why that was allowed, for the report."""

    primitive: LockPrimitive
    info: LockInfo
    took_over: LockInfo | None = None
    released: bool = False
    took_over_why: str = ""

    def release(self) -> None:
        if not self.released:
            self.primitive.remove(self.info.to_dict())
            self.released = True

    @property
    def renewable(self) -> bool:
        return isinstance(self.primitive, RenewablePrimitive)

    def renew(self, now: float) -> bool:
        """Extend the lock; False when it is no longer ours. A primitive that cannot renew keeps its TTL."""
        if self.released or not isinstance(self.primitive, RenewablePrimitive):
            return True
        renewed = replace(self.info, renewed=float(int(now)))
        if not self.primitive.renew(renewed.to_dict()):
            return False
        self.info = renewed
        return True


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

    def renew(self, now: float) -> bool:
        return all([renew_handle(h, now) for h in list(self.handles)])


def renew_handle(handle: LockHandle, now: float) -> bool:
    """`handle.renew(now)` for handles that can (PrimitiveLock, MultiLock); True for any other."""
    renew: Callable[[float], bool] | None = getattr(handle, "renew", None)
    return renew(now) if renew is not None else True


def took_over(handle: LockHandle) -> list[tuple[LockInfo, str]]:
    """The locks `handle` took over and why, for the report."""
    if isinstance(handle, PrimitiveLock):
        return [(handle.took_over, handle.took_over_why)] if handle.took_over is not None else []
    if isinstance(handle, MultiLock):
        return [t for h in handle.handles for t in took_over(h)]
    return []


class LockHeldBy(LockHeld):
    """`LockHeld` with the holder, since when and the lock id, for callers that render them."""

    def __init__(self, message: str, holder: str, since: str, lock_id: str = ""):
        super().__init__(message)
        self.holder, self.since, self.lock_id = holder, since, lock_id


def _held_message(what: str, held: LockInfo, now: float) -> str:
    left = max(0, int(held.expires_at() - now))
    return (f"another apply holds the lock for {what}: {held.holder} since {held.since_iso} "
            f"(spec {held.spec_hash or 'unknown'}; lock id {held.lock_id}; taken over after its TTL, in {left}s; "
            f"if that apply is gone, `hxpc unlock SPEC --env ENV --lock-id {held.lock_id}` breaks it)")


def acquire(primitive: LockPrimitive, info: LockInfo, what: str,
            clock: Callable[[], float] = time.time, attempts: int = 5) -> PrimitiveLock:
    """Take the lock, taking over one whose holder provably died or whose TTL expired; raise `LockHeld`
    naming the holder and the lock id when it is held."""
    taken: LockInfo | None = None
    why = ""
    for _ in range(attempts):
        if primitive.try_create(info.to_dict()):
            return PrimitiveLock(primitive, info, taken, took_over_why=why)
        current = primitive.read()
        if current is None:
            continue  # released between our create and read: try again
        try:
            held = LockInfo.from_dict(current)
        except (KeyError, ValueError):
            held = LockInfo("an unreadable lock", 0.0, "", 0, "unreadable")  # corrupt: nobody can prove they hold it
        if info.lock_id and held.lock_id == info.lock_id:  # a retried create whose first attempt went through
            return PrimitiveLock(primitive, info, taken, took_over_why=why)
        gone = holder_gone(held)
        if gone is None and not held.expired(clock()):
            raise LockHeldBy(_held_message(what, held, clock()), held.holder, held.since_iso, held.lock_id)
        primitive.remove(current)
        taken, why = held, gone or "its TTL expired"
    raise LockHeld(f"could not take the lock for {what}: it changed hands {attempts} times while trying")


def acquire_all(primitives: Mapping[str, LockPrimitive], info: LockInfo, what: Callable[[str], str]) -> MultiLock:
    """Take every lock of `primitives` (in their order), or none: those taken are released on failure."""
    multi = MultiLock(info)
    try:
        for where, primitive in primitives.items():
            multi.handles.append(acquire(primitive, info, what(where)))
    except BaseException:
        multi.release()
        raise
    return multi


def lock_ttl(budgets_per_wave: Sequence[float], floor_s: int = DEFAULT_TTL_S) -> int:
    """A TTL that outlasts the apply: every wave's slowest gate, plus a margin for the actions."""
    return int(max(floor_s, sum(budgets_per_wave) * 1.5 + 300))


def renew_interval(ttl_s: int) -> float:
    """How often a running apply renews its lock: well within the TTL, at most every minute."""
    return max(1.0, min(60.0, ttl_s / 4))


class Renewal:
    """A thread that renews `handles` every `interval_s` seconds until stopped; `on_lost` is called once when a
    renewal finds a lock no longer ours. A renewal that fails (a live system down) is tried again next time:
    the lock outlives a few missed renewals by its TTL."""

    def __init__(self, handles: Sequence[LockHandle], interval_s: float, on_lost: Callable[[str], None],
                 clock: Callable[[], float] = time.time):
        self.handles, self.interval_s, self.on_lost, self.clock = list(handles), interval_s, on_lost, clock
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hxpc-lock-renewal", daemon=True)

    def start(self) -> Renewal:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for handle in self.handles:
                try:
                    still_ours = renew_handle(handle, self.clock())
                except Exception as exc:  # noqa: BLE001 - try again at the next interval
                    self.failures.append(f"renewing the lock failed: {exc}")
                    continue
                if not still_ours:
                    self.on_lost(f"the lock {handle.info.lock_id} was broken or taken over while applying")
                    return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=120)


def reap_dead(primitives: Mapping[str, LockPrimitive]) -> list[str]:
    """Remove the locks whose holder provably died on this machine (an apply killed after its last change,
    which the next apply, finding nothing to change, would otherwise leave); what was removed, said."""
    reaped = []
    for where, primitive in primitives.items():
        payload = primitive.read()
        if payload is None:
            continue
        try:
            held = LockInfo.from_dict(payload)
        except (KeyError, ValueError):
            continue
        gone = holder_gone(held)
        if gone is not None:
            primitive.remove(payload)
            reaped.append(f"removed the lock {held.lock_id} on {where}: {gone}")
    return reaped


def break_locks(primitives: Mapping[str, LockPrimitive], lock_id: str) -> list[tuple[str, LockInfo]]:
    """Remove every lock of `primitives` that carries `lock_id` (`hxpc unlock`); the ones removed, by where.

    Refuses with `LockHeld`, touching nothing, when any lock held there carries another id.
    """
    held: dict[str, tuple[Mapping[str, str], LockInfo]] = {}
    for where, primitive in primitives.items():
        payload = primitive.read()
        if payload is not None:
            try:
                held[where] = (payload, LockInfo.from_dict(payload))
            except (KeyError, ValueError):
                held[where] = (payload, LockInfo("an unreadable lock", 0.0, "", 0, "unreadable"))
    others = {where: info for where, (_, info) in held.items() if info.lock_id != lock_id}
    if others:
        listed = "; ".join(f"{where}: lock id {info.lock_id}, held by {info.holder} since {info.since_iso}"
                           for where, info in sorted(others.items()))
        raise LockHeld(f"refusing to unlock: the lock held is not {lock_id} ({listed}); nothing was changed")
    for where, (payload, _) in held.items():
        primitives[where].remove(payload)
    return [(where, info) for where, (_, info) in held.items()]
