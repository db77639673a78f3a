"""The process entry point: exit codes for every failure, and a start-up path for plain `hxpc compile`.

`hxpc compile` runs in CI on every push, and for a small stack importing
typer and its click would be a large part of its time. So the plain form,
`compile SPEC` with `--env/-e`, `--target/-t`, `--output/-o`, `--check` and `--replace-unowned`
(each as `--opt value`, `--opt=value` or `-x value`), is read here and goes
straight to `compile_command`. Anything else, including `--help`, a typo or a
missing value, goes to the typer app in cli.py, which owns the command line
and its messages. tests/test_main.py checks that both read every plain form
the same way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

from hxpc.guard import guarded

_VALUE_OPTIONS = {"--env": "env", "-e": "env", "--target": "target", "-t": "target",
                  "--output": "output", "-o": "output"}


class CompileArgs(NamedTuple):
    """The compile command's parameters, as cli.py's `compile_` receives them from typer."""

    spec: str
    env: list[str] | None
    target: list[str] | None
    output: Path
    check: bool
    replace_unowned: bool = False


def plain_compile(argv: list[str]) -> CompileArgs | None:
    """The compile command's parameters if `argv` is a plain `compile` command line, else None."""
    if not argv or argv[0] != "compile":
        return None
    spec: str | None = None
    lists: dict[str, list[str]] = {"env": [], "target": []}
    output, check, replace_unowned = "out", False, False
    args = iter(argv[1:])
    for arg in args:
        name, eq, attached = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _VALUE_OPTIONS:
            value = attached if eq else next(args, None)
            if value is None or value.startswith("-") or not value:
                return None  # click's error message, or its reading of an odd value
            if _VALUE_OPTIONS[name] == "output":
                output = value
            else:
                lists[_VALUE_OPTIONS[name]].append(value)
        elif arg == "--check":
            check = True
        elif arg == "--replace-unowned":
            replace_unowned = True
        elif arg.startswith("-") or spec is not None or not arg:
            return None
        else:
            spec = arg
    if spec is None:
        return None
    return CompileArgs(spec, lists["env"] or None, lists["target"] or None, Path(output), check, replace_unowned)


def run(argv: list[str]) -> int:
    args = plain_compile(argv)
    if args is None:
        from hxpc.cli import main

        return main(argv)
    from hxpc.compile_command import compile_command

    return guarded(lambda: compile_command(*args))


def entrypoint() -> None:
    # hxpc needs no pydantic plugins, and looking them up scans every installed package's
    # entry points (~30 ms); a user can still opt in by setting the variable
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    argv = sys.argv[1:]
    code = run(argv)
    if plain_compile(argv) is not None:
        # A compile has written and closed every file. Tearing the interpreter down, freeing every
        # object of every module, takes ~35 ms: longer than compiling a small stack. Leave without it.
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            pass
        os._exit(code)
    sys.exit(code)
