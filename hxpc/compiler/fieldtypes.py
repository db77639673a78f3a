"""The types of spec fields shared by every part of the spec: names, quantities, ports, counts.

Each is an `Annotated` type whose rules (fieldrules.Bounds, fieldrules.Check)
both validators read: durations, sizes and cpu are parsed into integers
(milliseconds, bytes, millicores); names of hosts, models, services, secrets,
ports and volumes are DNS labels. `SPEC_CONFIG` is the pydantic configuration
every spec class carries. spec.py and the targets' own `Config` classes
(`targets.<name>` in the spec) are built from these, so a target module can
define its part of the spec without importing spec.py.
"""

# No `from __future__ import annotations` here: the field types are evaluated once, as the classes are
# built, instead of as strings each time the validators read them (typing.get_type_hints).
import re
from typing import Annotated, Any, Literal

from hxpc import limits
from hxpc.compiler import quantities
from hxpc.compiler.fieldrules import Bounds, Check, reject

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _unit(parser: Any, kind: str, largest: int, shown: str) -> Any:
    def parse(value: object) -> int:
        if isinstance(value, str) and len(value) > limits.MAX_QUANTITY_CHARS:
            reject(kind, "`{start}...` is {n} characters long: not a {kind}",
                   {"start": value[:20], "n": len(value), "kind": kind})
        try:
            amount = int(parser(value))
        except quantities.UnitError as exc:
            reject(kind, str(exc))
        if amount > largest:
            reject("range", "`{value}` is more than the largest {kind} hxpc takes, {largest}",
                   {"value": value, "kind": kind, "largest": shown})
        return amount

    return parse


def _dns_label(max_len: int) -> Any:
    def check(value: str) -> str:
        if len(value) > max_len or not _DNS_LABEL.match(value):
            reject("name", "`{value}` is not a valid name: use lowercase letters, digits and `-`, "
                           "starting and ending with a letter or digit, at most {max_len} characters",
                   {"value": value, "max_len": max_len})
        return value

    return check


def _env_var(value: str) -> str:
    if not _ENV_VAR.match(value):
        reject("name", "`{value}` is not a valid environment variable name (letters, digits, `_`)",
               {"value": value})
    return value


def _env_value(value: object) -> object:
    # YAML turns `PORT: 8080` into an int; environment values are text either way
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


Name = Annotated[str, Check(_dns_label(63), json_schema={"type": "string", "pattern": _DNS_LABEL.pattern,
                                                         "maxLength": 63})]
ProjectName = Annotated[str, Check(_dns_label(40), json_schema={"type": "string", "pattern": _DNS_LABEL.pattern,
                                                                "maxLength": 40})]
EnvVar = Annotated[str, Check(_env_var, json_schema={"type": "string", "pattern": _ENV_VAR.pattern})]
EnvValue = Annotated[str, Check(_env_value, before=True, json_schema={"type": ["string", "number", "boolean"]})]
Duration = Annotated[int, Check(_unit(quantities.parse_duration, "duration", limits.MAX_DURATION_MS, "7d"),
                                before=True,
                                json_schema={"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$",
                                             "maxLength": limits.MAX_QUANTITY_CHARS,
                                             "description": "at most 7d", "examples": ["10s", "500ms", "2m"]})]
Size = Annotated[int, Check(_unit(quantities.parse_size, "size", limits.MAX_SIZE_BYTES, "8Ei - 1 byte"),
                            before=True,
                            json_schema={"type": ["string", "integer"], "maximum": limits.MAX_SIZE_BYTES,
                                         "pattern": r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?|k)?$",
                                         "maxLength": limits.MAX_QUANTITY_CHARS,
                                         "examples": ["512Mi", "80Gi", "1.5G"]})]
Cpu = Annotated[int, Check(_unit(quantities.parse_cpu, "cpu", limits.MAX_MILLICORES,
                                 f"{limits.MAX_MILLICORES}m"), before=True,
                           json_schema={"anyOf": [{"type": "number", "exclusiveMinimum": 0,
                                                   "maximum": limits.MAX_MILLICORES // 1000},
                                                  {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?m?$",
                                                   "maxLength": limits.MAX_QUANTITY_CHARS}],
                                        "examples": [0.5, 2, "500m"]})]
Port = Annotated[int, Bounds(ge=1, le=65535)]
Count = Annotated[int, Bounds(ge=0)]
Replicas = Annotated[int, Bounds(ge=0, le=limits.MAX_REPLICAS)]
Gpus = Annotated[int, Bounds(ge=0, le=limits.MAX_GPUS)]
Restart = Literal["always", "on-failure", "never"]
Command = Annotated[list[str], Bounds(min_length=1)]

# pydantic reads this from every class (a plain dict: pydantic's ConfigDict is a TypedDict).
# allow_inf_nan=False: `params_b: .inf` is a typo to report, not a number to compute a budget from.
# Field docstrings are the JSON Schema's descriptions.
SPEC_CONFIG: dict[str, Any] = {"extra": "forbid", "frozen": True, "allow_inf_nan": False,
                                    "use_attribute_docstrings": True}
