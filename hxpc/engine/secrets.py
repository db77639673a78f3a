"""Secret values, read from the environment variables or files the spec names: only in memory, only at need.

`read_secrets(names, sources)` returns the values it could read and, for every
one it could not, a line naming the secret and why (variable not set, file
unreadable, a NUL character no environment can hold), so a backend's
preflight can refuse the apply naming every missing secret at once. A file's
one trailing newline is not part of the value (what `echo token > file`
writes).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Protocol


class SecretSource(Protocol):
    @property
    def env(self) -> str | None: ...

    @property
    def file(self) -> str | None: ...


def read_secrets(names: Iterable[str], sources: Mapping[str, SecretSource],
                 environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    problems: list[str] = []
    for name in sorted(set(names)):
        source = sources.get(name)
        if source is None:
            problems.append(f"secret `{name}` is not declared under `secrets:`")
            continue
        if source.env:
            value = env.get(source.env)
            if value is None:
                problems.append(f"secret `{name}`: environment variable {source.env} is not set")
                continue
        else:
            try:
                with open(source.file or "", encoding="utf-8") as handle:
                    value = handle.read().removesuffix("\n")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"secret `{name}`: cannot read {source.file}: {exc.__class__.__name__}")
                continue
        if "\0" in value:
            problems.append(f"secret `{name}`: contains a NUL character, which an environment cannot hold")
            continue
        values[name] = value
    return values, problems
