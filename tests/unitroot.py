"""A root tree for `systemd-analyze verify --root=`, shared by the systemd target's tests and the generated-spec
tests: the machine's unit library, stub programs the units exec, a stub docker.service, and a host's files."""

from __future__ import annotations

import shutil
from pathlib import Path

# what every compiled unit may exec, besides a native service's own program
STUB_PROGRAMS = ("/usr/bin/docker", "/usr/bin/podman", "/usr/bin/env")
UNIT_LIBRARY = Path("/usr/lib/systemd/system")


def unit_root(root: Path, library: Path, files: dict[str, str], programs: tuple[str, ...] = ()) -> Path:
    """`root` (emptied first) holding the unit library copied from `library`, the stubs and the host's files."""
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(library, root / "usr/lib/systemd/system", symlinks=True)
    for program in (*STUB_PROGRAMS, *programs):
        stub = root / program.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    (etc / "docker.service").write_text("[Unit]\nDescription=stub\n[Service]\nExecStart=/usr/bin/docker\n")
    for rel, text in files.items():
        (etc / rel).parent.mkdir(parents=True, exist_ok=True)
        (etc / rel).write_text(text)
    return root
