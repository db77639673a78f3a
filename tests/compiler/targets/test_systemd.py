"""The systemd target: units that systemd itself accepts without a warning, hardened, and saying what the spec says."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, example_specs, require_tool
from ruamel.yaml import YAML
from unitroot import UNIT_LIBRARY, unit_root

from hxpc.compiler.bundle import Meta, TargetError, object_hash
from hxpc.compiler.compile import compile_env
from hxpc.compiler.model import ResolvedStack
from hxpc.compiler.pipeline import environments, resolve_env
from hxpc.compiler.targets import systemd
from hxpc.sources import FileSources

SECRET_VALUE = "s3cr3t-value-that-must-never-be-written"
RUNTIMES = ("docker", "podman", "native")
# the programs the units run, as stubs inside the verify root (the test machine need not have them)
MAX_EXPOSURE = 4.0


# --- helpers --------------------------------------------------------------------------------------------------------


def _resolve(tmp_path: Path, text: str, env: str = "default") -> ResolvedStack:
    spec = tmp_path / "stack.yaml"
    spec.write_text(text)
    return resolve_env(FileSources(str(spec)), env).stack


def _emit(stack: ResolvedStack) -> dict[str, str]:
    return systemd.emit(stack, Meta(stack.project, stack.env, "stack.yaml", "0" * 16))


def _example_variant(tmp_path: Path, runtime: str) -> Path:
    """The example spec (and its overlays) with `targets.systemd.runtime` set; native services get an `exec`."""
    yaml = YAML()
    out = tmp_path / runtime
    out.mkdir()
    for overlay in (REPO / "specs").glob("hxp.*.yaml"):
        shutil.copy(overlay, out / overlay.name)
    data = yaml.load((REPO / "specs/hxp.yaml").read_text())
    data["targets"]["systemd"]["runtime"] = runtime
    if runtime == "native":
        for name, svc in data["services"].items():
            port = next(iter(svc["ports"]))
            svc["exec"] = [f"/opt/hxp/bin/{name}", "--listen", f"127.0.0.1:${{{systemd._port_var(port)}}}"]
    with (out / "hxp.yaml").open("w") as fh:
        yaml.dump(data, fh)
    return out / "hxp.yaml"


def _compile_all_envs(spec: Path) -> dict[str, str]:
    """Every environment's systemd files, keyed `<env>/systemd/<host>/<file>`."""
    files: dict[str, str] = {}
    sources = FileSources(str(spec))
    for env in environments(sources):
        files.update(compile_env(resolve_env(sources, env), "specs/hxp.yaml", only=["systemd"]).files)
    return files


def _by_host(files: dict[str, str]) -> dict[str, dict[str, str]]:
    """`<env>/<host>` -> {relative file: text}."""
    hosts: dict[str, dict[str, str]] = {}
    for path, text in files.items():
        env, target, host, rel = path.split("/", 3)
        assert target == "systemd"
        hosts.setdefault(f"{env}/{host}", {})[rel] = text
    return hosts


def _units_to_check(files: dict[str, str]) -> list[str]:
    """Plain units, and every instance of a template (the instance loads the template and its drop-in)."""
    units = [f for f in files if f.endswith(".service") and "@." not in f and "/" not in f]
    units += [f.split("/")[0].removesuffix(".d") for f in files if f.endswith(".service.d/replica.conf")]
    return sorted(units)


@pytest.fixture(scope="session")
def unit_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The machine's own systemd units (targets like sysinit.target that every service depends on by default)."""
    source = UNIT_LIBRARY
    if not source.is_dir():
        require_tool("systemd-analyze")  # the same package ships both; fail in CI, skip elsewhere
        pytest.skip("/usr/lib/systemd/system not found")
    dest = tmp_path_factory.mktemp("systemd-units") / "system"
    shutil.copytree(source, dest, symlinks=True)
    return dest


def _root(tmp_path: Path, library: Path, files: dict[str, str], programs: tuple[str, ...] = ()) -> Path:
    return unit_root(tmp_path / "root", library, files, programs)


def _verify(root: Path, units: list[str]) -> str:
    tool = require_tool("systemd-analyze")
    done = subprocess.run([tool, "verify", "--man=no", "--generators=no", f"--root={root}", *units],
                          capture_output=True, text=True, timeout=120)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and not output, f"systemd-analyze verify {' '.join(units)}:\n{output}"
    return output


def _exposure(root: Path, unit: str) -> tuple[float, str]:
    tool = require_tool("systemd-analyze")
    done = subprocess.run([tool, "security", "--offline=true", f"--root={root}", "--no-pager", unit],
                          capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert match, f"no exposure level for {unit}:\n{done.stdout}{done.stderr}"
    return float(match.group(1)), done.stdout


def _key(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def _exec_start(text: str) -> str:
    """ExecStart= with its continuation lines joined."""
    joined = text.replace(" \\\n    ", " ")
    return _key(joined, "ExecStart")[0]


@pytest.fixture(scope="module")
def prod_docker() -> dict[str, str]:
    resolved = resolve_env(FileSources(str(REPO / "specs/hxp.yaml")), "prod")
    bundle = compile_env(resolved, "specs/hxp.yaml", only=["systemd"])
    return {k.removeprefix("prod/systemd/"): v for k, v in bundle.files.items()}


# --- the real validators --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_example_unit_passes_systemd_analyze_verify(tmp_path: Path, unit_library: Path, runtime: str) -> None:
    require_tool("systemd-analyze")
    files = _compile_all_envs(_example_variant(tmp_path, runtime))
    hosts = _by_host(files)
    assert set(hosts) == {"prod/app-01", "prod/gpu-01", "prod/gpu-02"}  # dev and staging do not use systemd
    programs = tuple(f"/opt/hxp/bin/{name}" for name in ("postgres", "redis", "qdrant", "api-gateway"))
    for where, host_files in hosts.items():
        root = _root(tmp_path / where, unit_library, host_files, programs)
        _verify(root, _units_to_check(host_files))


def test_verify_reports_real_problems(tmp_path: Path, unit_library: Path, prod_docker: dict[str, str]) -> None:
    """The harness is not vacuous: a unit systemd would warn about fails it."""
    require_tool("systemd-analyze")
    broken = {"hxp-redis.service": prod_docker["app-01/hxp-redis.service"].replace("Restart=", "Restrat=")}
    root = _root(tmp_path, unit_library, broken)
    with pytest.raises(AssertionError, match="Unknown key"):
        _verify(root, ["hxp-redis.service"])


def test_native_units_are_hardened(tmp_path: Path, unit_library: Path) -> None:
    require_tool("systemd-analyze")
    files = _compile_all_envs(_example_variant(tmp_path, "native"))
    programs = tuple(f"/opt/hxp/bin/{name}" for name in ("postgres", "redis", "qdrant", "api-gateway"))
    checked = 0
    for where, host_files in _by_host(files).items():
        root = _root(tmp_path / where, unit_library, host_files, programs)
        for unit in _units_to_check(host_files):
            level, report = _exposure(root, unit)
            assert level <= MAX_EXPOSURE, f"{where}/{unit} exposure {level}:\n{report}"
            checked += 1
    assert checked == 10  # 3 gateway + postgres, redis, qdrant; llama-70b; mixtral + 2 llama-8b


def test_container_units_keep_hardening_in_the_container(prod_docker: dict[str, str]) -> None:
    line = _exec_start(prod_docker["app-01/hxp-postgres.service"])
    assert "--cap-drop ALL" in line and "--security-opt no-new-privileges" in line
    assert "DynamicUser" not in prod_docker["app-01/hxp-postgres.service"]


def test_container_units_are_labelled_with_their_target(prod_docker: dict[str, str]) -> None:
    """A compose apply on the same Docker Engine owns only `hxpc.dev/target=compose`: this keeps it off ours."""
    units = {k: v for k, v in prod_docker.items() if k.endswith(".service")}
    assert units
    for name, text in units.items():
        line = _exec_start(text)
        assert line.startswith("/usr/bin/docker run "), name
        for label in ("app.kubernetes.io/managed-by=hxpc", "hxpc.dev/project=hxp", "hxpc.dev/env=prod",
                      "hxpc.dev/target=systemd"):
            assert f"--label {label}" in line, (name, label)


# --- names, placement, ports, GPUs ----------------------------------------------------------------------------------


def test_names_follow_the_spec(prod_docker: dict[str, str]) -> None:
    assert sorted(prod_docker) == [
        "app-01/hxp-api-gateway@.service",
        "app-01/hxp-api-gateway@0.service.d/replica.conf",
        "app-01/hxp-api-gateway@1.service.d/replica.conf",
        "app-01/hxp-api-gateway@2.service.d/replica.conf",
        "app-01/hxp-postgres.service",
        "app-01/hxp-qdrant.service",
        "app-01/hxp-redis.service",
        "gpu-01/hxp-model-llama-70b.service",
        "gpu-02/hxp-model-llama-8b@.service",
        "gpu-02/hxp-model-llama-8b@0.service.d/replica.conf",
        "gpu-02/hxp-model-llama-8b@1.service.d/replica.conf",
        "gpu-02/hxp-model-mixtral-8x7b.service",
    ]
    assert "--name hxp-prod-postgres " in _exec_start(prod_docker["app-01/hxp-postgres.service"])
    template = prod_docker["app-01/hxp-api-gateway@.service"]
    assert "--name hxp-prod-api-gateway-%i " in _exec_start(template)
    assert _key(template, "ExecStartPre") == ["-/usr/bin/docker rm -f hxp-prod-api-gateway-%i"]
    assert _key(template, "ExecStop") == ["-/usr/bin/docker stop hxp-prod-api-gateway-%i"]
    assert _key(template, "WantedBy") == ["multi-user.target"]


def test_every_file_starts_with_the_header_and_carries_its_own_hash(prod_docker: dict[str, str]) -> None:
    header = Meta("hxp", "prod", "specs/hxp.yaml", "x").header().splitlines()[1]
    for path, text in prod_docker.items():
        assert text.startswith("# Generated by hxpc from specs/hxp.yaml (env prod); content hash "), path
        assert text.splitlines()[1] == header
        assert _key(text, "X-Hxpc-Project") == ["hxp"] and _key(text, "X-Hxpc-Env") == ["prod"], path
        [digest] = _key(text, "X-Hxpc-Hash")
        without = "".join(line for line in text.splitlines(keepends=True)
                          if not line.startswith(("X-Hxpc-Hash=", "#")))
        assert digest == object_hash(without), path


def test_replicas_get_their_port_and_index(prod_docker: dict[str, str]) -> None:
    template = prod_docker["app-01/hxp-api-gateway@.service"]
    assert "--publish ${PORT_HTTP}:8080" in _exec_start(template)  # inside the container the port stays
    for i in range(3):
        dropin = prod_docker[f"app-01/hxp-api-gateway@{i}.service.d/replica.conf"]
        assert _key(dropin, "Environment") == [f"HXPC_REPLICA={i}", f"PORT_HTTP={8080 + i}"]
        assert _key(dropin, "X-Hxpc-Health") == [f"http:{8080 + i}/health"]
        assert _key(dropin, "X-Hxpc-Metrics") == [f"http:{8080 + i}/metrics"]
    plain = prod_docker["app-01/hxp-qdrant.service"]
    assert _key(plain, "Environment") == ["HXPC_REPLICA=0", "PORT_HTTP=6333", "PORT_GRPC=6334"]
    assert "--publish ${PORT_HTTP}:6333 --publish ${PORT_GRPC}:6334" in _exec_start(plain)


def test_gpu_devices(prod_docker: dict[str, str], tmp_path: Path) -> None:
    big = prod_docker["gpu-01/hxp-model-llama-70b.service"]
    assert "CUDA_VISIBLE_DEVICES=0,1,2,3" in _key(big, "Environment")
    # docker reads --gpus as CSV: the argument must reach it as "device=0,1,2,3", quotes included
    assert '--gpus "\\"device=${CUDA_VISIBLE_DEVICES}\\""' in _exec_start(big)
    assert "--shm-size 4g" in _exec_start(big)
    assert "CUDA_VISIBLE_DEVICES=0,1" in _key(prod_docker["gpu-02/hxp-model-mixtral-8x7b.service"], "Environment")
    for i, device in ((0, 2), (1, 3)):
        dropin = prod_docker[f"gpu-02/hxp-model-llama-8b@{i}.service.d/replica.conf"]
        assert f"CUDA_VISIBLE_DEVICES={device}" in _key(dropin, "Environment")

    podman = _by_host(_compile_all_envs(_example_variant(tmp_path, "podman")))
    unit = podman["prod/gpu-01"]["hxp-model-llama-70b.service"]
    gpu_args = " ".join(f"--device nvidia.com/gpu={d}" for d in range(4))
    assert f'"HXPC_GPU_ARGS={gpu_args}"' in _key(unit, "Environment")
    assert " $HXPC_GPU_ARGS " in _exec_start(unit)  # unbraced: systemd splits it into separate arguments

    native = _by_host(_compile_all_envs(_example_variant(tmp_path, "native")))
    dropin = native["prod/gpu-02"]["hxp-model-llama-8b@1.service.d/replica.conf"]
    assert _key(dropin, "DeviceAllow") == ["/dev/nvidia3 rw"]
    assert "CUDA_VISIBLE_DEVICES=3" in _key(dropin, "Environment")
    template = native["prod/gpu-02"]["hxp-model-llama-8b@.service"]
    assert "/dev/nvidiactl rw" in _key(template, "DeviceAllow") and _key(template, "PrivateDevices") == ["no"]
    assert _key(template, "MemoryDenyWriteExecute") == []  # CUDA and Triton need W+X memory
    assert _key(native["prod/app-01"]["hxp-redis.service"], "MemoryDenyWriteExecute") == ["yes"]


def test_native_models_run_vllm_on_their_replica_port(tmp_path: Path) -> None:
    native = _by_host(_compile_all_envs(_example_variant(tmp_path, "native")))
    line = _exec_start(native["prod/gpu-02"]["hxp-model-llama-8b@.service"])
    assert line.startswith("/usr/bin/env python3 -m vllm.entrypoints.openai.api_server --model ")
    assert "--port ${PORT_HTTP}" in line and "--port 8010" not in line
    gateway = _exec_start(native["prod/app-01"]["hxp-api-gateway@.service"])
    assert gateway == "/opt/hxp/bin/api-gateway --listen 127.0.0.1:${PORT_HTTP}"


def test_startup_budget_outlasts_systemds_default(prod_docker: dict[str, str]) -> None:
    [budget] = _key(prod_docker["gpu-01/hxp-model-llama-70b.service"], "TimeoutStartSec")
    assert int(budget.removesuffix("s")) > 90 * 10  # a 70B model loads for many minutes


def test_resources_map_to_flags_or_cgroup_limits(prod_docker: dict[str, str], tmp_path: Path) -> None:
    line = _exec_start(prod_docker["app-01/hxp-postgres.service"])
    assert "--cpus 4 " in line and "--memory 16g " in line
    native = _by_host(_compile_all_envs(_example_variant(tmp_path, "native")))
    unit = native["prod/app-01"]["hxp-postgres.service"]
    assert _key(unit, "CPUQuota") == ["400%"] and _key(unit, "MemoryMax") == ["16G"]


# --- dependencies ---------------------------------------------------------------------------------------------------


def test_dependencies_on_this_host_are_required_others_recorded(prod_docker: dict[str, str]) -> None:
    gateway = prod_docker["app-01/hxp-api-gateway@.service"]
    assert _key(gateway, "Requires") == ["docker.service hxp-postgres.service hxp-redis.service hxp-qdrant.service"]
    [after] = _key(gateway, "After")
    assert "hxp-postgres.service" in after and "model" not in after
    assert _key(gateway, "X-Hxpc-DependsOn") == ["postgres redis qdrant llama-70b mixtral-8x7b llama-8b"]
    assert "# llama-70b runs on gpu-01: systemd cannot order units across hosts" in gateway
    assert "# llama-8b runs on gpu-02:" in gateway


SPREAD = """\
apiVersion: hxpc/v1
project: demo
hosts:
  h1: {address: local}
  h2: {address: local}
  h3: {address: local}
services:
  db:
    image: postgres:16
    exec: [/usr/bin/env]
    ports: {pg: 5432}
    hosts: [h2]
  web:
    image: web:1
    exec: [/opt/web/bin/web, --port, "${PORT_HTTP}"]
    ports: {http: 8080}
    replicas: 3
    depends_on: [db]
    hosts: [h1, h2]
    restart: never
  idle:
    image: idle:1
    exec: [/usr/bin/env]
    replicas: 0
    hosts: [h3]
targets:
  systemd: {hosts: [h1, h2, h3], runtime: RUNTIME}
"""


def test_instances_live_on_their_host_and_deps_resolve_per_host(tmp_path: Path) -> None:
    files = _emit(_resolve(tmp_path, SPREAD.replace("RUNTIME", "docker")))
    assert sorted(files) == [
        "h1/demo-web@.service",
        "h1/demo-web@0.service.d/replica.conf",
        "h1/demo-web@2.service.d/replica.conf",
        "h2/demo-db.service",
        "h2/demo-web@.service",
        "h2/demo-web@1.service.d/replica.conf",
    ]  # h3 only has a workload with 0 replicas: no directory at all
    assert "Requires=docker.service demo-db.service" in files["h2/demo-web@.service"]
    h1 = files["h1/demo-web@.service"]
    assert _key(h1, "Requires") == ["docker.service"] and "demo-db" not in _key(h1, "After")[0]
    assert "# db runs on h2:" in h1 and _key(h1, "X-Hxpc-DependsOn") == ["db"]
    assert _key(h1, "Restart") == ["no"]
    assert "instances 0, 2" in h1
    assert _key(files["h2/demo-web@1.service.d/replica.conf"], "Environment") == ["HXPC_REPLICA=1", "PORT_HTTP=8081"]


@pytest.mark.parametrize("port", [8080, 80])
def test_spread_units_verify(tmp_path: Path, unit_library: Path, port: int) -> None:
    require_tool("systemd-analyze")
    for runtime in RUNTIMES:
        (tmp_path / runtime).mkdir()
        files = _emit(_resolve(tmp_path / runtime, SPREAD.replace("RUNTIME", runtime).replace("8080", str(port))))
        for where, host_files in _by_host({f"e/systemd/{k}": v for k, v in files.items()}).items():
            root = _root(tmp_path / runtime / where, unit_library, host_files, ("/opt/web/bin/web",))
            units = _units_to_check(host_files)
            _verify(root, units)
            for unit in units if runtime == "native" else ():
                level, report = _exposure(root, unit)
                assert level <= MAX_EXPOSURE, f"{where}/{unit} exposure {level}:\n{report}"


# --- secrets, quoting, determinism ----------------------------------------------------------------------------------


def test_secrets_are_referenced_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HXP_DB_PASSWORD", "HXP_GATEWAY_API_KEY"):
        monkeypatch.setenv(var, SECRET_VALUE)
    for runtime in RUNTIMES:
        files = _compile_all_envs(_example_variant(tmp_path, runtime))
        assert files and not [p for p, t in files.items() if SECRET_VALUE in t]
        gateway = files["prod/systemd/app-01/hxp-api-gateway@.service"]
        assert _key(gateway, "EnvironmentFile") == ["/etc/hxpc/hxp-prod/api-gateway.env"]
        if runtime != "native":
            assert "--env DB_PASSWORD --env GATEWAY_API_KEY" in _exec_start(gateway)


WEIRD = """\
apiVersion: hxpc/v1
project: demo
hosts:
  h1: {address: local}
services:
  odd:
    image: odd:1
    exec: [/opt/odd, --pattern, "a b $HOME ${PORT_HTTP} 100%", ";", ""]
    args: [--save, "", --quote, "it's \\"x\\"", --backslash, "c:\\\\dir\\\\", --semi, ";"]
    ports: {http: 8080}
    env: {MESSAGE: "50% of \\"all\\" $THINGS\\\\ and\\ttabs", EMPTY: ""}
    hosts: [h1]
targets:
  systemd: {hosts: [h1], runtime: RUNTIME}
"""


def test_awkward_values_are_quoted_for_systemd(tmp_path: Path, unit_library: Path) -> None:
    docker = _emit(_resolve(tmp_path, WEIRD.replace("RUNTIME", "docker")))["h1/demo-odd.service"]
    line = _exec_start(docker)
    assert line.endswith('odd:1 --save "" --quote "it\'s \\"x\\"" --backslash "c:\\\\dir\\\\" --semi ";"')
    assert '--env "MESSAGE=50%% of \\"all\\" $$THINGS\\\\ and\\ttabs"' in line
    assert '--env EMPTY=' in line
    native = _emit(_resolve(tmp_path, WEIRD.replace("RUNTIME", "native")))["h1/demo-odd.service"]
    # hxpc's own per-replica variables stay references; any other `$` is literal
    assert _exec_start(native) == '/opt/odd --pattern "a b $$HOME ${PORT_HTTP} 100%%" ";" ""'
    assert '"MESSAGE=50%% of \\"all\\" $THINGS\\\\ and\\ttabs"' in _key(native, "Environment")
    for n, text in enumerate((docker, native)):
        _verify(_root(tmp_path / str(n), unit_library, {"demo-odd.service": text}, ("/opt/odd",)), ["demo-odd.service"])


def test_compiling_twice_is_byte_identical(tmp_path: Path) -> None:
    for runtime in RUNTIMES:
        spec = _example_variant(tmp_path, runtime)
        assert _compile_all_envs(spec) == _compile_all_envs(spec)


# --- lossless or loud -----------------------------------------------------------------------------------------------


def test_volume_size_is_recorded_not_enforced(prod_docker: dict[str, str]) -> None:
    unit = prod_docker["app-01/hxp-postgres.service"]
    assert _key(unit, "StateDirectory") == ["hxpc/hxp/postgres/data"]
    assert "--volume /var/lib/hxpc/hxp/postgres/data:/var/lib/postgresql/data" in _exec_start(unit)
    assert _key(unit, "X-Hxpc-Volume") == ["data /var/lib/hxpc/hxp/postgres/data /var/lib/postgresql/data size=500Gi"]
    assert "# Volume data: size 500Gi is a capacity note; a bind mount does not enforce it." in unit


def test_native_volumes_are_bind_mounted_state_directories(tmp_path: Path) -> None:
    native = _by_host(_compile_all_envs(_example_variant(tmp_path, "native")))
    unit = native["prod/app-01"]["hxp-postgres.service"]
    assert _key(unit, "StateDirectory") == ["hxpc/hxp/postgres/data"]
    assert _key(unit, "BindPaths") == ["/var/lib/hxpc/hxp/postgres/data:/var/lib/postgresql/data"]


@pytest.mark.parametrize(("fragment", "field"), [
    ("    volumes: {data: {path: relative/dir}}\n", "services.svc.volumes.data.path"),
    ("    volumes: {data: {path: /a:b}}\n", "services.svc.volumes.data.path"),
])
def test_what_systemd_cannot_express_is_an_error(tmp_path: Path, fragment: str, field: str) -> None:
    spec = f"""\
apiVersion: hxpc/v1
project: demo
hosts:
  h1: {{address: local}}
services:
  svc:
    image: svc:1
    hosts: [h1]
{fragment}targets:
  systemd: {{hosts: [h1]}}
"""
    with pytest.raises(TargetError) as caught:
        _emit(_resolve(tmp_path, spec))
    [problem] = caught.value.diagnostics
    assert problem.code == "HX401" and f"`{field}`" in problem.message and "target systemd" in problem.message


def test_low_ports_get_exactly_the_bind_capability(tmp_path: Path) -> None:
    spec = SPREAD.replace("RUNTIME", "native").replace("8080", "80")
    files = _emit(_resolve(tmp_path, spec))
    assert _key(files["h1/demo-web@.service"], "CapabilityBoundingSet") == ["CAP_NET_BIND_SERVICE"]
    assert _key(files["h1/demo-web@.service"], "AmbientCapabilities") == ["CAP_NET_BIND_SERVICE"]
    assert _key(files["h1/demo-web@.service"], "PrivateUsers") == []  # the capability must hold on the host
    assert _key(files["h2/demo-db.service"], "CapabilityBoundingSet") == [""]
    assert _key(files["h2/demo-db.service"], "PrivateUsers") == ["yes"]


def test_no_systemd_target_no_files() -> None:
    resolved = resolve_env(FileSources(str(REPO / "specs/hxp.yaml")), "dev")
    assert systemd.emit(resolved.stack, Meta("hxp", "dev", "specs/hxp.yaml", "0" * 16)) == {}


def test_every_example_spec_compiles(tmp_path: Path) -> None:
    for spec in example_specs():
        assert isinstance(_compile_all_envs(spec), dict)


def test_a_thousand_services_compile_fast(tmp_path: Path) -> None:
    services = "".join(
        f"  s{i}:\n    image: img:{i}\n    ports: {{http: {10000 + 2 * i}}}\n    replicas: {1 + i % 2}\n"
        f"    env: {{A: b}}\n    depends_on: [s{max(0, i - 1)}]\n" if i else "  s0:\n    image: img:0\n"
        for i in range(1000))
    head = "apiVersion: hxpc/v1\nproject: big\nhosts:\n  h1: {address: local}\n  h2: {address: local}\n"
    stack = _resolve(tmp_path, f"{head}services:\n{services}targets:\n  systemd: {{hosts: [h1, h2]}}\n")
    started = time.process_time()
    files = _emit(stack)
    elapsed = time.process_time() - started
    assert len(files) > 1500
    assert elapsed < 2.0, f"{elapsed:.2f}s of CPU to emit 1,000 services"


# --- generated names that collide (HX405) ---------------------------------------------------------------------------

COLLIDE = """\
apiVersion: hxpc/v1
project: demo
hosts:
  h1:
    address: local
    gpus: {count: 2, model: A100-80GB, memory: 80Gi}
"""


def test_a_model_and_a_service_that_share_a_unit_name_are_an_error(tmp_path: Path) -> None:
    # model `x` is demo-model-x.service, and so is service `model-x`: one file would replace the other
    stack = _resolve(tmp_path, COLLIDE + """\
models:
  x: {source: org/x, params_b: 1,
      architecture: {layers: 32, kv_heads: 8, head_dim: 128, max_position_embeddings: 8192}, hosts: [h1]}
services:
  model-x: {image: svc:1, exec: [/usr/bin/env], hosts: [h1]}
targets:
  systemd: {hosts: [h1], runtime: native}
""")
    with pytest.raises(TargetError) as caught:
        _emit(stack)
    [problem] = caught.value.diagnostics
    assert problem.code == "HX405"
    assert "model `x`" in problem.message and "service `model-x`" in problem.message
    assert "`demo-model-x.service`" in problem.message and "target systemd" in problem.message
    assert problem.hint is not None and "rename" in problem.hint


def test_replica_containers_that_meet_another_services_container_are_an_error(tmp_path: Path) -> None:
    # replica 1 of `api` runs as container demo-default-api-1, the name of `api-1`'s container:
    # each unit's `docker rm -f` would kill the other's container
    stack = _resolve(tmp_path, COLLIDE + """\
services:
  api: {image: api:1, replicas: 2, hosts: [h1]}
  api-1: {image: api:1, hosts: [h1]}
targets:
  systemd: {hosts: [h1], runtime: docker}
""")
    with pytest.raises(TargetError) as caught:
        _emit(stack)
    [problem] = caught.value.diagnostics
    assert problem.code == "HX405"
    assert "`api`" in problem.message and "`api-1`" in problem.message
    assert "container `demo-default-api-1`" in problem.message and "target systemd" in problem.message


def test_a_name_collision_fails_hxpc_compile_with_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hxpc.cli import main

    spec = tmp_path / "stack.yaml"
    spec.write_text(COLLIDE + """\
services:
  api: {image: api:1, replicas: 2, hosts: [h1]}
  api-1: {image: api:1, hosts: [h1]}
targets:
  systemd: {hosts: [h1], runtime: podman}
""")
    out = tmp_path / "out"
    assert main(["compile", str(spec), "-o", str(out)]) == 3
    assert "HX405" in capsys.readouterr().err
    assert not list(out.rglob("*.service"))  # nothing half-written
