"""In-memory stand-ins the engine's unit tests share (the live systems' tests use the real ones)."""

from __future__ import annotations

import threading
from collections.abc import Mapping


class MemoryLock:
    """A primitive with renewal, in memory (what a Lease or a lock file does)."""

    def __init__(self) -> None:
        self.payload: dict[str, str] | None = None
        self.renewals = 0
        self.guard = threading.Lock()

    def try_create(self, payload: Mapping[str, str]) -> bool:
        with self.guard:
            if self.payload is not None:
                return False
            self.payload = dict(payload)
            return True

    def read(self) -> Mapping[str, str] | None:
        return self.payload

    def remove(self, payload: Mapping[str, str]) -> None:
        with self.guard:
            if self.payload is not None and self.payload.get("lock_id") == payload.get("lock_id"):
                self.payload = None

    def renew(self, payload: Mapping[str, str]) -> bool:
        with self.guard:
            if self.payload is None or self.payload.get("lock_id") != payload.get("lock_id"):
                return False
            self.payload = dict(payload)
            self.renewals += 1
            return True
