"""The catalogue of what each vLLM release exports on /metrics, and which of it hxpc's monitoring reads.

vLLM renames, adds and drops metrics between releases, so a model's rules and
dashboards follow the vLLM version in its image tag (`vllm/vllm-openai:v0.6.3`).
Each fact below holds from the named release on; they were read from vLLM's
`vllm/engine/metrics.py`, `vllm/v1/metrics/loggers.py`, `vllm/v1/engine/` and
`vllm/entrypoints/openai/api_server.py` at each release, and the test suite
checks them against the metric lists in tests/data/metrics/ on a real
Prometheus (the releases in `VERIFIED`):

- Before 0.8 the V0 engine serves /metrics from a multiprocess registry: no
  `process_*` series (so no `process_start_time_seconds`) and no `_created`
  series; gauges appear with the first stats log, histograms and
  `request_success_total` with the first finished request. It counts finished
  requests only by `stop`/`length`: an aborted request is removed from the
  scheduler before it could be counted.
- From 0.8.0 the V1 engine: the default registry (`process_*` series),
  `_created` series, an `engine` label on every `vllm:` series, every series
  present from start-up. Its `finished_reason="abort"` series stays 0 (client
  aborts are dropped without stats).
- From 0.8.5 HTTP status counters (`http_requests_total{status="5xx"}`, from
  prometheus-fastapi-instrumentator) are always on; 0.8.4 has them only with
  the V0 engine.
- From 0.9.2 the KV-cache gauge is `vllm:kv_cache_usage_perc` (the old
  `vllm:gpu_cache_usage_perc` was hidden in 0.11 and removed in 0.12).
- Requests the engine finishes with an error are counted as
  `finished_reason="error"` in 0.33.0, the first catalogued release that has
  it (0.12.0 does not); releases in between are watched by HTTP 5xx only.

A tag that names no version (`latest`, a digest, a date) or a minor release
outside the catalogued range is monitored as the nearest catalogued release,
and the model's `tag_note` says so (compile prints it). The DCGM exporter's names
(`DCGM_FI_DEV_*`) are stable across its releases; 4.x adds
`DCGM_FI_DEV_FB_RESERVED`, which FB_USED + FB_FREE do not include.
"""

from __future__ import annotations

import re
from functools import lru_cache

from hxpc.records import record

Version = tuple[int, ...]

# the releases whose /metrics the test suite checks hxpc's rules and dashboards against (tests/data/metrics/)
VERIFIED: tuple[Version, ...] = ((0, 6, 3), (0, 8, 4), (0, 8, 5), (0, 9, 2), (0, 10, 1), (0, 11, 0), (0, 12, 0),
                                 (0, 33, 0))
OLDEST: Version = VERIFIED[0]
NEWEST: Version = VERIFIED[-1]

V1_ENGINE_FROM: Version = (0, 8, 0)
HTTP_METRICS_FROM: Version = (0, 8, 5)
KV_CACHE_RENAMED_IN: Version = (0, 9, 2)
ENGINE_ERRORS_FROM: Version = (0, 33, 0)

DCGM_PORT = 9400
DCGM_XID_ERRORS = "DCGM_FI_DEV_XID_ERRORS"
DCGM_FB_USED = "DCGM_FI_DEV_FB_USED"
DCGM_FB_FREE = "DCGM_FI_DEV_FB_FREE"
DCGM_FB_RESERVED = "DCGM_FI_DEV_FB_RESERVED"  # dcgm-exporter 4.x only
DCGM_GPU_TEMP = "DCGM_FI_DEV_GPU_TEMP"
DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
DCGM_METRICS = frozenset({DCGM_XID_ERRORS, DCGM_FB_USED, DCGM_FB_FREE, DCGM_GPU_TEMP, DCGM_GPU_UTIL})
DCGM_OPTIONAL = frozenset({DCGM_FB_RESERVED})  # read where exported, never required

# what Prometheus itself adds to every scraped target, and what client libraries export about the process
SCRAPE_SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
PROCESS_METRICS = frozenset({"process_start_time_seconds", "process_cpu_seconds_total",
                             "process_resident_memory_bytes"})

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def show(version: Version) -> str:
    return ".".join(str(p) for p in version)


@record
class FailureSignal:
    """One way a vLLM release's /metrics shows failed requests: a counter of all requests, the label matcher that
    picks out the failed ones, and one that keeps only inference requests (or "")."""

    name: str  # the `signal` label of the recorded failure ratio and of the alert
    metric: str
    failed: str
    scope: str
    what: str  # for people: the dashboards, the README and compile's warnings


HTTP_5XX = FailureSignal("http_5xx", "http_requests_total", 'status="5xx"', 'handler=~"/v1/.*"',
                         "HTTP 5xx of the /v1 endpoints (`http_requests_total`)")
# a streamed request that fails after its first token is a 2xx to the HTTP layer; the engine still counts it
ENGINE_ERROR = FailureSignal("engine_error", "vllm:request_success_total", 'finished_reason="error"', "",
                             "engine errors (`vllm:request_success_total{finished_reason=\"error\"}`)")


NO_FAILURE_SIGNAL = ("exports no failed-request signal on /metrics (no HTTP status counters, and aborted requests "
                     "are never counted)")


@record
class VllmMetrics:
    """What one vLLM release exports that hxpc reads, and how it shows failures and restarts."""

    version: Version  # the release whose facts apply
    engine: str  # "v0" or "v1"
    requests_waiting: str
    requests_running: str
    kv_cache_usage: str
    ttft_seconds: str  # histogram base name; `_bucket` is appended where queried
    e2e_seconds: str
    prompt_tokens: str
    generation_tokens: str
    requests_finished: str
    process_metrics: bool  # process_start_time_seconds and friends
    failures: tuple[FailureSignal, ...]  # every failed-request signal, empty when there is none
    tag_note: str = ""  # why this release's facts apply to an image whose tag does not name it, or ""

    @property
    def names(self) -> frozenset[str]:
        """Every series name this release exposes that hxpc reads (histograms as `_bucket`)."""
        out = {self.requests_waiting, self.requests_running, self.kv_cache_usage, f"{self.ttft_seconds}_bucket",
               f"{self.e2e_seconds}_bucket", self.prompt_tokens, self.generation_tokens, self.requests_finished}
        out |= {f.metric for f in self.failures}
        return frozenset(out | (PROCESS_METRICS if self.process_metrics else set()))

    def restarts(self, selector: str, window: str) -> str:
        """PromQL counting the server's restarts per series over `window`.

        The process start time where the release exports it; else the resets of
        a counter every restart zeroes (an idle restart leaves it at 0 and shows
        only in `up`).
        """
        if self.process_metrics:
            return f"changes(process_start_time_seconds{selector}[{window}])"
        return f"resets({self.prompt_tokens}{selector}[{window}])"

    @property
    def restart_signal(self) -> str:
        return ("`process_start_time_seconds`" if self.process_metrics
                else f"resets of `{self.prompt_tokens}` (no `process_*` series)")

    @property
    def failures_unavailable(self) -> str:
        """Why failed requests are not watched for this release ("" when they are)."""
        if self.failures:
            return ""
        return f"vLLM < {show(HTTP_METRICS_FROM)} {NO_FAILURE_SIGNAL}"


def image_version(image: str | None) -> Version | None:
    """The vLLM version in an image reference's tag; None when the tag is not a version."""
    if not image or "@" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    match = _VERSION.match(last.split(":", 1)[1])
    if match is None:
        return None
    return tuple(int(g) for g in match.groups() if g is not None)


def _note(image: str | None, version: Version | None) -> tuple[Version, str]:
    """The catalogued release whose facts apply, and why, when that is not the tag's own version."""
    tag = (image or "").rsplit("/", 1)[-1]
    if version is None:
        return NEWEST, (f"the image `{image}` names no vLLM version; monitored as vLLM {show(NEWEST)}, the newest "
                        f"hxpc knows (pin a version tag such as `:v{show(NEWEST)}`)")
    if version[:2] > NEWEST[:2]:
        return NEWEST, (f"`{tag}` is newer than any vLLM hxpc knows; monitored as vLLM {show(NEWEST)}, whose metric "
                        "names may have changed since")
    if version[:2] < OLDEST[:2]:
        return OLDEST, (f"`{tag}` is older than any vLLM hxpc knows; monitored as vLLM {show(OLDEST)}, whose metric "
                        "names may differ")
    return version, ""


@lru_cache(maxsize=64)
def for_version(version: Version, tag_note: str = "") -> VllmMetrics:
    v1 = version >= V1_ENGINE_FROM
    failures = ((HTTP_5XX,) if version >= HTTP_METRICS_FROM else ()) + \
               ((ENGINE_ERROR,) if version >= ENGINE_ERRORS_FROM else ())
    return VllmMetrics(
        version=version,
        engine="v1" if v1 else "v0",
        requests_waiting="vllm:num_requests_waiting",
        requests_running="vllm:num_requests_running",
        kv_cache_usage="vllm:kv_cache_usage_perc" if version >= KV_CACHE_RENAMED_IN else "vllm:gpu_cache_usage_perc",
        ttft_seconds="vllm:time_to_first_token_seconds",
        e2e_seconds="vllm:e2e_request_latency_seconds",
        prompt_tokens="vllm:prompt_tokens_total",
        generation_tokens="vllm:generation_tokens_total",
        requests_finished="vllm:request_success_total",
        process_metrics=v1,
        failures=failures,
        tag_note=tag_note,
    )


def for_image(image: str | None) -> VllmMetrics:
    return for_version(*_note(image, image_version(image)))


def scraped_metrics(kind: str, image: str | None = None, extra: frozenset[str] = frozenset()) -> frozenset[str]:
    """What a scrape job of `kind` (service, model, dcgm) exposes, as far as hxpc's queries are concerned.

    A model exposes what its vLLM release does (process metrics only from the V1
    engine on); a service what its spec says it does (`extra`: its SLO metrics),
    since hxpc cannot know more about arbitrary software (rules may still read
    `process_start_time_seconds` where it exists, but dashboards do not).
    """
    if kind == "model":
        return SCRAPE_SYNTHETIC | for_image(image).names
    if kind == "dcgm":
        return SCRAPE_SYNTHETIC | DCGM_METRICS | DCGM_OPTIONAL
    return SCRAPE_SYNTHETIC | extra


def watch_table() -> list[tuple[str, str, str, str, str]]:
    """What hxpc watches for each catalogued release: version, engine, KV-cache gauge, failures, restarts."""
    rows = []
    for version in VERIFIED:
        m = for_version(version)
        failures = ", ".join(f"`{f.name}`: {f.what}" for f in m.failures) or "**not watched**: no signal on /metrics"
        rows.append((show(version), m.engine.upper(), f"`{m.kv_cache_usage}`", failures, m.restart_signal))
    return rows
