"""The quick validator never accepts what pydantic refuses, and builds the same objects when it accepts.

Every check runs both validators on the same tree: whatever quickcheck
accepts, pydantic must accept, and the two results must be equal down to the
types (an int is not a float, dict order is kept). Quickcheck must also accept
every valid spec we know of, or compiling would be slow for no reason.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import example_specs
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from strategies import specs

from hxpc.compiler.pipeline import environments, merged_env
from hxpc.compiler.quickcheck import quick_validate
from hxpc.compiler.spec import Stack, pydantic_adapter
from hxpc.errors import SpecError
from hxpc.sources import FileSources

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "invalid"

# values that sit on the edges of what each field type accepts or coerces
AWKWARD_VALUES = [
    "8", 8, 8.0, 8.5, -1, 0, 1, 2**60, True, False, None, "", "A", "a b", "web", "WEB", "10s", "1m30s", "0.5",
    "1Gi", "1.5G", "500m", "x\n", "/abs", "rel", "on-failure", "bfloat16", "hxpc/v1", [], {}, ["x"], [1],
    {"x": 1}, {"port": "http"}, float("inf"), float("nan"), 1e308, b"bytes", ("t",),
]
# a copy per draw: the same list or dict put in two places could otherwise be put inside itself (a cycle)
AWKWARD = st.sampled_from(AWKWARD_VALUES).map(copy.deepcopy)


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types, dict keys in the same order."""
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _agree(data: Any) -> Stack | None:
    """Run both validators; fail if quickcheck accepts what pydantic refuses or builds something else."""
    quick = quick_validate(Stack, data)
    try:
        slow = pydantic_adapter().validate_python(data)
    except ValidationError:
        slow = None
    if quick is not None:
        assert slow is not None, f"quickcheck accepted what pydantic refuses: {data!r}"
        assert _same(quick, slow), f"quickcheck built something else than pydantic from {data!r}"
    return quick


def _merged_trees(spec: Path) -> list[Any]:
    sources = FileSources(str(spec))
    try:
        return [merged_env(sources, env)[0].data for env in environments(sources)]
    except SpecError:  # the corpus case fails before validation (syntax, merge)
        return []


@pytest.mark.parametrize("spec", example_specs(), ids=lambda p: p.name)
def test_every_example_spec_takes_the_quick_path(spec: Path) -> None:
    trees = _merged_trees(spec)
    assert trees
    for tree in trees:
        assert _agree(tree) is not None


@pytest.mark.parametrize("spec", sorted(CORPUS.glob("*.yaml")), ids=lambda p: p.name)
def test_the_invalid_corpus_never_passes_quickcheck_alone(spec: Path) -> None:
    for tree in _merged_trees(spec):
        _agree(tree)


@settings(max_examples=60, deadline=None)
@given(spec=specs())
def test_every_generated_valid_spec_takes_the_quick_path(spec: dict[str, Any]) -> None:
    spec = {k: v for k, v in spec.items() if v is not None}
    assert _agree(spec) is not None


def _places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path in the tree, the root excluded."""
    found = []
    if isinstance(node, dict):
        items: list[tuple[Any, Any]] = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        items = []
    for key, child in items:
        found.append((*path, key))
        found.extend(_places(child, (*path, key)))
    return found


_ABSENT = object()


def _agree_with(tree: Any, place: tuple[Any, ...], value: Any) -> None:
    """`_agree` on the tree with `value` at `place`; the tree is restored afterwards."""
    parent = tree
    for part in place[:-1]:
        parent = parent[part]
    old = parent.get(place[-1], _ABSENT) if isinstance(parent, dict) else parent[place[-1]]
    parent[place[-1]] = value
    try:
        _agree(tree)
    finally:
        if old is _ABSENT:
            del parent[place[-1]]
        else:
            parent[place[-1]] = old


@pytest.mark.parametrize("spec", example_specs(), ids=lambda p: p.name)
def test_every_awkward_value_in_every_place_agrees(spec: Path) -> None:
    """Exhaustive: each value of AWKWARD put in each place of the example tree, and each odd key added."""
    tree = _merged_trees(spec)[-1]
    for place in _places(tree):
        for value in AWKWARD_VALUES:
            _agree_with(tree, place, value)
        parent = tree
        for part in place:
            parent = parent[part]
        if isinstance(parent, dict):
            for key in ("zz", "apiVersion", "api_version", "port", "exec", "http", "8"):
                _agree_with(tree, (*place, key), 1)


@settings(max_examples=200, deadline=None)
@given(spec=specs(), data=st.data())
def test_quickcheck_never_accepts_what_pydantic_refuses(spec: dict[str, Any], data: st.DataObject) -> None:
    tree: Any = {k: v for k, v in spec.items() if v is not None}
    for _ in range(data.draw(st.integers(1, 3))):
        place = data.draw(st.sampled_from(_places(tree)))
        parent = tree
        for part in place[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "add", "delete"]))
        if action == "replace" or not isinstance(parent, dict):
            parent[place[-1]] = data.draw(AWKWARD)
        elif action == "add":
            parent[data.draw(st.sampled_from(["zz", "apiVersion", "api_version", "port", "exec", "http", "8"]))] = \
                data.draw(AWKWARD)
        else:
            del parent[place[-1]]
    _agree(tree)


@pytest.mark.parametrize("value", ["10s", "1m30s", 90_000, "90000", 90.0, "1.5m", True, None])
def test_durations_agree(value: Any) -> None:
    _agree({"apiVersion": "hxpc/v1", "project": "demo",
            "services": {"web": {"image": "x", "health": {"exec": ["true"], "interval": value}}}})


def test_units_are_parsed_on_the_quick_path() -> None:
    stack = quick_validate(Stack, {
        "apiVersion": "hxpc/v1", "project": "demo",
        "hosts": {"h": {"cpu": "500m", "memory": "1.5G", "gpus": {"count": 1, "model": "L4", "memory": "24Gi"}}},
        "services": {"web": {"image": "x", "env": {"PORT": 8080}, "health": {"exec": ["true"], "interval": "1m30s"}}},
    })
    assert stack is not None
    assert (stack.hosts["h"].cpu, stack.hosts["h"].memory) == (500, 1_500_000_000)
    health = stack.services["web"].health
    assert health is not None and (health.interval, health.timeout) == (90_000, 3_000)
    assert stack.services["web"].env == {"PORT": "8080"}


def test_quickcheck_leaves_coercion_and_errors_to_pydantic() -> None:
    base = {"apiVersion": "hxpc/v1", "project": "demo"}
    assert quick_validate(Stack, {**base, "services": {"web": {"replicas": "2"}}}) is None  # pydantic coerces
    assert quick_validate(Stack, {**base, "zz": 1}) is None
    assert quick_validate(Stack, {**base, "secrets": {"s": {}}}) is None  # a failed __post_init__ check
    assert quick_validate(Stack, {**base, "project": "Demo"}) is None  # a failed name check
    assert quick_validate(Stack, {"project": "demo"}) is None
