"""`hxpc compile`: compile the spec's environments and write them atomically, or check a directory against them.

Kept apart from cli.py so that the plain command line (main.py) reaches it
without importing typer; cli.py's `compile` command calls the same function.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hxpc.artifacts import check_bundle, write_bundle
from hxpc.compiler.compile import compile_spec
from hxpc.compiler.pipeline import environments
from hxpc.diagnostics import render_text
from hxpc.sources import FileSources, base_spec, stable_name


def compile_command(spec: str, env: list[str] | None, target: list[str] | None, output: Path, check: bool,
                    replace_unowned: bool = False) -> int:
    spec = base_spec(spec)  # an overlay file stands for its spec (pre-commit passes whichever changed)
    sources = FileSources(spec)
    envs = env or environments(sources)
    targets = target or []
    bundle = compile_spec(sources, envs, targets, spec_name=stable_name(spec))
    if bundle.warnings:  # what compiles but is not fully honoured, e.g. a model whose server cannot be watched
        sys.stderr.write(render_text(bundle.warnings, bundle.texts))
    if check:
        problems = check_bundle(bundle, output, envs, targets)
        for line in problems:
            sys.stdout.write(line + "\n")
        if problems:
            sys.stderr.write(f"hxpc: {len(problems)} file(s) in {output} differ from what {spec} compiles to; "
                             "run `hxpc compile` and commit the result\n")
            return 2
        sys.stdout.write(f"{output}: up to date ({len(bundle.files)} files)\n")
        return 0
    written = write_bundle(bundle, output, envs, targets, replace_unowned=replace_unowned)
    sys.stdout.write(f"wrote {len(written)} files to {output}/ ({', '.join(envs)})\n")
    return 0
