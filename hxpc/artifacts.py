"""Writing a Bundle to the output directory, checking one against it, and diffing two.

The unit of replacement is `<env>/` when all of an environment's targets were
compiled (so a target dropped from an environment disappears), or
`<env>/<target>/` when `--target` narrowed the compile. Each unit is built
aside and swapped in with renames, and nothing is written until every
environment compiled, so a failed compile leaves the previous output as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hxpc.compiler.bundle import Bundle
from hxpc.fsutil import replace_tree


def _units(bundle: Bundle, envs: Iterable[str], targets: Iterable[str]) -> dict[str, dict[str, bytes]]:
    wanted = list(targets)
    units: dict[str, dict[str, bytes]] = {}
    for env in envs:
        if not wanted:
            units[env] = {}
        for target in wanted:
            units[f"{env}/{target}"] = {}
    for path, data in bundle.as_bytes().items():
        for unit in units:
            if path.startswith(unit + "/"):
                units[unit][path[len(unit) + 1:]] = data
    return units


def write_bundle(bundle: Bundle, out_dir: Path, envs: Iterable[str], targets: Iterable[str]) -> list[str]:
    """Replace each compiled unit under out_dir; return the files written, sorted."""
    units = _units(bundle, envs, targets)
    for unit, files in units.items():
        replace_tree(out_dir / unit, files)
    return sorted(bundle.files)


def _existing(out_dir: Path, unit: str) -> dict[str, bytes]:
    root = out_dir / unit
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def check_bundle(bundle: Bundle, out_dir: Path, envs: Iterable[str], targets: Iterable[str]) -> list[str]:
    """Lines `changed|missing|extra <path>` for every file out_dir would need to change."""
    problems: list[str] = []
    for unit, files in _units(bundle, envs, targets).items():
        have = _existing(out_dir, unit)
        for rel in sorted(set(files) | set(have)):
            path = f"{unit}/{rel}"
            if rel not in have:
                problems.append(f"missing {path}")
            elif rel not in files:
                problems.append(f"extra   {path}")
            elif have[rel] != files[rel]:
                problems.append(f"changed {path}")
    return problems


def diff_bundles(old: Bundle, new: Bundle) -> str:
    """A unified diff of two bundles, grouped by `<env>/<target>` so a reviewer reads one target at a time."""
    out: list[str] = []
    group = None
    for path in sorted(set(old.files) | set(new.files)):
        before, after = old.files.get(path), new.files.get(path)
        if before == after:
            continue
        unit = "/".join(path.split("/")[:2])
        if unit != group:
            out.append(f"=== {unit} ===\n")
            group = unit
        import difflib  # here: only `diff` needs it, and compile starts faster without it

        lines = difflib.unified_diff(
            (before or "").splitlines(keepends=True), (after or "").splitlines(keepends=True),
            fromfile=f"a/{path}" if before is not None else "/dev/null",
            tofile=f"b/{path}" if after is not None else "/dev/null")
        for line in lines:
            out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)
