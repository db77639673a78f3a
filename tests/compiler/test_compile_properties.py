"""Hypothesis: for generated valid specs, compiling is deterministic and every artifact parses and validates.

The strategy (tests/strategies.py) builds stacks the validator accepts (a dependency DAG, ports that
never clash, GPU budgets that fit) in all three runtimes, with and without a
compose host, so the targets meet shapes the example spec does not have.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
from conftest import shared_dir
from hypothesis import HealthCheck, given, settings
from ruamel.yaml import YAML
from strategies import specs

from hxpc.compiler import yamlout
from hxpc.compiler.compile import compile_env
from hxpc.compiler.pipeline import resolve_env
from hxpc.sources import FileSources

COMPOSE = jsonschema.Draft7Validator(json.loads((shared_dir() / "schemas" / "compose-spec.json").read_text()))
K8S_VERSION = "1.30.0"
SECRET = "s3cr3t-value-never-compiled"


def _check_unit_syntax(path: str, text: str) -> None:
    continued = False
    for number, line in enumerate(text.splitlines(), 1):
        ok = (continued or not line or line.startswith(("#", ";")) or re.fullmatch(r"\[[A-Za-z]+\]", line)
              or re.match(r"[A-Za-z][A-Za-z0-9-]*=", line))
        assert ok, f"{path}:{number}: not unit-file syntax: {line!r}"
        continued = line.endswith("\\") and not line.startswith(("#", ";"))


def _compile(spec: dict[str, Any], directory: Path) -> dict[str, str]:
    if spec["monitoring"] is None:
        spec = {k: v for k, v in spec.items() if k != "monitoring"}
    path = directory / "prop.yaml"
    path.write_text(yamlout.dump(spec))
    return compile_env(resolve_env(FileSources(str(path)), "default"), "prop.yaml").files


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs())
def test_compiling_is_deterministic_and_every_artifact_validates(spec: dict[str, Any], tmp_path: Path) -> None:
    os.environ["PROP_TOKEN"] = SECRET  # were the compiler to read secrets, this value would leak
    first = _compile(spec, tmp_path)
    assert _compile(spec, tmp_path) == first
    loader = YAML(typ="safe")
    for path, text in first.items():
        if path.endswith(".json"):
            json.loads(text)
            continue
        if "/systemd/" in path:  # test_systemd runs systemd-analyze verify on every shape; here: the syntax
            _check_unit_syntax(path, text)
            continue
        documents = [d for d in loader.load_all(text) if d is not None]
        assert documents, path
        if path.endswith("compose/compose.yaml"):
            errors = sorted(COMPOSE.iter_errors(documents[0]), key=str)
            assert not errors, f"{path}: {errors[0].message}"
        if "/kubernetes/" in path:
            for document in documents:
                kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    assert SECRET not in "".join(first.values())
    assert all(path.startswith("default/") for path in first)
