"""The spec's input types: every field of SPEC.md, as frozen dataclasses; unknown fields refused.

These classes are the single definition of the file format. Validation runs
the merged tree through `Stack` (quickcheck.py for exactly-typed input,
pydantic for everything else and for errors), and `schemas/hxpc.schema.json`
is generated from it (`hxpc schema`). They are stdlib dataclasses, not
pydantic models, so that compiling a valid spec never imports pydantic; the
field rules live in `Annotated` (fieldrules.py), field descriptions in
attribute docstrings. Durations, sizes and cpu are parsed into integers
(milliseconds, bytes, millicores); names of hosts, models, services, secrets,
ports and volumes are DNS labels. Cross-field rules that need the whole stack
(references, GPU budgets, ports) live in `checks.py`, not here.
"""

# No `from __future__ import annotations` here: the field types are evaluated once, as the classes are
# built, instead of as strings each time the validators read them (typing.get_type_hints).
import functools
from dataclasses import field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from hxpc import limits
from hxpc.compiler.fieldrules import Bounds, reject
from hxpc.compiler.fieldtypes import (
    SPEC_CONFIG,
    Command,
    Cpu,
    Duration,
    EnvValue,
    EnvVar,
    Gpus,
    Name,
    Port,
    ProjectName,
    Replicas,
    Restart,
    Size,
)
from hxpc.records import record

if TYPE_CHECKING:
    from pydantic import TypeAdapter

API_VERSION = "hxpc/v1"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.6.3"

@record(kw_only=True)
class GpuBudget:
    """A host's GPUs: how many, which product, and the memory of each."""

    __pydantic_config__ = SPEC_CONFIG
    count: Gpus
    """number of GPUs on the host"""
    model: str
    """GPU product, e.g. A100-80GB; kubernetes uses it as node selector"""
    memory: Size
    """memory per GPU"""


@record(kw_only=True)
class Host:
    """A machine that runs services and models, and how systemd apply reaches it."""

    __pydantic_config__ = SPEC_CONFIG
    address: str | None = None
    """how systemd apply reaches the host: host or user@host[:port] (ssh), ssh://user@host:port, local,
    or docker://<container>; default: the host's name"""
    labels: dict[str, str] = field(default_factory=dict)
    cpu: Cpu | None = None
    memory: Size | None = None
    gpus: GpuBudget | None = None


@record(kw_only=True)
class Secret:
    """A secret, by reference: where apply reads its value (never the value itself)."""

    __pydantic_config__ = SPEC_CONFIG
    env: EnvVar | None = None
    """read at apply time from this environment variable"""
    file: str | None = None
    """read at apply time from this absolute path"""

    def __post_init__(self) -> None:
        if (self.env is None) == (self.file is None):
            reject("combination", "a secret needs exactly one of `env` or `file`")
        if self.file is not None and not self.file.startswith("/"):
            reject("combination", "`file` must be an absolute path")


@record(kw_only=True)
class Resources:
    """A service's cpu, memory and GPUs per replica."""

    __pydantic_config__ = SPEC_CONFIG
    cpu: Cpu | None = None
    memory: Size | None = None
    gpus: Gpus = 0
    """GPUs per replica"""


@record(kw_only=True)
class ModelResources:
    """A model server's cpu and memory per replica (its GPUs follow from `tensor_parallel`)."""

    __pydantic_config__ = SPEC_CONFIG
    cpu: Cpu | None = None
    memory: Size | None = None


@record(kw_only=True)
class HttpCheck:
    """Healthy when GET <path> on the named port answers with a status below 400."""

    __pydantic_config__ = SPEC_CONFIG
    path: str = "/"
    port: Name


@record(kw_only=True)
class TcpCheck:
    """Healthy when the named port accepts a connection."""

    __pydantic_config__ = SPEC_CONFIG
    port: Name


@record(kw_only=True)
class Health:
    """A health check: exactly one of `http`, `tcp` or `exec`, and its timing."""

    __pydantic_config__ = SPEC_CONFIG
    http: HttpCheck | None = None
    tcp: TcpCheck | None = None
    exec: Command | None = None
    interval: Duration = 10_000
    timeout: Duration = 3_000
    retries: Annotated[int, Bounds(ge=1, le=limits.MAX_RETRIES)] = 3
    start_period: Duration = 0

    def __post_init__(self) -> None:
        given = [k for k in ("http", "tcp", "exec") if getattr(self, k) is not None]
        if len(given) != 1:
            reject("combination", "a health check needs exactly one of `http`, `tcp` or `exec` (found: {found})",
                   {"found": ", ".join(given) or "none"})


@record(kw_only=True)
class Metrics:
    """Where Prometheus scrapes a service."""

    __pydantic_config__ = SPEC_CONFIG
    port: Name
    path: str = "/metrics"


@record(kw_only=True)
class Volume:
    """Persistent storage mounted into a service."""

    __pydantic_config__ = SPEC_CONFIG
    path: str
    """mount path inside the service"""
    size: Size | None = None


_METRIC_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
_LABEL_MATCHER = r'^[a-zA-Z_][a-zA-Z0-9_]*(=|!=|=~|!~)"([^"\\]|\\.)*"$'


@record(kw_only=True)
class Slo:
    """A service's availability (and optional latency) objective, and the metrics it is measured on."""

    __pydantic_config__ = SPEC_CONFIG
    availability: Annotated[float, Bounds(gt=0, lt=100)]
    """target percentage of good requests, e.g. 99.9"""
    latency_p99: Duration | None = None
    requests_metric: Annotated[str, Bounds(pattern=_METRIC_NAME)] = "http_requests_total"
    """counter of all requests the SLO counts; default `http_requests_total`"""
    errors_selector: Annotated[str, Bounds(pattern=_LABEL_MATCHER)] = 'code=~"5.."'
    """one label matcher that picks the failed requests out of `requests_metric`; default `code=~"5.."`"""
    latency_metric: Annotated[str, Bounds(pattern=_METRIC_NAME)] = "http_request_duration_seconds"
    """histogram (in seconds, without `_bucket`) that `latency_p99` is checked against;
    default `http_request_duration_seconds`"""


@record(kw_only=True)
class Service:
    """A service: an image (or a native command), its ports, environment, resources and replicas."""

    __pydantic_config__ = SPEC_CONFIG
    image: str | None = None
    exec: Command | None = None
    """native command (systemd runtime native)"""
    command: list[str] | None = None
    args: list[str] | None = None
    ports: dict[Name, Port] = field(default_factory=dict)
    env: dict[EnvVar, EnvValue] = field(default_factory=dict)
    secrets: dict[EnvVar, Name] = field(default_factory=dict)
    """environment variable -> secret name"""
    resources: Resources = field(default_factory=Resources)
    replicas: Replicas = 1
    depends_on: list[Name] = field(default_factory=list)
    health: Health | None = None
    metrics: Metrics | None = None
    volumes: dict[Name, Volume] = field(default_factory=dict)
    hosts: list[Name] | None = None
    slo: Slo | None = None
    restart: Restart = "on-failure"


@record(kw_only=True)
class Defaults:
    """Anything a service may set; merged under every service (and the model-relevant keys under models)."""

    __pydantic_config__ = SPEC_CONFIG
    image: str | None = None
    exec: list[str] | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    ports: dict[Name, Port] | None = None
    env: dict[EnvVar, EnvValue] | None = None
    secrets: dict[EnvVar, Name] | None = None
    resources: Resources | None = None
    replicas: Replicas | None = None
    depends_on: list[Name] | None = None
    health: Health | None = None
    metrics: Metrics | None = None
    volumes: dict[Name, Volume] | None = None
    hosts: list[Name] | None = None
    slo: Slo | None = None
    restart: Restart | None = None


Dtype = Literal["bfloat16", "float16", "float32"]
Quantization = Literal["awq", "gptq", "fp8", "int8", "int4"]


@record(kw_only=True)
class LlmModel:
    """A model served by vLLM's OpenAI-compatible server."""

    __pydantic_config__ = SPEC_CONFIG
    source: str
    """hub id or absolute local path"""
    revision: str | None = None
    served_name: str | None = None
    params_b: Annotated[float, Bounds(gt=0, le=limits.MAX_PARAMS_B)]
    """parameters in billions, for the GPU memory check"""
    dtype: Dtype = "bfloat16"
    quantization: Quantization | None = None
    max_model_len: Annotated[int, Bounds(ge=1, le=limits.MAX_MODEL_LEN)] | None = None
    tensor_parallel: Annotated[int, Bounds(ge=1, le=limits.MAX_GPUS)] = 1
    """GPUs per replica"""
    gpu_memory_utilization: Annotated[float, Bounds(gt=0, le=1)] = 0.9
    replicas: Replicas = 1
    port: Port = 8000
    image: str = DEFAULT_VLLM_IMAGE
    extra_args: list[str] = field(default_factory=list)
    env: dict[EnvVar, EnvValue] = field(default_factory=dict)
    secrets: dict[EnvVar, Name] = field(default_factory=dict)
    resources: ModelResources = field(default_factory=ModelResources)
    depends_on: list[Name] = field(default_factory=list)
    hosts: list[Name] | None = None
    restart: Restart = "on-failure"


@record(kw_only=True)
class Monitoring:
    """Scrape interval, generated alerts and dashboards, and extra rule groups."""

    __pydantic_config__ = SPEC_CONFIG
    scrape_interval: Duration = 15_000
    alerts: bool = True
    dashboards: bool = True
    rules: list[dict[str, Any]] = field(default_factory=list)
    """extra Prometheus rule groups, passed through"""
    runbooks: str | None = None
    """alerts link <runbooks><alert name>"""


class TargetsBase:
    """Where the stack compiles to; a target that is absent is not compiled."""

    __pydantic_config__ = SPEC_CONFIG


def _targets_class() -> type[TargetsBase]:
    """`targets:`, one optional field per deploying target of the registry, typed by the target's `Config`.

    Built from hxpc.compiler.targets.REGISTRY, so that adding a target needs no change here; pydantic,
    quickcheck and the JSON Schema see an ordinary frozen dataclass named `Targets`.
    """
    from hxpc.compiler.targets import deploying

    fields = {e.name: e.deploy().Config | None for e in deploying()}
    namespace: dict[str, Any] = {"__annotations__": fields, "__module__": __name__, "__qualname__": "Targets",
                                 "__doc__": TargetsBase.__doc__, **dict.fromkeys(fields)}
    return record(kw_only=True)(type("Targets", (TargetsBase,), namespace))


if TYPE_CHECKING:
    Targets = TargetsBase
else:
    Targets = _targets_class()


def _file_key(name: str) -> str:
    """The key a field has in the file: snake_case everywhere, except the Kubernetes-style `apiVersion`."""
    return "apiVersion" if name == "api_version" else name


_STACK_CONFIG: dict[str, Any] = {**SPEC_CONFIG, "alias_generator": _file_key, "validate_by_name": True}


@record(kw_only=True)
class Stack:
    """A stack: services, vLLM model servers, hosts and their GPU budgets, and where it compiles to."""

    __pydantic_config__ = _STACK_CONFIG
    api_version: Literal["hxpc/v1"]
    project: ProjectName
    defaults: Defaults = field(default_factory=Defaults)
    hosts: dict[Name, Host] = field(default_factory=dict)
    secrets: dict[Name, Secret] = field(default_factory=dict)
    models: dict[Name, LlmModel] = field(default_factory=dict)
    services: dict[Name, Service] = field(default_factory=dict)
    monitoring: Monitoring | None = None
    targets: Targets = field(default_factory=Targets)
    environments: dict[Name, dict[str, Any] | None] = field(default_factory=dict)
    """inline overlays by environment name, merged over the base (RFC 7386)"""


@functools.cache
def pydantic_adapter() -> "TypeAdapter[Stack]":
    """pydantic's validator for `Stack`: the authority on errors, and the source of the JSON Schema.

    Built on first use: importing pydantic and building it takes longer than compiling a small stack.
    """
    from pydantic import TypeAdapter

    return TypeAdapter(Stack)


def _without_required(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_required(v) for k, v in node.items() if k != "required"}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


def _one_line_descriptions(node: Any) -> Any:
    # field docstrings wrap at the source's line length; a description is one line of text
    if isinstance(node, dict):
        return {k: " ".join(v.split()) if k == "description" and isinstance(v, str) else _one_line_descriptions(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_one_line_descriptions(v) for v in node]
    return node


def json_schema(overlay: bool = False) -> dict[str, Any]:
    """The spec's JSON Schema; `overlay=True` gives the schema of an overlay file (every field optional)."""
    from pydantic.json_schema import GenerateJsonSchema

    class WithFactoryDefaults(GenerateJsonSchema):
        """Shows `{}`, `[]` and default sub-objects, which the dataclasses give as factories, as defaults."""

        def default_schema(self, schema: Any) -> Any:
            if "default_factory" in schema and not schema.get("default_factory_takes_data"):
                schema = {**schema, "default": schema["default_factory"]()}
                del schema["default_factory"]
            return super().default_schema(schema)

    schema: dict[str, Any] = _one_line_descriptions(
        pydantic_adapter().json_schema(by_alias=True, schema_generator=WithFactoryDefaults))
    if overlay:
        # an overlay file sets only what differs; `null` deletes, so any value may also be null
        schema = _without_required(schema)
        schema["properties"].pop("environments", None)
    name = "hxpc.overlay.schema.json" if overlay else "hxpc.schema.json"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://hxpc.dev/schemas/{name}"
    schema["title"] = f"hxpc {'overlay file' if overlay else 'stack spec'}, apiVersion hxpc/v1"
    return schema
