"""`hxpc explain`: the merged value at a path and the file:line of every layer that set it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hxpc.compiler.explain import explain, parse_path
from hxpc.compiler.pipeline import Resolved, resolve_env
from hxpc.errors import UsageError
from hxpc.sources import FileSources

SPEC = """\
apiVersion: hxpc/v1
project: demo
defaults:
  restart: always
  resources: {cpu: 1, memory: 512Mi}
services:
  db: {image: postgres:16}
  api:
    image: api:1
    replicas: 2
    depends_on: [db]
    resources: {cpu: 2}
targets: {kubernetes: {}}
environments:
  prod:
    services:
      api: {replicas: 4}
"""

OVERLAY = """\
services:
  api:
    replicas: 6
"""


@pytest.fixture
def resolved(tmp_path: Path) -> Resolved:
    (tmp_path / "s.yaml").write_text(SPEC, encoding="utf-8")
    (tmp_path / "s.prod.yaml").write_text(OVERLAY, encoding="utf-8")
    return resolve_env(FileSources(str(tmp_path / "s.yaml")), "prod")


def run(resolved: Resolved, path: str) -> dict[str, object]:
    return explain(resolved.stack, resolved.merged, path)


def test_parse_path() -> None:
    assert parse_path("services.api.replicas") == ("services", "api", "replicas")
    assert parse_path("services.api.depends_on.0") == ("services", "api", "depends_on", 0)
    assert parse_path("services.api.depends_on[1]") == ("services", "api", "depends_on", 1)
    assert parse_path("") == ()


def test_every_layer_in_order(resolved: Resolved, tmp_path: Path) -> None:
    report = run(resolved, "services.api.replicas")
    assert report["value"] == 6
    assert report["default"] is False
    assert report["env"] == "prod"
    assert report["layers"] == [
        {"source": "base", "file": str(tmp_path / "s.yaml"), "line": 10, "col": 15},
        {"source": "environments.prod", "file": str(tmp_path / "s.yaml"), "line": 17, "col": 23},
        {"source": "overlay", "file": str(tmp_path / "s.prod.yaml"), "line": 3, "col": 15},
    ]


def test_value_from_defaults_points_at_defaults(resolved: Resolved) -> None:
    report = run(resolved, "services.db.restart")
    assert report["value"] == "always"
    assert [(layer["line"], layer["col"]) for layer in report["layers"]] == [(4, 12)]  # type: ignore[index, union-attr]


def test_deep_merged_mapping(resolved: Resolved) -> None:
    report = run(resolved, "services.api.resources")
    assert report["value"] == {"cpu": 2, "memory": "512Mi"}
    assert [layer["line"] for layer in report["layers"]] == [5, 12]  # type: ignore[index, union-attr]


def test_list_items(resolved: Resolved) -> None:
    report = run(resolved, "services.api.depends_on[0]")
    assert report["value"] == "db"
    assert [(layer["line"], layer["col"]) for layer in report["layers"]] == [(11, 18)]  # type: ignore[index, union-attr]


def test_a_value_no_layer_set_shows_the_default(resolved: Resolved) -> None:
    report = run(resolved, "services.db.replicas")
    assert report == {"path": "services.db.replicas", "env": "prod", "value": 1, "default": True, "layers": []}
    assert run(resolved, "services.db.resources.gpus")["value"] == 0


def test_unknown_path_is_a_usage_error(resolved: Resolved) -> None:
    with pytest.raises(UsageError) as info:
        run(resolved, "services.nope.replicas")
    assert info.value.exit_code == 3
    assert "services.nope.replicas" in str(info.value)
    with pytest.raises(UsageError):
        run(resolved, "services.api.depends_on.5")


def test_other_environment_without_overlay(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SPEC.replace("  prod:", "  dev: {}\n  prod:"), encoding="utf-8")
    dev = resolve_env(FileSources(str(tmp_path / "s.yaml")), "dev")
    report = explain(dev.stack, dev.merged, "services.api.replicas")
    assert report["value"] == 2
    assert [layer["source"] for layer in report["layers"]] == ["base"]  # type: ignore[index, union-attr]
