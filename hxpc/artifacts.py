"""Writing a Bundle to the output directory, checking one against it, and diffing two.

Compile never deletes what it did not write. Each environment directory
holds a manifest (`.hxpc-manifest.json`) of the files hxpc wrote there and
their hashes; a compile replaces exactly those (and deletes the ones the spec
no longer makes), and leaves every other file where it is. A file in the way
that hxpc did not write, or one it wrote that was changed since, stops the
compile before anything is changed, naming each (`UnownedFiles`, exit 4),
unless `replace_unowned` says to replace them anyway. A file whose bytes are
already what the compile would write is not in the way (so an output written
before manifests existed is adopted without a word). Every environment is
built aside first, with the files kept hard-linked in (so they stay the same
files), and swapped in with two renames only when all of them were built: a
compile that fails, even for a full disk (`WriteFailed`, exit 1), leaves the
previous output as it was. `--target` narrows what is replaced to those
targets' folders; the environment's other files are kept as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hxpc.compiler.bundle import Bundle
from hxpc.errors import UnownedFiles, WriteFailed
from hxpc.fsutil import Staged, stage_tree

MANIFEST = ".hxpc-manifest.json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(files: Mapping[str, str]) -> bytes:
    """The manifest of an environment directory: every file hxpc wrote there and its hash, sorted."""
    return (json.dumps({"format": 1, "written_by": "hxpc", "files": dict(sorted(files.items()))}, indent=1)
            + "\n").encode()


def read_manifest(env_dir: Path) -> dict[str, str]:
    """What hxpc wrote in `env_dir` (relative path -> hash); empty when there is no readable manifest."""
    try:
        data = json.loads((env_dir / MANIFEST).read_text(encoding="utf-8"))
        files = data["files"] if isinstance(data, dict) and data.get("format") == 1 else {}
    except (OSError, ValueError, KeyError):
        return {}
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def _existing(env_dir: Path) -> dict[str, Path]:
    """Every entry under `env_dir` that is not a directory (files, symlinks, others), by relative path."""
    if not env_dir.is_dir() or env_dir.is_symlink():
        return {}
    found: dict[str, Path] = {}
    for root, dirs, files in os.walk(env_dir):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = Path(root) / name
            found[path.relative_to(env_dir).as_posix()] = path
    found.pop(MANIFEST, None)
    return found


def _content(path: Path) -> bytes | None:
    """A regular file's bytes; None for anything else (a symlink is never hxpc's)."""
    if path.is_symlink() or not path.is_file():
        return None
    return path.read_bytes()


@dataclass
class _EnvPlan:
    """What writing one environment directory does: new files, files kept, and what stands in the way."""

    env_dir: Path
    files: dict[str, bytes]
    keep: list[str] = field(default_factory=list)
    manifest: dict[str, str] = field(default_factory=dict)
    in_the_way: list[str] = field(default_factory=list)


def _in_scope(rel: str, targets: list[str]) -> bool:
    return not targets or any(rel.startswith(t + "/") for t in targets)


def _plan_env(env_dir: Path, files: dict[str, bytes], targets: list[str]) -> _EnvPlan:
    plan = _EnvPlan(env_dir, files, manifest={rel: _digest(data) for rel, data in files.items()})
    if env_dir.is_symlink() or (env_dir.exists() and not env_dir.is_dir()):
        plan.in_the_way.append(f"{env_dir.name} (not hxpc's, where hxpc writes a folder)")
        return plan
    written = read_manifest(env_dir)
    existing = _existing(env_dir)
    parents = {p for rel in files for p in _parents(rel)}
    for rel, path in sorted(existing.items()):
        data = _content(path)
        ours = data is not None and written.get(rel) == _digest(data)
        shown = f"{env_dir.name}/{rel}"
        if rel in files:
            if not ours and data != files[rel]:
                plan.in_the_way.append(f"{shown} ({_why(rel, written)})")
        elif rel in parents:
            plan.in_the_way.append(f"{shown} (not hxpc's, where hxpc writes a folder)")
        elif _in_scope(rel, targets) and rel in written:
            if not ours:  # hxpc wrote it, someone changed it, and the spec no longer makes it
                plan.in_the_way.append(f"{shown} (changed since hxpc wrote it; the compile would delete it)")
        else:
            plan.keep.append(rel)
            if ours and rel in written:  # another target's file, outside what `--target` compiles
                plan.manifest[rel] = written[rel]
    for rel in files:
        blocked = next((p for p in _parents(rel) if p in existing), None)
        if blocked is not None and f"{env_dir.name}/{blocked}" not in " ".join(plan.in_the_way):
            plan.in_the_way.append(f"{env_dir.name}/{blocked} (not hxpc's, where hxpc writes a folder)")
    return plan


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _why(rel: str, written: Mapping[str, str]) -> str:
    return "changed since hxpc wrote it" if rel in written else "not written by hxpc"


def _env_files(bundle: Bundle, env: str) -> dict[str, bytes]:
    prefix = env + "/"
    return {path[len(prefix):]: data for path, data in bundle.as_bytes().items() if path.startswith(prefix)}


def write_bundle(bundle: Bundle, out_dir: Path, envs: Iterable[str], targets: Iterable[str],
                 replace_unowned: bool = False) -> list[str]:
    """Write each environment under out_dir as the module says; return the files written, sorted."""
    wanted = list(targets)
    plans = [_plan_env(out_dir / env, _env_files(bundle, env), wanted) for env in envs]
    in_the_way = [f"{out_dir}/{p}" for plan in plans for p in plan.in_the_way]
    if in_the_way and not replace_unowned:
        raise UnownedFiles(in_the_way)
    staged: list[Staged] = []
    try:
        for plan in plans:
            files = {**plan.files, MANIFEST: manifest_bytes(plan.manifest)}
            staged.append(stage_tree(plan.env_dir, files, keep=plan.keep))
    except OSError as exc:
        for s in staged:
            s.discard()
        raise WriteFailed(f"cannot write {out_dir}: {exc.strerror or exc}"
                          f"{f' ({exc.filename})' if exc.filename else ''}; "
                          f"nothing in {out_dir} was changed") from exc
    for s in staged:
        s.swap_in()
    return sorted(bundle.files)


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


def check_bundle(bundle: Bundle, out_dir: Path, envs: Iterable[str], targets: Iterable[str]) -> list[str]:
    """Lines `changed|missing|extra <path>` for every file a compile into out_dir would write or delete.

    Files hxpc did not write are not compared: a compile leaves them alone. The manifest is one of the
    files a whole environment's compile writes, so an output written before manifests is reported once.
    """
    problems: list[str] = []
    for unit, files in _units(bundle, envs, targets).items():
        env = unit.split("/")[0]
        env_dir = out_dir / env
        written = read_manifest(env_dir)
        sub = unit[len(env) + 1:]
        prefix = f"{sub}/" if sub else ""
        if not sub:
            manifest = {rel: _digest(data) for rel, data in files.items()}
            files = {**files, MANIFEST: manifest_bytes(manifest)}
        have = {rel[len(prefix):]: path for rel, path in _existing(env_dir).items() if rel.startswith(prefix)}
        if not sub and (env_dir / MANIFEST).is_file():
            have[MANIFEST] = env_dir / MANIFEST
        for rel in sorted(set(files) | set(have)):
            path = f"{unit}/{rel}"
            if rel not in have:
                problems.append(f"missing {path}")
            elif rel not in files:
                if prefix + rel in written:  # hxpc's own file that the spec no longer makes
                    problems.append(f"extra   {path}")
            elif _content(have[rel]) != files[rel]:
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
