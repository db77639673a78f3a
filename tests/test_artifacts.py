"""Compile never deletes what it did not write; a full disk leaves the previous output as it was.

Each environment directory carries `.hxpc-manifest.json`, the files hxpc wrote and their hashes. The
disk-full case runs the real command line on a real small tmpfs (mounted here: the tests run as root).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, require

from hxpc.artifacts import MANIFEST

SPEC = str(REPO / "specs" / "hxp.yaml")


def _hxpc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hxpc", *args], capture_output=True, text=True, timeout=300)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _small_spec(tmp_path: Path, services: dict[str, int]) -> Path:
    spec = tmp_path / "s.yaml"
    body = "".join(f"  {name}: {{image: nginx:1.27, ports: {{http: {port}}}}}\n" for name, port in services.items())
    spec.write_text(f"apiVersion: hxpc/v1\nproject: demo\nservices:\n{body}"
                    "targets: {compose: {}, kubernetes: {}}\n")
    return spec


def test_a_file_the_user_keeps_in_the_output_survives_every_compile(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _hxpc("compile", SPEC, "-o", str(out)).returncode == 0
    notes = out / "dev" / "NOTES.md"
    notes.write_text("my notes\n")
    (out / "dev" / "drafts").mkdir(mode=0o700)
    (out / "dev" / "compose" / "override.yaml").write_text("services: {}\n")
    (out / "dev" / "link").symlink_to("NOTES.md")
    inode = notes.stat().st_ino
    for extra in ([], ["-e", "dev"], ["-e", "dev", "-t", "compose"]):
        done = _hxpc("compile", SPEC, "-o", str(out), *extra)
        assert done.returncode == 0, done.stderr
        assert notes.read_text() == "my notes\n" and notes.stat().st_ino == inode  # the same file, never copied
        assert (out / "dev" / "compose" / "override.yaml").read_text() == "services: {}\n"
        assert (out / "dev" / "drafts").is_dir() and (out / "dev" / "drafts").stat().st_mode & 0o777 == 0o700
        assert os.readlink(out / "dev" / "link") == "NOTES.md"
    manifest = json.loads((out / "dev" / MANIFEST).read_text())
    assert "NOTES.md" not in manifest["files"] and "compose/compose.yaml" in manifest["files"]
    check = _hxpc("compile", SPEC, "-o", str(out), "--check")
    assert check.returncode == 0, check.stdout  # what compile leaves alone is no difference either


def test_a_file_hxpc_did_not_write_in_its_way_stops_the_compile_before_anything_changes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = _small_spec(tmp_path, {"web": 8080})
    (out / "default" / "compose").mkdir(parents=True)
    (out / "default" / "compose" / "compose.yaml").write_text("mine\n")
    (out / "default" / "kubernetes").write_text("a file where hxpc writes a folder\n")
    before = _tree(out)
    done = _hxpc("compile", str(spec), "-o", str(out))
    assert done.returncode == 4, done.stderr
    assert f"{out}/default/compose/compose.yaml (not written by hxpc)" in done.stderr
    assert f"{out}/default/kubernetes (not hxpc's, where hxpc writes a folder)" in done.stderr
    assert "--replace-unowned" in done.stderr
    assert _tree(out) == before and sorted(p.name for p in out.iterdir()) == ["default"]
    (out / "default" / "kubernetes").unlink()
    done = _hxpc("compile", str(spec), "-o", str(out), "--replace-unowned")
    assert done.returncode == 0, done.stderr
    assert (out / "default" / "compose" / "compose.yaml").read_text() != "mine\n"


def test_generated_files_the_spec_no_longer_makes_are_deleted_unless_edited(tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = _small_spec(tmp_path, {"web": 8080, "api": 8090})
    assert _hxpc("compile", str(spec), "-o", str(out)).returncode == 0
    api = out / "default" / "kubernetes" / "api.yaml"
    assert api.is_file()
    _small_spec(tmp_path, {"web": 8080})
    assert _hxpc("compile", str(spec), "-o", str(out)).returncode == 0
    assert not api.exists()  # hxpc's own, unchanged: pruned
    _small_spec(tmp_path, {"web": 8080, "api": 8090})
    assert _hxpc("compile", str(spec), "-o", str(out)).returncode == 0
    api.write_text(api.read_text() + "# edited\n")
    _small_spec(tmp_path, {"web": 8080})
    before = _tree(out)
    done = _hxpc("compile", str(spec), "-o", str(out))
    assert done.returncode == 4 and "kubernetes/api.yaml (changed since hxpc wrote it; the compile would delete it)" \
        in done.stderr
    assert _tree(out) == before
    check = _hxpc("compile", str(spec), "-o", str(out), "--check")
    assert check.returncode == 2 and "extra   default/kubernetes/api.yaml" in check.stdout


def test_an_output_written_before_manifests_is_adopted_when_it_matches(tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = _small_spec(tmp_path, {"web": 8080})
    assert _hxpc("compile", str(spec), "-o", str(out)).returncode == 0
    (out / "default" / MANIFEST).unlink()
    check = _hxpc("compile", str(spec), "-o", str(out), "--check")
    assert check.returncode == 2 and check.stdout.splitlines() == [f"missing default/{MANIFEST}"]
    assert _hxpc("compile", str(spec), "-o", str(out)).returncode == 0  # same bytes: nothing is lost
    assert (out / "default" / MANIFEST).is_file()


def test_a_narrowed_compile_keeps_the_other_targets_as_hxpc_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = _small_spec(tmp_path, {"web": 8080})
    assert _hxpc("compile", str(spec), "-o", str(out)).returncode == 0
    whole = json.loads((out / "default" / MANIFEST).read_text())
    _small_spec(tmp_path, {"web": 8081})
    assert _hxpc("compile", str(spec), "-o", str(out), "-t", "compose").returncode == 0
    narrowed = json.loads((out / "default" / MANIFEST).read_text())["files"]
    assert narrowed["kubernetes/web.yaml"] == whole["files"]["kubernetes/web.yaml"]
    assert narrowed["compose/compose.yaml"] != whole["files"]["compose/compose.yaml"]
    assert _hxpc("compile", str(spec), "-o", str(out)).returncode == 0  # the kubernetes files are still hxpc's


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 4 MiB tmpfs: real ENOSPC from the kernel."""
    mount = Path(f"/tmp/hxpc-full-{uuid.uuid4().hex[:8]}")
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    require(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}", done.returncode == 0)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
        shutil.rmtree(mount, ignore_errors=True)


def test_a_full_disk_fails_with_the_os_error_and_leaves_the_output_intact(small_disk: Path) -> None:
    out = small_disk / "out"
    first = _hxpc("compile", SPEC, "-o", str(out))
    assert first.returncode == 0, first.stderr
    (out / "prod" / "NOTES.md").write_text("my notes\n")
    before = _tree(out)
    used = sum(len(data) for data in before.values())
    free = shutil.disk_usage(small_disk).free
    with open(small_disk / "filler", "wb") as filler:  # leave less room than a second copy of the output needs
        filler.write(b"\0" * max(0, free - used // 4))
    done = _hxpc("compile", SPEC, "-o", str(out))
    assert done.returncode == 1, done.stderr
    assert "No space left on device" in done.stderr and "nothing in" in done.stderr
    assert "internal error" not in done.stderr
    assert _tree(out) == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "out"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    (small_disk / "filler").unlink()
    assert _hxpc("compile", SPEC, "-o", str(out)).returncode == 0
    assert (out / "prod" / "NOTES.md").read_text() == "my notes\n"


def test_a_file_or_link_where_an_environment_folder_goes_is_in_the_way(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    spec = _small_spec(tmp_path, {"web": 8080})
    (out / "default").write_text("mine\n")
    done = _hxpc("compile", str(spec), "-o", str(out))
    assert done.returncode == 4 and "default (not hxpc's, where hxpc writes a folder)" in done.stderr
    assert (out / "default").read_text() == "mine\n" and sorted(p.name for p in out.iterdir()) == ["default"]
