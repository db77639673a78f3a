"""The spec's input models (pydantic): every field of SPEC.md, frozen, unknown fields refused.

These classes are the single definition of the file format: validation runs
the merged tree through `Stack`, and `schemas/hxpc.schema.json` is generated
from it (`hxpc schema`). Durations, sizes and cpu are parsed into integers
(milliseconds, bytes, millicores); names of hosts, models, services, secrets,
ports and volumes are DNS labels. Cross-field rules that need the whole stack
(references, GPU budgets, ports) live in `checks.py`, not here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hxpc.compiler import units

API_VERSION = "hxpc/v1"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.6.3"

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _unit(parser: Any, kind: str) -> Any:
    def parse(value: object) -> int:
        try:
            return int(parser(value))
        except units.UnitError as exc:
            raise PydanticCustomError(f"hx_{kind}", str(exc)) from None

    return parse


def _dns_label(max_len: int) -> Any:
    def check(value: str) -> str:
        if len(value) > max_len or not _DNS_LABEL.match(value):
            raise PydanticCustomError(
                "hx_name",
                "`{value}` is not a valid name: use lowercase letters, digits and `-`, "
                "starting and ending with a letter or digit, at most {max_len} characters",
                {"value": value, "max_len": max_len},
            )
        return value

    return check


def _env_var(value: str) -> str:
    if not _ENV_VAR.match(value):
        raise PydanticCustomError(
            "hx_name", "`{value}` is not a valid environment variable name (letters, digits, `_`)",
            {"value": value})
    return value


def _env_value(value: object) -> object:
    # YAML turns `PORT: 8080` into an int; environment values are text either way
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


Name = Annotated[str, AfterValidator(_dns_label(63)),
                 WithJsonSchema({"type": "string", "pattern": _DNS_LABEL.pattern, "maxLength": 63})]
ProjectName = Annotated[str, AfterValidator(_dns_label(40)),
                        WithJsonSchema({"type": "string", "pattern": _DNS_LABEL.pattern, "maxLength": 40})]
EnvVar = Annotated[str, AfterValidator(_env_var), WithJsonSchema({"type": "string", "pattern": _ENV_VAR.pattern})]
EnvValue = Annotated[str, BeforeValidator(_env_value),
                     WithJsonSchema({"type": ["string", "number", "boolean"]})]
Duration = Annotated[int, BeforeValidator(_unit(units.parse_duration, "duration")),
                     WithJsonSchema({"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$",
                                     "examples": ["10s", "500ms", "2m"]})]
Size = Annotated[int, BeforeValidator(_unit(units.parse_size, "size")),
                 WithJsonSchema({"type": ["string", "integer"], "pattern": r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?|k)?$",
                                 "examples": ["512Mi", "80Gi", "1.5G"]})]
Cpu = Annotated[int, BeforeValidator(_unit(units.parse_cpu, "cpu")),
                WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                                          {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?m?$"}],
                                "examples": [0.5, 2, "500m"]})]
Port = Annotated[int, Field(ge=1, le=65535)]
Restart = Literal["always", "on-failure", "never"]


class _Model(BaseModel):
    # allow_inf_nan=False: `params_b: .inf` is a typo to report, not a number to compute a budget from
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)


class GpuBudget(_Model):
    count: int = Field(ge=0, description="number of GPUs on the host")
    model: str = Field(description="GPU product, e.g. A100-80GB; kubernetes uses it as node selector")
    memory: Size = Field(description="memory per GPU")


class Host(_Model):
    address: str | None = Field(
        None, description="how systemd apply reaches the host: host or user@host[:port] (ssh), "
                          "ssh://user@host:port, local, or docker://<container>; default: the host's name")
    labels: dict[str, str] = {}
    cpu: Cpu | None = None
    memory: Size | None = None
    gpus: GpuBudget | None = None


class Secret(_Model):
    env: EnvVar | None = Field(None, description="read at apply time from this environment variable")
    file: str | None = Field(None, description="read at apply time from this absolute path")

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise PydanticCustomError("hx_combination", "a secret needs exactly one of `env` or `file`")
        if self.file is not None and not self.file.startswith("/"):
            raise PydanticCustomError("hx_combination", "`file` must be an absolute path")
        return self


class Resources(_Model):
    cpu: Cpu | None = None
    memory: Size | None = None
    gpus: int = Field(0, ge=0, description="GPUs per replica")


class ModelResources(_Model):
    cpu: Cpu | None = None
    memory: Size | None = None


class HttpCheck(_Model):
    path: str = "/"
    port: Name


class TcpCheck(_Model):
    port: Name


class Health(_Model):
    http: HttpCheck | None = None
    tcp: TcpCheck | None = None
    exec: list[str] | None = Field(None, min_length=1)
    interval: Duration = 10_000
    timeout: Duration = 3_000
    retries: int = Field(3, ge=1)
    start_period: Duration = 0

    @model_validator(mode="after")
    def _exactly_one(self) -> Health:
        given = [k for k in ("http", "tcp", "exec") if getattr(self, k) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "hx_combination", "a health check needs exactly one of `http`, `tcp` or `exec` (found: {found})",
                {"found": ", ".join(given) or "none"})
        return self


class Metrics(_Model):
    port: Name
    path: str = "/metrics"


class Volume(_Model):
    path: str = Field(description="mount path inside the service")
    size: Size | None = None


_METRIC_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
_LABEL_MATCHER = r'^[a-zA-Z_][a-zA-Z0-9_]*(=|!=|=~|!~)"([^"\\]|\\.)*"$'


class Slo(_Model):
    availability: float = Field(gt=0, lt=100, description="target percentage of good requests, e.g. 99.9")
    latency_p99: Duration | None = None
    requests_metric: str = Field(
        "http_requests_total", pattern=_METRIC_NAME,
        description="counter of all requests the SLO counts; default `http_requests_total`")
    errors_selector: str = Field(
        'code=~"5.."', pattern=_LABEL_MATCHER,
        description="one label matcher that picks the failed requests out of `requests_metric`; "
                    "default `code=~\"5..\"`")
    latency_metric: str = Field(
        "http_request_duration_seconds", pattern=_METRIC_NAME,
        description="histogram (in seconds, without `_bucket`) that `latency_p99` is checked against; "
                    "default `http_request_duration_seconds`")


class Service(_Model):
    image: str | None = None
    exec: list[str] | None = Field(None, min_length=1, description="native command (systemd runtime native)")
    command: list[str] | None = None
    args: list[str] | None = None
    ports: dict[Name, Port] = {}
    env: dict[EnvVar, EnvValue] = {}
    secrets: dict[EnvVar, Name] = Field({}, description="environment variable -> secret name")
    resources: Resources = Resources()
    replicas: int = Field(1, ge=0)
    depends_on: list[Name] = []
    health: Health | None = None
    metrics: Metrics | None = None
    volumes: dict[Name, Volume] = {}
    hosts: list[Name] | None = None
    slo: Slo | None = None
    restart: Restart = "on-failure"


class Defaults(_Model):
    """Anything a service may set; merged under every service (and the model-relevant keys under models)."""

    image: str | None = None
    exec: list[str] | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    ports: dict[Name, Port] | None = None
    env: dict[EnvVar, EnvValue] | None = None
    secrets: dict[EnvVar, Name] | None = None
    resources: Resources | None = None
    replicas: int | None = Field(None, ge=0)
    depends_on: list[Name] | None = None
    health: Health | None = None
    metrics: Metrics | None = None
    volumes: dict[Name, Volume] | None = None
    hosts: list[Name] | None = None
    slo: Slo | None = None
    restart: Restart | None = None


Dtype = Literal["bfloat16", "float16", "float32"]
Quantization = Literal["awq", "gptq", "fp8", "int8", "int4"]


class LlmModel(_Model):
    source: str = Field(description="hub id or absolute local path")
    revision: str | None = None
    served_name: str | None = None
    params_b: float = Field(gt=0, description="parameters in billions, for the GPU memory check")
    dtype: Dtype = "bfloat16"
    quantization: Quantization | None = None
    max_model_len: int | None = Field(None, ge=1)
    tensor_parallel: int = Field(1, ge=1, description="GPUs per replica")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    replicas: int = Field(1, ge=0)
    port: Port = 8000
    image: str = DEFAULT_VLLM_IMAGE
    extra_args: list[str] = []
    env: dict[EnvVar, EnvValue] = {}
    secrets: dict[EnvVar, Name] = {}
    resources: ModelResources = ModelResources()
    depends_on: list[Name] = []
    hosts: list[Name] | None = None
    restart: Restart = "on-failure"


class Monitoring(_Model):
    scrape_interval: Duration = 15_000
    alerts: bool = True
    dashboards: bool = True
    rules: list[dict[str, Any]] = Field([], description="extra Prometheus rule groups, passed through")
    runbooks: str | None = Field(None, description="alerts link <runbooks><alert name>")


class SystemdTarget(_Model):
    hosts: list[Name] = []
    runtime: Literal["docker", "podman", "native"] = "docker"


class ComposeTarget(_Model):
    host: Name | None = Field(None, description="the host whose GPU budget the compose stack uses")


class KubernetesTarget(_Model):
    namespace: Name | None = Field(None, description="default: <project>-<env>")
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] | None = Field(
        None, description="overrides the default GPU node selector `nvidia.com/gpu.product: <gpus.model>`")


class Targets(_Model):
    systemd: SystemdTarget | None = None
    compose: ComposeTarget | None = None
    kubernetes: KubernetesTarget | None = None


class Stack(_Model):
    """A stack: services, vLLM model servers, hosts and their GPU budgets, and where it compiles to."""

    api_version: Literal["hxpc/v1"] = Field(alias="apiVersion")
    project: ProjectName
    defaults: Defaults = Defaults()
    hosts: dict[Name, Host] = {}
    secrets: dict[Name, Secret] = {}
    models: dict[Name, LlmModel] = {}
    services: dict[Name, Service] = {}
    monitoring: Monitoring | None = None
    targets: Targets = Targets()
    environments: dict[Name, dict[str, Any] | None] = Field(
        {}, description="inline overlays by environment name, merged over the base (RFC 7386)")


def _without_required(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_required(v) for k, v in node.items() if k != "required"}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


def json_schema(overlay: bool = False) -> dict[str, Any]:
    """The spec's JSON Schema; `overlay=True` gives the schema of an overlay file (every field optional)."""
    schema = Stack.model_json_schema(by_alias=True)
    if overlay:
        # an overlay file sets only what differs; `null` deletes, so any value may also be null
        schema = _without_required(schema)
        schema["properties"].pop("environments", None)
    name = "hxpc.overlay.schema.json" if overlay else "hxpc.schema.json"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://hxpc.dev/schemas/{name}"
    schema["title"] = f"hxpc {'overlay file' if overlay else 'stack spec'}, apiVersion hxpc/v1"
    return schema
