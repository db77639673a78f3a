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
from hxpc.compiler.fieldrules import Bounds, Describe, reject
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
    """free-form labels of the host"""
    cpu: Cpu | None = None
    """cores of the host, for the resources report"""
    memory: Size | None = None
    """memory of the host, for the resources report"""
    gpus: GpuBudget | None = None
    """the host's GPUs: count, product and memory per GPU; absent: no GPUs"""


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


# user and group ids as Kubernetes accepts them (0 to 2^31-1), which Linux and the container runtimes do too
MAX_ID = 2**31 - 1


@record(kw_only=True)
class Security:
    """Which user a service's or model's processes run as, and whether their root filesystem is read-only.

    Unset fields keep each target's default (kubernetes: uid and gid 65532; compose and docker: the image's
    own user). `run_as_root: true` runs as uid 0, which takes a pod out of Pod Security "restricted" (the
    plan warns and the namespace is labelled with the level its pods meet)."""

    __pydantic_config__ = SPEC_CONFIG
    run_as_user: Annotated[int, Bounds(ge=0, le=MAX_ID)] | None = None
    """the uid its processes run as"""
    run_as_group: Annotated[int, Bounds(ge=0, le=MAX_ID)] | None = None
    """the gid its processes run as (needs `run_as_user`)"""
    read_only_root_filesystem: bool | None = None
    """mount the image's filesystem read-only (writable: volumes and /tmp)"""
    run_as_root: bool = False
    """run as uid 0; on kubernetes the pod then leaves the "restricted" Pod Security level"""

    def __post_init__(self) -> None:
        if self.run_as_root and self.run_as_user not in (None, 0):
            reject("combination", "`run_as_root: true` runs as uid 0; drop `run_as_user` or `run_as_root`")
        if self.run_as_user == 0 and not self.run_as_root:
            reject("combination", "uid 0 is root: say so with `run_as_root: true`")
        if self.run_as_group is not None and self.run_as_user is None and not self.run_as_root:
            # a container runtime's --user takes a group only after a user
            reject("combination", "`run_as_group` needs `run_as_user` (or `run_as_root: true`)")

    def container_user(self) -> str | None:
        """`uid:gid` for a container runtime's `--user` (None: the image's own user)."""
        if self.run_as_user is None and not self.run_as_root:
            return None
        user = 0 if self.run_as_root else self.run_as_user
        return f"{user}:{self.run_as_group if self.run_as_group is not None else user}"


@record(kw_only=True)
class Resources:
    """A service's cpu, memory and GPUs per replica."""

    __pydantic_config__ = SPEC_CONFIG
    cpu: Cpu | None = None
    """cores per replica (`0.5`, `2`, `500m`); absent: no limit"""
    memory: Size | None = None
    """memory per replica (`512Mi`, `2Gi`); absent: no limit"""
    gpus: Gpus = 0
    """GPUs per replica"""


@record(kw_only=True)
class ModelResources:
    """A model server's cpu and memory per replica (its GPUs follow from `tensor_parallel`)."""

    __pydantic_config__ = SPEC_CONFIG
    cpu: Cpu | None = None
    """cores per replica (`0.5`, `2`, `500m`); absent: no limit"""
    memory: Size | None = None
    """host memory per replica (`512Mi`, `64Gi`); absent: no limit"""


@record(kw_only=True)
class HttpCheck:
    """Healthy when GET <path> on the named port answers with a status below 400."""

    __pydantic_config__ = SPEC_CONFIG
    path: str = "/"
    """path requested"""
    port: Name
    """name of one of the service's `ports`"""


@record(kw_only=True)
class TcpCheck:
    """Healthy when the named port accepts a connection."""

    __pydantic_config__ = SPEC_CONFIG
    port: Name
    """name of one of the service's `ports`"""


@record(kw_only=True)
class Health:
    """A health check: exactly one of `http`, `tcp` or `exec`, and its timing."""

    __pydantic_config__ = SPEC_CONFIG
    http: HttpCheck | None = None
    """healthy when GET <path> on the named port answers below 400"""
    tcp: TcpCheck | None = None
    """healthy when the named port accepts a connection"""
    exec: Command | None = None
    """healthy when this command exits 0 (inside the container, or as the unit's user when native)"""
    interval: Duration = 10_000
    """time between checks"""
    timeout: Duration = 3_000
    """time one check may take before it counts as failed"""
    retries: Annotated[int, Bounds(ge=1, le=limits.MAX_RETRIES)] = 3
    """consecutive failures before the service counts as unhealthy"""
    start_period: Duration = 0
    """time after start during which failures do not count"""

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
    """name of one of the service's `ports`"""
    path: str = "/metrics"
    """path Prometheus scrapes"""


@record(kw_only=True)
class Volume:
    """Persistent storage mounted into a service."""

    __pydantic_config__ = SPEC_CONFIG
    path: str
    """mount path inside the service"""
    size: Size | None = None
    """requested size (Kubernetes volume claims); other targets do not limit it"""


_METRIC_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
_LABEL_MATCHER = r'^[a-zA-Z_][a-zA-Z0-9_]*(=|!=|=~|!~)"([^"\\]|\\.)*"$'


@record(kw_only=True)
class Slo:
    """A service's availability (and optional latency) objective, and the metrics it is measured on."""

    __pydantic_config__ = SPEC_CONFIG
    availability: Annotated[float, Bounds(gt=0, lt=100)]
    """target percentage of good requests, e.g. 99.9"""
    latency_p99: Duration | None = None
    """99th percentile latency objective, checked against `latency_metric`"""
    requests_metric: Annotated[str, Bounds(pattern=_METRIC_NAME)] = "http_requests_total"
    """counter of all requests the SLO counts; default `http_requests_total`"""
    errors_selector: Annotated[str, Bounds(pattern=_LABEL_MATCHER)] = 'code=~"5.."'
    """one label matcher that picks the failed requests out of `requests_metric`; default `code=~"5.."`"""
    latency_metric: Annotated[str, Bounds(pattern=_METRIC_NAME)] = "http_request_duration_seconds"
    """histogram (in seconds, without `_bucket`) that `latency_p99` is checked against;
    default `http_request_duration_seconds`"""


@record(kw_only=True)
class Update:
    """How a change replaces a service's or model's replicas: a few at a time, each new one healthy first."""

    __pydantic_config__ = SPEC_CONFIG
    max_unavailable: Replicas = 1
    """replicas replaced at most this many at a time, each new one gated healthy before the next goes; a replica
    holding something exclusive (GPUs, a fixed host port) stops before its replacement starts, any other starts
    beside it; 0 is allowed only where every replica can start beside its old one"""


@record(kw_only=True)
class Service:
    """A service: an image (or a native command), its ports, environment, resources and replicas."""

    __pydantic_config__ = SPEC_CONFIG
    image: str | None = None
    """container image; a service needs `image` (containers) or `exec` (native), or both"""
    exec: Command | None = None
    """native command (systemd runtime native)"""
    command: list[str] | None = None
    """container entrypoint override"""
    args: list[str] | None = None
    """container arguments"""
    ports: dict[Name, Port] = field(default_factory=dict)
    """port name -> the port the service listens on; replica i of a systemd service publishes port + i"""
    env: dict[EnvVar, EnvValue] = field(default_factory=dict)
    """environment variables (values are text; numbers and booleans are written as text)"""
    secrets: dict[EnvVar, Name] = field(default_factory=dict)
    """environment variable -> secret name"""
    resources: Resources = field(default_factory=Resources)
    """cpu, memory and GPUs per replica"""
    replicas: Replicas = 1
    """how many instances run"""
    depends_on: list[Name] = field(default_factory=list)
    """services or models started (and healthy) before this one"""
    health: Health | None = None
    """the health check apply gates on and the targets configure"""
    metrics: Metrics | None = None
    """where Prometheus scrapes the service; absent: not scraped"""
    volumes: dict[Name, Volume] = field(default_factory=dict)
    """persistent storage by name"""
    hosts: list[Name] | None = None
    """hosts its replicas are placed on, round-robin; default: every host of targets.systemd.hosts"""
    slo: Slo | None = None
    """service level objective: generated SLO recording rules and burn-rate alerts"""
    restart: Restart = "on-failure"
    """when the service is restarted after it exits: always, on-failure or never"""
    update: Update = field(default_factory=Update)
    """how replicas are replaced when they change: at most `max_unavailable` at a time, each healthy first"""
    security: Security | None = None
    """the user it runs as and a read-only root filesystem"""


@record(kw_only=True)
class Defaults:
    """Anything a service may set; merged under every service (and the model-relevant keys under models)."""

    __pydantic_config__ = SPEC_CONFIG
    image: str | None = None
    """container image of every service that sets none"""
    exec: list[str] | None = None
    """native command of every service that sets none"""
    command: list[str] | None = None
    """container entrypoint override of every service that sets none"""
    args: list[str] | None = None
    """container arguments of every service that sets none"""
    ports: dict[Name, Port] | None = None
    """named ports merged under every service's `ports`"""
    env: dict[EnvVar, EnvValue] | None = None
    """environment variables merged under every service's and model's `env`"""
    secrets: dict[EnvVar, Name] | None = None
    """environment variable -> secret name, merged under every service's `secrets`"""
    resources: Resources | None = None
    """cpu and memory (and GPUs for services) merged under every service's and model's `resources`"""
    replicas: Replicas | None = None
    """replicas of every service and model that sets none"""
    depends_on: list[Name] | None = None
    """dependencies of every service that sets none"""
    health: Health | None = None
    """health check of every service that sets none"""
    metrics: Metrics | None = None
    """metrics endpoint of every service that sets none"""
    volumes: dict[Name, Volume] | None = None
    """volumes merged under every service's `volumes`"""
    hosts: list[Name] | None = None
    """placement of every service and model that sets none"""
    slo: Slo | None = None
    """service level objective of every service that sets none"""
    restart: Restart | None = None
    """restart policy of every service and model that sets none"""
    update: Update | None = None
    """how replicas are replaced, for every service and model that sets none"""
    security: Security | None = None
    """the user every service and model that sets none runs as"""


Dtype = Literal["bfloat16", "float16", "float32"]
Quantization = Literal["awq", "gptq", "fp8", "int8", "int4", "bitsandbytes"]
KvCacheDtype = Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]
# counts and sizes of a model's shape and scheduler; vLLM reads them as 32-bit integers
Positive = Annotated[int, Bounds(ge=1, le=limits.MAX_MODEL_LEN)]


@record(kw_only=True)
class Architecture:
    """A model's shape for sizing its KV cache: the numbers of its config.json, or the path of that file."""

    __pydantic_config__ = SPEC_CONFIG
    config: str | None = None
    """a Hugging Face config.json, relative to the spec file (or absolute); instead of the numbers"""
    layers: Positive | None = None
    """attention layers (num_hidden_layers)"""
    kv_heads: Positive | None = None
    """key/value heads (num_key_value_heads)"""
    head_dim: Positive | None = None
    """size of one attention head (head_dim, or hidden_size / num_attention_heads)"""
    hidden_size: Positive | None = None
    """optional: sizes the profiling run and the 16-bit embeddings of quantized checkpoints"""
    intermediate_size: Positive | None = None
    """optional: MLP width one token activates"""
    vocab_size: Positive | None = None
    """optional: sizes the sampler's share of the profiling run and the embeddings"""
    tie_word_embeddings: bool | None = None
    """optional: whether the output layer shares the input embeddings' weights (tie_word_embeddings)"""
    max_position_embeddings: Positive | None = None
    """optional: the length vLLM uses when `max_model_len` is not set"""

    def __post_init__(self) -> None:
        numbers = [k for k in ("layers", "kv_heads", "head_dim") if getattr(self, k) is not None]
        extras = [k for k in ("hidden_size", "intermediate_size", "vocab_size", "tie_word_embeddings",
                              "max_position_embeddings") if getattr(self, k) is not None]
        if self.config is not None and (numbers or extras):
            reject("combination", "`architecture` takes either `config` or the numbers, not both (found: {found})",
                   {"found": ", ".join(["config", *numbers, *extras])})
        if self.config is None and len(numbers) != 3:
            reject("combination", "`architecture` needs `layers`, `kv_heads` and `head_dim` (or `config`); "
                   "missing: {missing}",
                   {"missing": ", ".join(k for k in ("layers", "kv_heads", "head_dim") if k not in numbers)})


@record(kw_only=True)
class LlmModel:
    """A model served by vLLM's OpenAI-compatible server."""

    __pydantic_config__ = SPEC_CONFIG
    source: str
    """hub id or absolute local path"""
    revision: str | None = None
    """model revision (branch, tag or commit) to load"""
    served_name: str | None = None
    """name clients use in API requests (`--served-model-name`); default: `source`"""
    params_b: Annotated[float, Bounds(gt=0, le=limits.MAX_PARAMS_B)]
    """parameters in billions, for the GPU memory check"""
    dtype: Dtype = "bfloat16"
    """weights' data type: bfloat16, float16 or float32"""
    quantization: Quantization | None = None
    """how the checkpoint is stored (`--quantization`); bitsandbytes also sets `--load-format bitsandbytes`"""
    kv_cache_dtype: KvCacheDtype = "auto"
    """`--kv-cache-dtype`; fp8 halves the KV cache per token"""
    architecture: Architecture | None = None
    """layers, KV heads and head size for the KV-cache check; optional for models in hxpc's catalogue"""
    max_model_len: Positive | None = None
    """longest sequence (prompt + output tokens) the server accepts; default: the model's own"""
    max_num_batched_tokens: Positive | None = None
    """`--max-num-batched-tokens`: tokens per scheduler step, and the size of vLLM's memory-profiling run"""
    max_num_seqs: Positive | None = None
    """`--max-num-seqs`: sequences per scheduler step"""
    enforce_eager: bool = False
    """`--enforce-eager`: no CUDA graphs"""
    tensor_parallel: Annotated[int, Bounds(ge=1, le=limits.MAX_GPUS)] = 1
    """GPUs per replica"""
    gpu_memory_utilization: Annotated[float, Bounds(gt=0, le=1)] = 0.9
    """share of each GPU's memory vLLM may use (weights, activations, KV cache)"""
    replicas: Replicas = 1
    """how many servers run"""
    port: Port = 8000
    """port the server listens on"""
    image: str = DEFAULT_VLLM_IMAGE
    """vLLM OpenAI server image; its tag tells hxpc which vLLM version runs"""
    extra_args: list[str] = field(default_factory=list)
    """further vLLM flags, appended after the derived ones"""
    env: dict[EnvVar, EnvValue] = field(default_factory=dict)
    """environment variables of the server"""
    secrets: dict[EnvVar, Name] = field(default_factory=dict)
    """environment variable -> secret name (e.g. HF_TOKEN)"""
    resources: ModelResources = field(default_factory=ModelResources)
    """cpu and host memory per replica (its GPUs follow from `tensor_parallel`)"""
    depends_on: list[Name] = field(default_factory=list)
    """services or models started (and healthy) before this one"""
    hosts: list[Name] | None = None
    """hosts its replicas are placed on, round-robin; default: every host of targets.systemd.hosts"""
    restart: Restart = "on-failure"
    """when the server is restarted after it exits: always, on-failure or never"""
    update: Update = field(default_factory=Update)
    """how replicas are replaced when they change: at most `max_unavailable` at a time, each healthy first"""
    security: Security | None = None
    """the user it runs as and a read-only root filesystem"""


@record(kw_only=True)
class Monitoring:
    """Scrape interval, generated alerts and dashboards, and extra rule groups."""

    __pydantic_config__ = SPEC_CONFIG
    scrape_interval: Duration = 15_000
    """how often Prometheus scrapes every target"""
    alerts: bool = True
    """generate alerting rules"""
    dashboards: bool = True
    """generate Grafana dashboards"""
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

    fields = {}
    for e in deploying():
        config = e.deploy().Config
        about = " ".join((config.__doc__ or "").split()).rstrip(".")
        fields[e.name] = Annotated[config | None, Describe(f"the {e.name} target: {about}; absent: not compiled")]
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
    """the spec format's version; always `hxpc/v1`"""
    project: ProjectName
    """DNS label (a-z, 0-9, -; at most 40 characters) that prefixes every generated name"""
    defaults: Defaults = field(default_factory=Defaults)
    """settings merged under every service (and the model-relevant ones under every model) after overlays"""
    hosts: dict[Name, Host] = field(default_factory=dict)
    """machines for the systemd and compose targets, by name, with their GPU budgets"""
    secrets: dict[Name, Secret] = field(default_factory=dict)
    """secrets by name, each a reference to where apply reads its value; values never enter a spec, artifact, plan
    or log"""
    models: dict[Name, LlmModel] = field(default_factory=dict)
    """LLM model servers (vLLM's OpenAI-compatible server) by name"""
    services: dict[Name, Service] = field(default_factory=dict)
    """services by name: an image or a native command, with ports, environment, health check and replicas"""
    monitoring: Monitoring | None = None
    """generated Prometheus scrape configs, rules and Grafana dashboards; absent: none"""
    targets: Targets = field(default_factory=Targets)
    """what the stack compiles to and how it is applied; a target that is absent is not compiled"""
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
