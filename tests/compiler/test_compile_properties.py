"""Hypothesis: for generated valid specs, compiling is deterministic and every artifact parses and validates.

The strategy builds stacks the validator accepts (a dependency DAG, ports that
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
from hypothesis import strategies as st
from ruamel.yaml import YAML

from hxpc.compiler import yamlout
from hxpc.compiler.compile import compile_env
from hxpc.compiler.pipeline import resolve_env
from hxpc.sources import FileSources

COMPOSE = jsonschema.Draft7Validator(json.loads((shared_dir() / "schemas" / "compose-spec.json").read_text()))
K8S_VERSION = "1.30.0"
SECRET = "s3cr3t-value-never-compiled"
NAMES = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
SAFE_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    model_names = [f"m-{n}" for n in draw(st.lists(NAMES, max_size=2, unique=True))]
    runtime = draw(st.sampled_from(["docker", "podman", "native"]))
    services: dict[str, Any] = {}
    for i, name in enumerate(names):
        earlier = names[:i] + model_names
        svc: dict[str, Any] = {
            "image": f"registry.example/{name}:{draw(st.integers(0, 9))}",
            "exec": ["/usr/bin/" + name, "--flag", draw(SAFE_TEXT)],
            "ports": {"http": 20000 + i * 10},
            "replicas": draw(st.integers(0, 3)),
            "env": draw(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,5}", fullmatch=True), SAFE_TEXT,
                                        max_size=3)),
            "depends_on": draw(st.lists(st.sampled_from(earlier), unique=True, max_size=2)) if earlier else [],
            "restart": draw(st.sampled_from(["always", "on-failure"])),
            "resources": {"cpu": draw(st.sampled_from([1, "500m", 0.25])),
                          "memory": draw(st.sampled_from(["256Mi", "1Gi", "1.5G"]))},
            "hosts": ["app"],
        }
        probe = draw(st.sampled_from(["http", "tcp", "exec", None]))
        if probe == "http":
            svc["health"] = {"http": {"path": "/health", "port": "http"}, "interval": "5s"}
        elif probe == "tcp":
            svc["health"] = {"tcp": {"port": "http"}, "start_period": "30s"}
        elif probe == "exec":
            svc["health"] = {"exec": ["/bin/check", draw(SAFE_TEXT)], "retries": 2}
        if draw(st.booleans()):
            svc["metrics"] = {"port": "http"}
        if draw(st.booleans()):
            svc["secrets"] = {"TOKEN": "token"}
        if draw(st.booleans()):
            svc["volumes"] = {"data": {"path": f"/var/lib/{name}", "size": "1Gi"}}
        services[name] = svc
    models = {
        name: {"source": f"org/{name}", "params_b": draw(st.sampled_from([0.5, 7, 13])),
               "tensor_parallel": draw(st.sampled_from([1, 2])), "replicas": draw(st.integers(1, 2)),
               "port": 8000 + i * 10, "hosts": ["gpu"], "secrets": {"HF_TOKEN": "token"}}
        for i, name in enumerate(model_names)
    }
    compose: dict[str, Any] = {"host": "gpu"} if draw(st.booleans()) else {}
    return {
        "apiVersion": "hxpc/v1", "project": "prop",
        "hosts": {"gpu": {"address": "local", "gpus": {"count": 8, "model": "H100-80GB", "memory": "80Gi"}},
                  "app": {"address": "docker://app"}},
        "secrets": {"token": {"env": "PROP_TOKEN"}},
        "models": models, "services": services,
        "monitoring": {"runbooks": "https://runbooks.example/"} if draw(st.booleans()) else None,
        "targets": {"systemd": {"hosts": ["gpu", "app"], "runtime": runtime}, "compose": compose,
                    "kubernetes": {}},
    }


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
