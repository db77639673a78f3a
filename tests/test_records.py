"""`record` behaves as @dataclass does, with methods shared by every class."""

from __future__ import annotations

import dataclasses
from dataclasses import field

import pytest

from hxpc.records import record


@record
class Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)
    note: str = field(default="", compare=False, repr=False)


@record(frozen=False)
class Counter:
    name: str
    count: int = 0


@record(kw_only=True)
class Checked:
    low: int
    high: int

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low > high")


def test_construction_by_position_and_keyword_with_defaults() -> None:
    assert Point(1) == Point(x=1) == Point(1, 0, [])
    assert Point(1, y=2).y == 2
    assert Point(1).tags is not Point(1).tags
    with pytest.raises(TypeError, match="takes 4 positional arguments but 5 were given"):
        Point(1, 2, [], "", 5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        Point(1, x=2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="missing the keyword argument 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        Point(1, z=3)  # type: ignore[call-arg]


def test_keyword_only_records_and_post_init() -> None:
    with pytest.raises(TypeError, match="takes 0 positional arguments"):
        Checked(1, 2)  # type: ignore[call-arg]
    assert Checked(low=1, high=2).high == 2
    with pytest.raises(ValueError, match="low > high"):
        Checked(low=3, high=2)


def test_equality_and_repr_follow_the_field_flags() -> None:
    assert Point(1, note="a") == Point(1, note="b")  # compare=False
    assert Point(1) != Point(2)
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"  # repr=False hides `note`
    assert Point(1).__eq__(object()) is NotImplemented


def test_frozen_records_refuse_changes_and_hash_by_value() -> None:
    @record
    class Pair:
        a: int
        b: str

    pair = Pair(1, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        pair.a = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del pair.a
    assert hash(pair) == hash(Pair(1, "x")) and {pair, Pair(1, "x")} == {pair}
    assert dataclasses.replace(pair, b="y") == Pair(1, "y")
    assert [f.name for f in dataclasses.fields(Pair)] == ["a", "b"]


def test_mutable_records_can_change_and_do_not_hash() -> None:
    counter = Counter("c")
    counter.count += 1
    assert counter == Counter("c", 1)
    with pytest.raises(TypeError, match="unhashable"):
        hash(counter)
