"""Hypothesis strategies shared by the property tests.

`specs()` builds stacks the validator accepts (a dependency DAG, ports that
never clash, GPU budgets that fit) in all three runtimes, with and without a
compose host, so the targets meet shapes the example spec does not have.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

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
               "architecture": {"layers": 32, "kv_heads": 8, "head_dim": 128, "max_position_embeddings": 8192},
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
