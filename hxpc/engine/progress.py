"""Progress of an apply: the events the executor emits, and two ways to show them.

The executor calls a `Progress` (any callable taking an `Event`) from several
threads: when a wave starts, when each action starts, retries, succeeds or
fails, while the health gate waits, on rollback and interrupt, and once at
the end (`finish`). `PlainProgress` writes one line per event (for CI logs);
`RichProgress` keeps a live view of every wave, action and gate with elapsed
time on a terminal. `rich` is imported only when the live view is used.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from hxpc.engine.objects import ObjectKey
from hxpc.engine.plan import SYMBOLS


@dataclass(frozen=True)
class Event:
    """kind: start | wave | action | retry | done | failed | skipped | gate | healthy | unhealthy |
    gate_failed | rollback | rolled_back | interrupt | note | finish."""

    kind: str
    elapsed_s: float
    wave: int | None = None
    key: ObjectKey | None = None
    action: str | None = None
    message: str = ""


Progress = Callable[[Event], None]


_WORDS = {"action": "started", "done": "done", "failed": "FAILED", "retry": "retrying", "skipped": "not started",
          "gate": "health gate", "healthy": "healthy", "unhealthy": "not healthy yet", "rollback": "rolling back",
          "rolled_back": "rolled back", "wave": "started", "gate_failed": "FAILED", "note": ""}


def format_event(event: Event) -> str:
    """`[   1.0s] wave 1 ~ compose:hxp-dev/container/api-1 update started: image 2.3.1 -> 2.3.2`."""
    parts = [f"[{event.elapsed_s:7.1f}s]"]
    if event.wave is not None:
        parts.append(f"wave {event.wave}")
    if event.key is not None:
        parts.append(f"{SYMBOLS.get(event.action or '', '')} {event.key} {event.action or ''}".strip())
    word = _WORDS.get(event.kind, event.kind)
    if word:
        parts.append(word)
    line = " ".join(parts)
    if not event.message:
        return line
    return f"{line}: {event.message}" if word else f"{line} {event.message}"


class PlainProgress:
    """One line per event, flushed at once, for logs without a terminal."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.kind in ("healthy", "finish") and not event.message:
            return
        with self._lock:
            self.stream.write(format_event(event) + "\n")
            self.stream.flush()


_STYLE = {"action": "yellow", "retry": "yellow", "done": "green", "failed": "red", "skipped": "dim",
          "gate": "cyan", "healthy": "green", "unhealthy": "cyan", "gate_failed": "red",
          "rollback": "magenta", "rolled_back": "magenta"}


class RichProgress:
    """A live view: one row per action with its state and elapsed time, per wave, plus the gate."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._rows: dict[tuple[int | None, ObjectKey | None], list[Any]] = {}
        self._notes: list[str] = []
        self._live: Any = None

    def _render(self) -> Any:
        from rich.markup import escape
        from rich.table import Table

        table = Table(show_header=True, header_style="bold", box=None, expand=False)
        for column in ("wave", "", "object", "state", "time"):
            table.add_column(column)
        now = time.monotonic()
        with self._lock:
            for (wave, key), (action, state, detail, started, ended) in self._rows.items():
                took = (ended or now) - started
                style = _STYLE.get(state, "")
                text = f"[{style}]{escape(state)}[/]" if style else escape(state)
                if detail:
                    text += f" {escape(detail)}"
                table.add_row(str(wave if wave is not None else ""), SYMBOLS.get(action, ""), str(key or ""),
                              text, f"{took:.1f}s")
            for note in self._notes[-5:]:
                table.add_row("", "", "", note, "")
        return table

    def __call__(self, event: Event) -> None:
        if self._live is None and event.kind != "finish":
            from rich.console import Console
            from rich.live import Live

            self._live = Live(get_renderable=self._render, console=Console(file=self.stream),
                              refresh_per_second=4, transient=False)
            self._live.start()
        with self._lock:
            if event.key is not None:
                row = self._rows.setdefault((event.wave, event.key), [event.action or "", "", "", time.monotonic(),
                                                                     None])
                row[1], row[2] = event.kind, event.message
                if event.kind in ("done", "failed", "skipped", "healthy", "rolled_back"):
                    row[4] = time.monotonic()
                elif event.kind in ("gate", "rollback"):
                    row[3], row[4] = time.monotonic(), None
            elif event.kind not in ("finish",):
                self._notes.append(format_event(event))
        if event.kind == "finish" and self._live is not None:
            self._live.stop()
            self._live = None
            if event.message:
                self.stream.write(event.message + "\n")


def make_progress(stream: IO[str] | None = None, tty: bool | None = None) -> Progress:
    """The live view on a terminal, plain lines otherwise (CI)."""
    out = stream or sys.stderr
    if tty is None:
        tty = out.isatty()
    return RichProgress(out) if tty else PlainProgress(out)
