"""Where spec text comes from: the work tree, or a git revision for `hxpc diff`.

A `Sources` names the main spec file and the overlay files beside it
(`<name>.<env>.yaml`) and reads their text. The compiler only ever sees text
through this interface, which keeps it pure and lets `diff --base` compile the
spec as it was at any revision, overlays included.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Protocol

from hxpc.diagnostics import Diagnostic, Span
from hxpc.errors import SpecError
from hxpc.limits import MAX_FILE_BYTES

_ENV_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


class Sources(Protocol):
    @property
    def spec_file(self) -> str: ...

    def read(self, name: str) -> str: ...

    def overlays(self) -> dict[str, str]:
        """Environment name -> overlay file name, for every `<name>.<env>.yaml` found."""
        ...

    def read_beside(self, path: str) -> str:
        """A file the spec names (a model's config.json), relative to the spec's directory unless absolute."""
        ...


def _overlay_env(spec_name: str, candidate: str) -> str | None:
    stem = spec_name.rsplit(".", 1)[0]
    for suffix in (".yaml", ".yml"):
        if candidate.startswith(stem + ".") and candidate.endswith(suffix):
            middle = candidate[len(stem) + 1 : -len(suffix)]
            if _ENV_NAME.match(middle):
                return middle
    return None


def base_spec(path: str) -> str:
    """The spec a file belongs to: an overlay `<name>.<env>.yaml` with `<name>.yaml` beside it belongs to that
    spec (an overlay alone is not a spec); any other file is a spec of its own."""
    file = Path(path)
    parts = file.name.split(".")
    if len(parts) >= 3 and parts[-1] in ("yaml", "yml"):
        for suffix in (".yaml", ".yml"):
            base = file.with_name(".".join(parts[:-2]) + suffix)
            if base.is_file() and _overlay_env(base.name, file.name) is not None:
                return str(base)
    return path


def specs_of(paths: list[str]) -> list[str]:
    """The specs `paths` name, overlays replaced by their spec, each once, in the order given."""
    return list(dict.fromkeys(base_spec(p) for p in paths))


def too_large(file: str, size: int) -> Diagnostic:
    return Diagnostic("HX110", f"{file} is {size:,} bytes; hxpc reads spec files of at most {MAX_FILE_BYTES:,}",
                      Span(file, 1, 1, 1, 1), hint="split the stack into several specs")


def decode(data: bytes, name: str) -> str:
    """The file's text; a byte that is not UTF-8 is an error at its line and column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8", "replace")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        shown = data.decode("utf-8", "replace")
        raise SpecError([Diagnostic("HX106", f"{name} is not UTF-8 text: byte 0x{data[exc.start]:02x} at "
                                             f"line {line}", Span(name, line, col, line, col + 1),
                                    hint="save the file as UTF-8")], {name: shown}) from None


class FileSources:
    """The spec and its overlays as files on disk; names are shown as the user gave them."""

    def __init__(self, spec_path: str):
        self._path = Path(spec_path)
        self._display = spec_path

    @property
    def spec_file(self) -> str:
        return self._display

    def read(self, name: str) -> str:
        try:
            with open(name, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)  # never more: a huge file is refused, not read
        except OSError as exc:
            raise SpecError([Diagnostic("HX106", f"cannot read {name}: {exc.strerror or exc}",
                                        hint="check the path and that the file is UTF-8 text")]) from None
        if len(data) > MAX_FILE_BYTES:
            raise SpecError([too_large(name, Path(name).stat().st_size)])
        return decode(data, name)


    def read_beside(self, path: str) -> str:
        return self.read(str(self._path.parent / path))

    def overlays(self) -> dict[str, str]:
        directory = self._path.parent
        if not directory.is_dir():
            return {}
        found: dict[str, str] = {}
        for entry in sorted(directory.iterdir()):
            env = _overlay_env(self._path.name, entry.name)
            if env is not None and entry.is_file():
                shown = PurePosixPath(self._display).parent / entry.name
                found[env] = str(shown) if "/" in self._display else entry.name
        return found


class GitSources:
    """The spec and its overlays as they were at a git revision of the work tree's repository."""

    def __init__(self, spec_path: str, rev: str):
        self._display = spec_path
        self._rev = rev
        path = Path(spec_path).resolve()
        self._cwd = path.parent
        top = self._git("rev-parse", "--show-toplevel").strip()
        self._repo_rel = path.relative_to(Path(top).resolve()).as_posix()
        self._git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")

    def _git(self, *args: str) -> str:
        return self._git_bytes(*args).decode("utf-8", "replace")

    def _git_bytes(self, *args: str) -> bytes:
        import subprocess  # here: only `diff --base` reads through git, and compile starts faster without it

        try:
            done = subprocess.run(["git", *args], cwd=self._cwd, capture_output=True, check=False)
        except OSError as exc:
            raise SpecError([Diagnostic("HX106", f"cannot run git: {exc.strerror}")]) from None
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip() or done.returncode
            raise SpecError([Diagnostic(
                "HX106", f"git {' '.join(args)} failed: {said}",
                hint="is the spec inside a git repository, and does the revision exist?")])
        return done.stdout

    @property
    def spec_file(self) -> str:
        return f"{self._rev}:{self._display}"

    def read(self, name: str) -> str:
        rel = name.split(":", 1)[1] if name.startswith(f"{self._rev}:") else name
        repo_path = (PurePosixPath(self._repo_rel).parent / PurePosixPath(rel).name).as_posix()
        return decode(self._git_bytes("show", f"{self._rev}:{repo_path}"), name)

    def read_beside(self, path: str) -> str:
        """As it was at the revision; an absolute path is outside the repository and read as it is now."""
        if PurePosixPath(path).is_absolute():
            return FileSources(path).read(path)
        parts: list[str] = []
        for part in (PurePosixPath(self._repo_rel).parent / path).parts:
            if part == "..":
                if not parts:
                    raise SpecError([Diagnostic("HX106", f"`{path}` is outside the repository")])
                parts.pop()
            elif part != ".":
                parts.append(part)
        return self._git("show", f"{self._rev}:{'/'.join(parts)}")

    def spec_exists(self) -> bool:
        """Whether the spec file existed at the revision (a new spec diffs against nothing)."""
        try:
            self._git("cat-file", "-e", f"{self._rev}:{self._repo_rel}")
        except SpecError:
            return False
        return True

    def overlays(self) -> dict[str, str]:
        folder = PurePosixPath(self._repo_rel).parent.as_posix()
        # --full-tree: the folder is relative to the repository's top, not to the spec's directory
        where = [f"{folder}/"] if folder != "." else []
        listing = self._git("ls-tree", "--full-tree", "--name-only", self._rev, "--", *where)
        found: dict[str, str] = {}
        display_dir = PurePosixPath(self._display).parent
        for line in sorted(listing.splitlines()):
            name = PurePosixPath(line).name
            env = _overlay_env(PurePosixPath(self._repo_rel).name, name)
            if env is not None:
                found[env] = f"{self._rev}:{(display_dir / name).as_posix()}"
        return found


def stable_name(spec_path: str) -> str:
    """The spec's name as written into artifact headers: the same however the user spelled the path.

    Relative to the git work tree that holds it, else the file name: headers are
    part of what apply compares, so `./specs/x.yaml` and `specs/x.yaml` (or a
    run from another directory) must not look like a change.
    """
    path = Path(spec_path).resolve()
    for parent in path.parents:
        if (parent / ".git").exists():
            return path.relative_to(parent).as_posix()
    return path.name
