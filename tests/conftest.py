"""Shared test fixtures: repository paths, the --update-golden switch, and what tests need from the machine.

A test that needs a tool or a running service calls `require_tool` or
`require`: in CI (`CI` set) a missing one fails the test, elsewhere it skips
with the reason. Every tool a test asks for is listed in `TOOLS` with what
provides it (the test extras, or a Debian package or script of `.ci/setup`),
and tests/test_conftest.py checks those providers exist. Under `CI` any skip
at all fails the run (`pytest_sessionfinish`): a test skipped in CI is a test
that does not run.
"""

from __future__ import annotations

import http.server
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# `pytest --hypothesis-profile=long`: the property tests that take their budget from the profile
# (tests/compiler/test_generated_specs.py) run many more examples than the suite's fixed small budget.
settings.register_profile("long", max_examples=2000, deadline=None)

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "specs"
GOLDEN = REPO / "golden"


def shared_dir() -> Path:
    """The contract folder: `../shared` beside the repo (CI), or /work/shared (a developer's machine)."""
    for candidate in (REPO.parent / "shared", Path("/work/shared")):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("../shared not found beside the repository")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden/ from the current compiler output")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


# Every tool a test may ask `require_tool` for, and what puts it on a fresh machine: `pip:<distribution>`
# (a console script of the test extras, installed next to the interpreter running pytest), `debian:<package>`
# (.ci/install-system.sh), or `script:<file>` (a .ci script that builds it).
TOOLS: dict[str, str] = {
    "kubernetes-validate": "pip:kubernetes-validate",
    "pre-commit": "pip:pre-commit",
    "actionlint": "script:install-actionlint.sh",
    "systemd-analyze": "debian:systemd",
    "promtool": "debian:prometheus",
    "prometheus": "debian:prometheus",
    "docker": "debian:docker.io",
    "ssh": "debian:openssh-client",
    "ssh-keygen": "debian:openssh-client",
    "git": "debian:git",
    "busybox": "debian:busybox-static",
    "curl": "debian:curl",
    "wget": "debian:wget",
    "bash": "debian:bash",
    "grep": "debian:grep",
    "head": "debian:coreutils",
    "timeout": "debian:coreutils",
    "true": "debian:coreutils",
    "sleep": "debian:coreutils",
    "sh": "debian:dash",
}


def find_tool(name: str) -> str | None:
    """The tool's path: the virtualenv running the tests first (its scripts are not on PATH when pytest runs
    as `.venv/bin/python -m pytest`), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def require(what: str, ok: bool) -> None:
    """Go on when `ok`; otherwise fail in CI (where .ci/setup provides everything) and skip elsewhere."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} (.ci/setup provides it)")
    pytest.skip(what)


def require_tool(name: str) -> str:
    """The tool's path; in CI a missing tool fails the test, elsewhere it skips with the reason."""
    if name not in TOOLS:
        raise AssertionError(f"`{name}` is not in conftest.TOOLS: say what provides it on a fresh machine")
    path = find_tool(name)
    require(f"`{name}` is not installed ({TOOLS[name].replace(':', ' ')})", path is not None)
    assert path is not None
    return path


def example_specs() -> list[Path]:
    """Every example spec (overlay files `<name>.<env>.yaml` excluded)."""
    return sorted(p for p in SPECS.glob("*.yaml") if p.name.count(".") == 1)


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    """GET /healthz answers 200, anything else 503: a health endpoint and a broken one."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """The port of a local HTTP server for health-check scripts to probe, on 127.0.0.1."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HealthHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


_SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI a skipped test fails the run: whatever it needed, .ci/setup must provide."""
    if os.environ.get("CI") and _SKIPPED and session.exitstatus == 0:
        shown = "\n".join(f"  {n}" for n in _SKIPPED[:20])
        sys.stderr.write(f"\nci: {len(_SKIPPED)} test(s) skipped under CI, which must skip none:\n{shown}\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
