"""Quantities of the spec: durations, Kubernetes size quantities and cpu, parsed and formatted.

Parsed values are plain integers in the smallest unit (milliseconds, bytes,
millicores) so that arithmetic and comparisons are exact; the `format_*`
functions give back a canonical text for artifacts (the same value always
renders the same way, whatever spelling the spec used).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTPE]i?|k|m)?$")
_SIZE_FACTOR = {
    None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_CPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m)?$")


class UnitError(ValueError):
    pass


def parse_duration(value: object) -> int:
    """`10s`, `500ms`, `2m`, `1h`, `1m30s` -> milliseconds."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise UnitError(f"expected a duration such as `10s` or `500ms`, got {value!r}")
    text = value.strip()
    pos, total = 0, Decimal(0)
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += Decimal(match.group(1)) * _DURATION_MS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise UnitError(f"`{value}` is not a duration; write a number and a unit: ms, s, m, h (e.g. `10s`)")
    return int(total)


def parse_size(value: object) -> int:
    """A Kubernetes quantity (`512Mi`, `80Gi`, `1.5G`, plain bytes) -> bytes."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UnitError(f"expected a size such as `512Mi` or `80Gi`, got {value!r}")
    match = _SIZE.match(str(value).strip())
    if not match or match.group(2) == "m":
        raise UnitError(f"`{value}` is not a size; use a Kubernetes quantity such as `512Mi`, `80Gi` or `1.5G`")
    try:
        amount = Decimal(match.group(1)) * _SIZE_FACTOR[match.group(2)]
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        raise UnitError(f"`{value}` is not a size") from None
    if amount != amount.to_integral_value():
        raise UnitError(f"`{value}` is not a whole number of bytes")
    return int(amount)


def parse_cpu(value: object) -> int:
    """Cores (`2`, `0.5`) or millicores (`500m`) -> millicores."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UnitError(f"expected cpu cores such as `0.5` or millicores such as `500m`, got {value!r}")
    match = _CPU.match(str(value).strip())
    if not match:
        raise UnitError(f"`{value}` is not a cpu quantity; write cores (`0.5`, `2`) or millicores (`500m`)")
    amount = Decimal(match.group(1)) * (1 if match.group(2) else 1000)
    if amount != amount.to_integral_value() or amount <= 0:
        raise UnitError(f"`{value}` must be a positive whole number of millicores")
    return int(amount)


def format_duration(ms: int) -> str:
    """Milliseconds -> the shortest exact text: 90000 -> `90s`, 500 -> `500ms`."""
    if ms % 1000:
        return f"{ms}ms"
    return f"{ms // 1000}s"


def format_size(size: int) -> str:
    """Bytes -> a Kubernetes quantity in the largest unit that divides it: 2147483648 -> `2Gi`, 10**12 -> `1T`."""
    # the largest exact unit, binary or decimal: `4G` must not come out as `3906250Ki`
    for suffix in ("Ei", "E", "Pi", "P", "Ti", "T", "Gi", "G", "Mi", "M", "Ki", "k"):
        factor = _SIZE_FACTOR[suffix]
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def format_cpu(millicores: int) -> str:
    """Millicores -> `2` for whole cores, else `500m`."""
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


def cores(millicores: int) -> str:
    """Millicores as a decimal number of cores (`1.5`), for flags that want cores."""
    whole, frac = divmod(millicores, 1000)
    return str(whole) if not frac else f"{whole}.{frac:03d}".rstrip("0")
