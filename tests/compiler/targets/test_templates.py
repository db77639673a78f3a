"""Precompiled templates: current, used, and never used once their template changed."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from conftest import REPO

from hxpc.compiler.targets import templates
from hxpc.compiler.targets.templates import precompiled_sources, targets_with_templates, template


@pytest.mark.parametrize("target", targets_with_templates())
def test_committed_precompiled_templates_are_current(target: str) -> None:
    directory = REPO / "targets" / target / "compiled"
    committed = {p.name: p.read_text() for p in directory.glob("*.py")}
    assert committed == precompiled_sources(target), (
        f"targets/{target}/compiled is stale: run `python -m hxpc.compiler.targets.templates`")


@pytest.mark.parametrize("name", ["unit.service.j2", "replica.conf.j2", "_replica.j2"])
def test_templates_come_from_their_precompiled_modules(name: str) -> None:
    loaded = template("systemd", name)
    assert loaded.filename is not None
    assert Path(loaded.filename).parent.name == "compiled"


def test_an_edited_template_is_compiled_from_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    original = jinja2.PackageLoader.get_source

    def edited(self: jinja2.PackageLoader, environment: jinja2.Environment, name: str) -> tuple[str, str, object]:
        source, filename, uptodate = original(self, environment, name)
        return source + "EDITED\n", filename, uptodate

    monkeypatch.setattr(jinja2.PackageLoader, "get_source", edited)
    fresh = jinja2.Environment(loader=templates._PrecompiledLoader("systemd"), keep_trailing_newline=True)
    loaded = fresh.get_template("_replica.j2")
    assert loaded.filename is not None and loaded.filename.endswith("_replica.j2")
    assert "EDITED" in loaded.render()
