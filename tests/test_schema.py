"""The committed JSON Schemas are generated from the models, and the example specs obey them."""

from __future__ import annotations

import json

import jsonschema
import pytest
from conftest import REPO, SPECS, example_specs
from ruamel.yaml import YAML

from hxpc.compiler.spec import json_schema


@pytest.mark.parametrize("overlay", [False, True])
def test_committed_schema_is_current(overlay: bool) -> None:
    name = "hxpc.overlay.schema.json" if overlay else "hxpc.schema.json"
    committed = json.loads((REPO / "schemas" / name).read_text())
    flag = " --overlay" if overlay else ""
    assert committed == json_schema(overlay), f"schemas/{name} is stale: run `hxpc schema{flag} -o schemas/{name}`"


def test_example_specs_validate_against_schema_and_name_it() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    overlay_validator = jsonschema.Draft202012Validator(json_schema(overlay=True))
    for spec in SPECS.glob("*.yaml"):
        text = spec.read_text()
        is_overlay = spec.name.count(".") > 1
        expected = "hxpc.overlay.schema.json" if is_overlay else "hxpc.schema.json"
        assert text.startswith(f"# yaml-language-server: $schema=../schemas/{expected}"), spec.name
        data = YAML(typ="safe").load(text)
        (overlay_validator if is_overlay else validator).validate(data)
    assert example_specs(), "no example specs found"


def test_schema_rejects_unknown_field() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    errors = list(validator.iter_errors({"apiVersion": "hxpc/v1", "project": "x", "servics": {}}))
    assert any("servics" in e.message for e in errors)


def test_every_field_of_the_schema_has_a_description() -> None:
    """An editor with the schema explains every field it completes."""
    schema = json.loads((REPO / "schemas" / "hxpc.schema.json").read_text())
    classes = [("Stack", schema), *schema["$defs"].items()]
    missing = [f"{name}.{field}" for name, node in classes for field, sub in node.get("properties", {}).items()
               if not sub.get("description")]
    assert not missing, f"add an attribute docstring to: {missing}"
