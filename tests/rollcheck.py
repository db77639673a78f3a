"""What the rolling-update tests (tests/engine/backends/*/test_rolling.py) and bench/rolling.py share.

`Poller` asks every replica of a service for its version every 50 ms, as a user's traffic would: each
round GETs every replica's URL at once (a stopped replica refuses at once; a short timeout bounds the
rest) and records what each answered, or None; rounds start `interval` apart. `serving` is the number of
replicas that answered in a round, and `min_serving` the fewest over the run.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str, timeout: float = 0.5) -> str | None:
    """The body (stripped) of a 200 answer, else None."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return str(response.read().decode().strip()) if response.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):  # refused, reset, cut short: not serving
        return None


@dataclass
class Round:
    at: float                      # seconds since the poller started
    answers: list[str | None]      # per URL: what it said, or None

    @property
    def serving(self) -> int:
        return sum(1 for a in self.answers if a is not None)


@dataclass
class Poller:
    """`with Poller(urls) as p: ...` polls while the body runs; `urls` may be a callable, asked each round."""

    urls: Sequence[str] | Callable[[], Sequence[str]]
    interval: float = 0.05
    timeout: float = 0.5
    rounds: list[Round] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    crashed: BaseException | None = None

    def _urls(self) -> Sequence[str]:
        return self.urls() if callable(self.urls) else self.urls

    def _run(self) -> None:
        try:
            self._poll()
        except BaseException as exc:  # noqa: BLE001 - surfaced by __exit__: figures from a dead poller are no figures
            self.crashed = exc

    def _poll(self) -> None:
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="poller") as pool:
            while not self._stop.is_set():
                started = time.monotonic()
                urls = list(self._urls())
                answers = list(pool.map(lambda u: fetch(u, self.timeout), urls))
                self.rounds.append(Round(started - began, answers))
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self) -> Poller:
        self._thread = threading.Thread(target=self._run, name="replica-poller", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.crashed is not None and kind is None:
            raise RuntimeError(f"the poller stopped polling: {self.crashed!r}") from self.crashed

    @property
    def min_serving(self) -> int:
        return min((r.serving for r in self.rounds), default=0)

    def longest_gap(self, at_least: int = 1) -> float:
        """The longest stretch (seconds) during which fewer than `at_least` replicas answered."""
        longest, since = 0.0, None
        for r in self.rounds:
            if r.serving < at_least:
                since = r.at if since is None else since
            elif since is not None:
                longest, since = max(longest, r.at - since), None
        if since is not None and self.rounds:
            longest = max(longest, self.rounds[-1].at - since)
        return longest


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


