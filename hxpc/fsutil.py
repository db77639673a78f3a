"""Atomic file and directory writes: a reader sees the old content or the new, never half.

Files are written to a temporary sibling, fsynced, and renamed over the target;
a whole output tree is built in a temporary sibling directory (`stage_tree`)
and swapped in with two renames, so a failed compile leaves the previous
output untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path


def write_atomic(path: Path | str, text: str | bytes, mode: int = 0o644) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Staged:
    """A directory built aside (`stage_tree`), to be swapped in for its target or discarded."""

    def __init__(self, target: Path, staging: Path):
        self.target, self.staging = target, staging

    def swap_in(self) -> None:
        """Two renames: the old tree aside, the new one in; then the old one removed."""
        old = None
        if self.target.exists() or self.target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old.", dir=self.target.parent))
            os.rmdir(old)
            os.rename(self.target, old)
        os.rename(self.staging, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def _keep(source: Path, dest: Path) -> None:
    """`dest` becomes the same file as `source` (a hard link), or a copy where links are impossible."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, dest, follow_symlinks=False)


def stage_tree(directory: Path | str, files: Mapping[str, bytes], keep: Iterable[str] = ()) -> Staged:
    """Build, beside `directory`, a tree holding `files` (relative path -> content) and the entries `keep`
    names from the current `directory` (linked, not copied: they stay the same files), with the current
    directories' modes. Nothing is changed in `directory`; on failure nothing is left behind."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new.", dir=target.parent))
    try:
        for rel in keep:
            _keep(target / rel, staging / rel)
        if target.is_dir() and not target.is_symlink():
            for root, dirs, _ in os.walk(target):  # the user's own (maybe empty) folders, with their modes
                for name in dirs:
                    here = Path(root) / name
                    if not here.is_symlink():
                        made = staging / here.relative_to(target)
                        made.mkdir(parents=True, exist_ok=True)
                        os.chmod(made, os.stat(here).st_mode & 0o7777)
        for rel, data in files.items():
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as handle:
                handle.write(data)
        os.chmod(staging, (os.stat(target).st_mode & 0o7777) if target.is_dir() else 0o755)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Staged(target, staging)
