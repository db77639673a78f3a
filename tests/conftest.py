"""Shared test fixtures: repository paths, the --update-golden switch, and tool requirements."""

from __future__ import annotations

import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


def require_tool(name: str) -> str:
    """The tool's path; in CI a missing tool fails the test, elsewhere it skips with the reason."""
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
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
