"""Progress without a terminal: one line per event, and while a health gate waits in one state (a model
loading for minutes), a line every heartbeat saying how long it waited against its budget."""

from __future__ import annotations

import importlib
import io
import threading
from collections.abc import Collection
from typing import Any

import pytest
from fakes import MemoryLock

from hxpc.engine import plan_live
from hxpc.engine.apply import ApplyOptions, apply
from hxpc.engine.backend import ActionContext, HealthResult, Undo
from hxpc.engine.lock import LockInfo, PrimitiveLock, acquire
from hxpc.engine.objects import DesiredObject, Gate, LiveObject, LiveState, ObjectKey
from hxpc.engine.plan import Action
from hxpc.engine.progress import Event, PlainProgress, format_event

KEY = ObjectKey("fake", "hxp-dev", "container", "model-1")


class SlowModel:
    """One object that stays unhealthy ("loading weights") until `ready` is set."""

    target = "fake"

    def __init__(self) -> None:
        self.live: dict[ObjectKey, LiveObject] = {}
        self.ready = threading.Event()
        self.store = MemoryLock()

    def desired(self) -> dict[ObjectKey, DesiredObject]:
        return {KEY: DesiredObject(KEY, {"image": "vllm:2"}, "model", gate=Gate(5.0, 0.05))}

    def read_raw(self, keys: Collection[ObjectKey] | None = None) -> Any:
        return dict(self.live)

    def parse(self, raw: Any) -> LiveState:
        return dict(raw)

    def apply_action(self, action: Action, ctx: ActionContext) -> Undo | None:
        assert ctx.desired is not None
        self.live[KEY] = LiveObject(KEY, ctx.desired.state, True, "model")
        return Undo(KEY)

    def rollback(self, undo: Undo) -> None:
        self.live.pop(KEY, None)

    def health(self, key: ObjectKey, deadline: float) -> HealthResult:
        return HealthResult(True, "HTTP 200") if self.ready.is_set() else HealthResult(False, "loading weights")

    def lock(self, info: LockInfo) -> PrimitiveLock:
        return acquire(self.store, info, "hxp/dev")


def test_a_long_gate_says_how_long_it_waited_against_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.import_module("hxpc.engine.apply"), "HEARTBEAT_S", 0.3)
    backend = SlowModel()
    plan = plan_live({"fake": backend}, (("model",),), project="hxp", env="dev", spec_hash="s")
    threading.Timer(1.2, backend.ready.set).start()
    out = io.StringIO()
    report = apply(plan, {"fake": backend}, env="dev", spec_hash="s", options=ApplyOptions(handle_signals=False),
                   progress=PlainProgress(out))
    assert report.outcome == "success"
    waiting = [line for line in out.getvalue().splitlines() if "not healthy yet" in line]
    assert len(waiting) >= 3, out.getvalue()  # one state, said again every heartbeat
    assert all("loading weights (" in line and " of 5s)" in line for line in waiting), waiting
    assert any("healthy: HTTP 200" in line for line in out.getvalue().splitlines())


def test_a_plan_says_what_it_reads_and_notes_print_without_a_word() -> None:
    events: list[Event] = []
    plan_live({"fake": SlowModel()}, (("model",),), project="hxp", env="dev", spec_hash="s", progress=events.append)
    assert [e.message for e in events] == ["reading fake", "read fake: 0 live object(s)", ""]
    assert events[-1].kind == "finish"
    assert format_event(Event("note", 1.5, message="reading fake")) == "[    1.5s] reading fake"
    out = io.StringIO()
    PlainProgress(out)(events[-1])
    assert out.getvalue() == ""  # a finish without a message prints nothing
