"""The pure half of the Docker backend against payloads recorded from a real Docker Engine (20.10).

`payloads/smoke-default.json` is `DockerBackend.read_raw()` (plus the `images` list, narrowed to the
spec's images) for `payloads/smoke.yaml` applied with `bind_address="127.0.0.1"`, after which: `web-2`
was stopped, an owned container without hxpc's config label was created as `web-1-hxpc-old` (what a
killed apply leaves), an unowned `smoke-default-web-3` (Compose's project label only) and
`smoke-default-stray` were started, and an unrelated volume `smoke-default_other` was created.
Both container list queries (by label, by name) are in it, so owned containers appear twice.
`python tests/engine/backends/payloads/record_smoke.py` (from the repository root) performs all of
this against the Docker Engine, writes the file and removes what it made: re-record whenever the
compose target's output changes, or the plan test below sees replaces instead of noops.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests

from hxpc.compiler.bundle import Meta
from hxpc.compiler.compile import spec_hash
from hxpc.compiler.pipeline import resolve_env
from hxpc.engine.backend import TransientError
from hxpc.engine.backends.docker import parse as dp
from hxpc.engine.backends.docker.backend import DockerBackend, translate
from hxpc.engine.objects import ObjectKey
from hxpc.engine.plan import NameClash, make_plan
from hxpc.engine.render import render_json
from hxpc.errors import BackendError
from hxpc.sources import FileSources

PAYLOADS = Path(__file__).parents[1] / "payloads"
SCOPE = "smoke-default"


def key(kind: str, name: str) -> ObjectKey:
    return ObjectKey("compose", SCOPE, kind, name)


def backend_for(path: Path, env: str = "default", bind: str | None = "127.0.0.1") -> DockerBackend:
    resolved = resolve_env(FileSources(str(path)), env)
    meta = Meta(resolved.stack.project, env, path.name, spec_hash(resolved))
    # no client is made until a call needs one: everything below stays pure
    return DockerBackend(resolved.stack, meta, bind_address=bind, environ={})


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return json.loads((PAYLOADS / "smoke-default.json").read_text())


@pytest.fixture(scope="module")
def smoke() -> DockerBackend:
    return backend_for(PAYLOADS / "smoke.yaml")


def test_parse_recorded_payload(raw: dict[str, Any], smoke: DockerBackend) -> None:
    live = smoke.parse(raw)
    assert sorted(str(k) for k in live) == sorted(str(k) for k in [
        key("container", "db-1"), key("container", "web-1"), key("container", "web-2"),
        key("container", "web-1-hxpc-old"), key("container", "web-3"), key("container", "stray"),
        key("network", "default"), key("volume", "web-data")])   # `smoke-default_other` is not the spec's
    web1 = live[key("container", "web-1")]
    assert (web1.owned, web1.running, web1.workload) == (True, True, "web")
    assert web1.state["environment"] == {"A": "changed", "TOKEN_FILE": "/run/secrets/tok"}
    assert web1.state["ports"] == ["127.0.0.1:8080:8080"]
    assert web1.version and len(web1.version) == 64
    assert live[key("container", "web-2")].running is False
    assert "Exited" in live[key("container", "web-2")].status
    old = live[key("container", "web-1-hxpc-old")]
    assert old.owned and old.state == {"image": "hxpc-test/busybox:1", "config": dp.UNKNOWN_CONFIG}
    assert not live[key("container", "web-3")].owned and not live[key("container", "stray")].owned
    assert live[key("network", "default")].owned and live[key("volume", "web-data")].owned


def test_plan_against_recorded_payload_is_exact_and_deterministic(raw: dict[str, Any], smoke: DockerBackend) -> None:
    desired = smoke.desired()
    live = smoke.parse(raw)
    plan = make_plan(desired, live, smoke.stack.waves, project="smoke", env="default", spec_hash="h")
    kinds = {a.key.name: a.kind for a in plan.actions}
    # desired and recorded state agree field by field: the hash label round-trips
    assert kinds == {"default": "noop", "web-data": "noop", "db-1": "noop", "web-1": "noop",
                     "web-2": "restart", "web-1-hxpc-old": "delete"}
    assert next(a for a in plan.actions if a.key.name == "web-2").reason.startswith("not running (Exited")
    again = make_plan(smoke.desired(), smoke.parse(json.loads(json.dumps(raw))), smoke.stack.waves,
                      project="smoke", env="default", spec_hash="h")
    assert render_json(plan) == render_json(again)


def test_an_unowned_container_with_a_desired_name_is_a_clash(raw: dict[str, Any], tmp_path: Path) -> None:
    spec = tmp_path / "smoke.yaml"
    spec.write_text((PAYLOADS / "smoke.yaml").read_text().replace("replicas: 2", "replicas: 3"))
    backend = backend_for(spec)
    with pytest.raises(NameClash) as caught:
        make_plan(backend.desired(), backend.parse(raw), backend.stack.waves, project="smoke", env="default",
                  spec_hash="h")
    assert "compose:smoke-default/container/web-3: exists without hxpc's ownership labels" in str(caught.value)
    assert "stray" not in str(caught.value)


def test_a_systemd_units_container_on_the_same_engine_is_not_owned_or_pruned(smoke: DockerBackend) -> None:
    """A systemd docker-runtime unit shares the Engine (address `local`) and hxpc's owner labels; only the
    compose target's own containers (target label and Compose project label) are the Docker backend's."""
    names = dp.Names("p", "default")
    owner = {"app.kubernetes.io/managed-by": "hxpc", "hxpc.dev/project": "p", "hxpc.dev/env": "default"}
    compose_owned = {**owner, "hxpc.dev/target": "compose", dp.LABEL_PROJECT: "p-default"}
    cases = {"legacy": owner, "systemd": {**owner, "hxpc.dev/target": "systemd"},
             "no-compose-project": {**owner, "hxpc.dev/target": "compose"}, "compose": compose_owned}
    for what, labels in cases.items():
        live = dp.parse_live({"containers": [{"Id": what, "Names": ["/p-default-a"], "Labels": labels}]}, names)
        assert [o.owned for o in live.values()] == [what == "compose"], what
        plan = make_plan({}, live, [], project="p", env="default", spec_hash="h")
        assert [a.kind for a in plan.actions] == (["delete"] if what == "compose" else []), what
    # named otherwise than the project's containers, it is not even looked at
    other = {"containers": [{"Id": "x", "Names": ["/elsewhere"], "Labels": {**owner, "hxpc.dev/target": "systemd"}}]}
    assert dp.parse_live(other, names) == {}
    # what the backend itself creates is what it owns
    assert all(smoke.names.owns(d.extra.labels) for d in smoke.desired().values())
    # a systemd container whose name is a desired one is in the way: a clash, never adopted or replaced
    systemd_web1 = {"Id": "y", "Names": ["/smoke-default-web-1"],
                    "Labels": {**smoke.names.owner_labels, "hxpc.dev/target": "systemd"}}
    with pytest.raises(NameClash, match="container/web-1"):
        make_plan(smoke.desired(), smoke.parse({"containers": [systemd_web1]}), smoke.stack.waves,
                  project="smoke", env="default", spec_hash="h")


def test_desired_objects_follow_the_compose_document(smoke: DockerBackend) -> None:
    desired = smoke.desired()
    assert sorted(k.name for k in desired) == ["db-1", "default", "web-1", "web-2", "web-data"]
    web2 = desired[key("container", "web-2")]
    assert web2.extra.name == "smoke-default-web-2"
    assert web2.state["ports"] == ["127.0.0.1:8081:8080"]
    assert web2.state["secrets"] == {"TOKEN": "tok"}
    labels = web2.extra.labels
    assert labels[dp.LABEL_PROJECT] == SCOPE and labels[dp.LABEL_SERVICE] == "web"
    assert labels[dp.LABEL_NUMBER] == "2" and labels[dp.LABEL_ONEOFF] == "False"
    assert labels[dp.LABEL_HASH] == dp.config_hash(web2.state)
    assert json.loads(labels[dp.LABEL_CONFIG]) == web2.state
    assert web2.extra.probe == dp.Probe("http", 8081, "/health", (), 1.0)
    assert web2.gate is not None and web2.gate.interval_s == 1.0 and web2.gate.budget_s == 60
    assert desired[key("volume", "web-data")].extra.name == "smoke-default_web-data"
    # without bind_address ports are published on every interface, as Compose does
    assert backend_for(PAYLOADS / "smoke.yaml", bind=None).desired()[key("container", "web-2")].state["ports"] \
        == ["8081:8080"]


def test_secret_values_are_in_no_state_label_or_hash(tmp_path: Path) -> None:
    backend = backend_for(PAYLOADS / "smoke.yaml")
    backend._environ = {"SMOKE_TOKEN": "s3cr3t-value"}
    backend.resolve_secrets(["tok"])
    want = backend.desired()[key("container", "web-1")]
    assert "s3cr3t-value" not in json.dumps(dict(want.state)) + repr(want.extra)
    config = dp.container_config(want.state, want.extra.labels, "smoke-default_default", want.extra.volumes,
                                 {"TOKEN": "s3cr3t-value"}, "web")
    assert "TOKEN=s3cr3t-value" in config["Env"]                  # the one place the value goes
    assert "s3cr3t-value" not in json.dumps(config["Labels"])
    other = backend_for(PAYLOADS / "smoke.yaml")
    assert other.desired()[key("container", "web-1")].state == want.state  # the value does not change the hash


def test_a_missing_secret_names_its_source() -> None:
    backend = backend_for(PAYLOADS / "smoke.yaml")
    with pytest.raises(BackendError, match="secret `tok`: environment variable SMOKE_TOKEN is not set"):
        backend.resolve_secrets(["tok"])


def test_container_config_is_the_engine_api_body(smoke: DockerBackend) -> None:
    want = smoke.desired()[key("container", "web-2")]
    config = dp.container_config(want.state, want.extra.labels, "smoke-default_default", want.extra.volumes,
                                 {}, "web")
    host = config["HostConfig"]
    assert config["Image"] == "hxpc-test/busybox:1"
    assert config["Env"] == ["A=changed", "TOKEN_FILE=/run/secrets/tok"]
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8081"}]}
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 0}
    assert host["CapDrop"] == ["ALL"] and "CHOWN" in host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Mounts"] == [{"Type": "volume", "Source": "smoke-default_web-data", "Target": "/data",
                               "ReadOnly": False}]
    assert host["NetworkMode"] == "smoke-default_default"
    assert config["NetworkingConfig"] == {"EndpointsConfig": {"smoke-default_default": {"Aliases": ["web"]}}}
    hc = config["Healthcheck"]
    assert (hc["Interval"], hc["Timeout"], hc["StartPeriod"], hc["Retries"]) == (10**9, 10**9, 10**9, 2)
    assert hc["Test"][0] == "CMD-SHELL" and "wget -q -O /dev/null http://127.0.0.1:8080/health" in hc["Test"][1]
    db = smoke.desired()[key("container", "db-1")]
    db_host = dp.container_config(db.state, {}, "n", {}, {}, "db")["HostConfig"]
    assert (db_host["NanoCpus"], db_host["Memory"]) == (500_000_000, 64 * 2**20)


def test_gpu_replicas_become_device_requests(tmp_path: Path) -> None:
    spec = tmp_path / "gpu.yaml"
    spec.write_text("""
apiVersion: hxpc/v1
project: gpu
hosts:
  gpu-01: {address: local, gpus: {count: 4, model: A100-80GB, memory: 80Gi}}
services:
  infer: {image: "hxpc-test/busybox:1", ports: {http: 9000}, replicas: 2, resources: {gpus: 1}, hosts: [gpu-01]}
  plain: {image: "hxpc-test/busybox:1", resources: {gpus: 2}}
targets:
  compose: {host: gpu-01}
""")
    backend = backend_for(spec, bind=None)
    desired = {k.name: d for k, d in backend.desired().items() if k.kind == "container"}
    # Compose splits a pinned multi-replica GPU workload into one service per replica
    assert sorted(desired) == ["infer-0-1", "infer-1-1", "plain-1"]
    bodies = {n: dp.container_config(d.state, d.extra.labels, "gpu-default_default", {}, {}, d.extra.service)
              for n, d in desired.items()}
    assert bodies["infer-1-1"]["HostConfig"]["DeviceRequests"] == [
        {"Driver": "nvidia", "Capabilities": [["gpu"]], "Options": {}, "DeviceIDs": ["1"], "Count": 0}]
    assert bodies["infer-1-1"]["HostConfig"]["PortBindings"] == {"9000/tcp": [{"HostIp": "", "HostPort": "9001"}]}
    assert bodies["infer-1-1"]["NetworkingConfig"]["EndpointsConfig"]["gpu-default_default"]["Aliases"] \
        == ["infer-1", "infer"]
    assert desired["infer-1-1"].extra.labels[dp.LABEL_REPLICA] == "1"
    assert bodies["plain-1"]["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["2", "3"]
    counted = dp.device_requests({"reservations": {"devices": [{"driver": "nvidia", "count": 2,
                                                                 "capabilities": ["gpu"]}]}})
    assert counted == [{"Driver": "nvidia", "Capabilities": [["gpu"]], "Options": {}, "Count": 2}]


def test_tampered_config_label_reads_as_unknown() -> None:
    state = {"image": "a:1", "environment": {"X": "1"}}
    labels = {dp.LABEL_CONFIG: json.dumps(state), dp.LABEL_HASH: dp.config_hash(state)}
    assert dp.recorded_state(labels, "a:1") == state
    assert dp.recorded_state(labels, "sha256:abc")["image"] == "sha256:abc"  # the tag moved: the Engine says so
    labels[dp.LABEL_CONFIG] = json.dumps({**state, "environment": {"X": "2"}})
    assert dp.recorded_state(labels, "a:1") == {"image": "a:1", "config": dp.UNKNOWN_CONFIG}


@pytest.mark.parametrize(("text", "ns"), [("10s", 10 * 10**9), ("500ms", 5 * 10**8), ("1m30s", 90 * 10**9),
                                          ("2h", 7200 * 10**9), (3, 3 * 10**9)])
def test_durations(text: str, ns: int) -> None:
    assert dp.duration_ns(text) == ns


@pytest.mark.parametrize("bad", ["", "10", "1x", "s10"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError):
        dp.duration_ns(bad)


def test_sizes_and_ports() -> None:
    assert [dp.size_bytes(s) for s in ("64m", "2g", "512b", "1k", 7)] == [64 * 2**20, 2 * 2**30, 512, 1024, 7]
    assert dp.replica_ports(["8080-8082:8080", "9000:9000"], 2, None) == ["8082:8080", "9002:9000"]
    assert dp.port_bindings(["127.0.0.1:1:2", "3:4/udp"]) == (
        {"2/tcp": {}, "4/udp": {}},
        {"2/tcp": [{"HostIp": "127.0.0.1", "HostPort": "1"}], "4/udp": [{"HostIp": "", "HostPort": "3"}]})
    assert dp.replica_ports(["80:80"], 0, "::1") == ["[::1]:80:80"]
    assert dp.port_bindings(["[::1]:80:80"])[1] == {"80/tcp": [{"HostIp": "::1", "HostPort": "80"}]}


def test_images_present_by_any_spelling(raw: dict[str, Any]) -> None:
    present = dp.present_images(raw["images"])
    assert dp.normalize_image("hxpc-test/busybox:1") in present
    assert dp.normalize_image("docker.io/library/busybox") == "busybox:latest"
    assert dp.normalize_image("registry:5000/x/y") == "registry:5000/x/y:latest"
    assert dp.normalize_image("ghcr.io/a/b:2") == "ghcr.io/a/b:2"


def _api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError(f"{status} error", response=response, explanation=explanation)


def test_errors_are_transient_or_permanent() -> None:
    assert isinstance(translate(_api_error(503, "busy"), "creating x"), TransientError)
    assert isinstance(translate(_api_error(429, "slow down"), "creating x"), TransientError)
    assert isinstance(translate(requests.exceptions.ConnectionError("reset by peer"), "x"), TransientError)
    assert isinstance(translate(requests.exceptions.ReadTimeout("timed out"), "x"), TransientError)
    conflict = translate(_api_error(409, 'Conflict. The container name "/a" is already in use'), "creating a")
    assert not isinstance(conflict, TransientError)
    assert str(conflict) == 'creating a: Conflict. The container name "/a" is already in use (HTTP 409)'
    port = translate(_api_error(500, "driver failed: Bind for 0.0.0.0:80 failed: port is already allocated"), "x")
    assert not isinstance(port, TransientError)          # a 500 that retrying cannot fix


def test_lock_labels_round_trip() -> None:
    names = dp.Names("smoke", "default")
    payload = {"holder": "me@here pid 1", "since": "2026-01-01T00:00:00Z", "spec_hash": "h", "ttl_s": "60"}
    labels = dp.lock_labels(names, payload)
    assert labels[dp.LABEL_LOCK] == SCOPE
    assert dp.lock_payload(labels) == payload
