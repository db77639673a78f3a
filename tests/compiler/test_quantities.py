"""Units: durations, sizes and cpu parse exactly and format canonically (and round-trip)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hxpc.compiler.quantities import (
    UnitError,
    cores,
    format_cpu,
    format_duration,
    format_size,
    parse_cpu,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize(("text", "ms"), [
    ("10s", 10_000), ("500ms", 500), ("2m", 120_000), ("1h", 3_600_000), ("1d", 86_400_000),
    ("1m30s", 90_000), ("1h1m1s1ms", 3_661_001), ("1.5s", 1500), ("0s", 0), (" 10s ", 10_000),
])
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("bad", ["", "10", "10 s", "s", "10sec", "-1s", "1s 2m", "ten seconds", "1e3s", 10, 1.5,
                                 True, None, ["10s"]])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(UnitError):
        parse_duration(bad)


@pytest.mark.parametrize(("text", "size"), [
    ("512Mi", 512 * 2**20), ("80Gi", 80 * 2**30), ("1.5G", 1_500_000_000), ("1k", 1000), ("1K", 1000),
    ("1Ki", 1024), ("2Ti", 2 * 2**40), ("1Pi", 2**50), ("1Ei", 2**60), ("1E", 10**18), ("100", 100),
    (4096, 4096), ("0.5Ki", 512), ("1.5Gi", 3 * 2**29),
])
def test_parse_size(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["512MB", "1.5", "0.3Ki", "1m", "Mi", "-1Gi", "1 Gi", "", 1.5, True, None])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(UnitError):
        parse_size(bad)


@pytest.mark.parametrize(("value", "millis"), [
    (1, 1000), (2, 2000), (0.5, 500), ("500m", 500), ("2", 2000), ("1.25", 1250), (0.001, 1), ("1m", 1),
])
def test_parse_cpu(value: object, millis: int) -> None:
    assert parse_cpu(value) == millis


@pytest.mark.parametrize("bad", [0, "0", "0m", -1, "-1", "0.0005", "1.5m", "2 cores", "m", True, None, [1]])
def test_bad_cpu(bad: object) -> None:
    with pytest.raises(UnitError):
        parse_cpu(bad)


@pytest.mark.parametrize(("ms", "text"), [(0, "0s"), (500, "500ms"), (1000, "1s"), (90_000, "90s"), (1500, "1500ms")])
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(ms) == text


@pytest.mark.parametrize(("size", "text"), [
    (0, "0"), (1, "1"), (1024, "1Ki"), (2**31, "2Gi"), (80 * 2**30, "80Gi"), (1_500_000_000, "1500M"),
    (1000, "1k"), (10**18, "1E"), (2**60, "1Ei"), (1536, "1536"), (10**12, "1T"), (4 * 10**9, "4G"),
    (1024 * 1000, "1000Ki"), (3 * 2**40, "3Ti"),
])
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize(("millis", "text", "as_cores"), [
    (1000, "1", "1"), (500, "500m", "0.5"), (1500, "1500m", "1.5"), (1250, "1250m", "1.25"), (1, "1m", "0.001"),
    (16000, "16", "16"),
])
def test_format_cpu_and_cores(millis: int, text: str, as_cores: str) -> None:
    assert format_cpu(millis) == text
    assert cores(millis) == as_cores


@given(st.integers(min_value=0, max_value=10**9))
def test_duration_round_trip(ms: int) -> None:
    assert parse_duration(format_duration(ms)) == ms


@given(st.integers(min_value=0, max_value=2**62))
def test_size_round_trip(size: int) -> None:
    assert parse_size(format_size(size)) == size


@given(st.integers(min_value=1, max_value=10**7))
def test_cpu_round_trip(millis: int) -> None:
    assert parse_cpu(format_cpu(millis)) == millis
    assert parse_cpu(cores(millis)) == millis


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h", "d"]))
def test_every_unit_parses(amount: int, unit: str) -> None:
    factor = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]
    assert parse_duration(f"{amount}{unit}") == amount * factor


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from(["", "k", "M", "G", "Ki", "Mi", "Gi"]))
def test_format_size_is_canonical(amount: int, suffix: str) -> None:
    # however a size is spelled, it formats the same way
    size = parse_size(f"{amount}{suffix}")
    assert format_size(size) == format_size(parse_size(str(size)))
