"""The metric names hxpc's monitoring reads, pinned per vLLM version and per exporter.

vLLM renames metrics between releases, so a model's alerts and dashboards use
the names of the vLLM version in its image tag (`vllm/vllm-openai:v0.6.3`).
Facts the catalogue rests on, checked against vLLM's `vllm/v1/metrics/loggers.py`
and `vllm/engine/metrics.py` at the named tags:

- `vllm:gpu_cache_usage_perc` is the only KV-cache gauge up to v0.9.1; v0.9.2
  added `vllm:kv_cache_usage_perc` and deprecated the old name (hidden in
  0.11, removed in 0.12). hxpc uses the new name from 0.9.2 on.
- HTTP status counters (`http_requests_total{status="5xx"}`, from
  prometheus-fastapi-instrumentator) were wired into the OpenAI server in
  spring 2025 (vLLM PRs #15657 and #15894); hxpc assumes them from 0.8.4. Older
  servers count only finished requests by `finished_reason`, so there a failed
  request is one that finished as `abort`.
- A tag that is not a version (`latest`, `nightly`, a digest) is taken to be
  the newest vLLM, since that is what such a tag pulls.

The DCGM exporter's names (`DCGM_FI_DEV_*`) have been stable for years; its
series carry the GPU index in `gpu`. `scraped_metrics` lists what each kind of
scrape job exposes, so tests can check that dashboards query nothing unscraped.
"""

from __future__ import annotations

import re
from functools import lru_cache

from hxpc.records import record

Version = tuple[int, ...]

KV_CACHE_RENAMED_IN: Version = (0, 9, 2)
HTTP_METRICS_FROM: Version = (0, 8, 4)
NEWEST: Version = (999,)

DCGM_PORT = 9400
DCGM_XID_ERRORS = "DCGM_FI_DEV_XID_ERRORS"
DCGM_FB_USED = "DCGM_FI_DEV_FB_USED"
DCGM_FB_FREE = "DCGM_FI_DEV_FB_FREE"
DCGM_GPU_TEMP = "DCGM_FI_DEV_GPU_TEMP"
DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
DCGM_METRICS = frozenset({DCGM_XID_ERRORS, DCGM_FB_USED, DCGM_FB_FREE, DCGM_GPU_TEMP, DCGM_GPU_UTIL})

# what Prometheus itself adds to every scraped target, and what client libraries export about the process
SCRAPE_SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
PROCESS_METRICS = frozenset({"process_start_time_seconds", "process_cpu_seconds_total",
                             "process_resident_memory_bytes"})

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?")


@record
class VllmMetrics:
    """The names one vLLM version exposes, and how that version counts failed requests."""

    version: Version
    requests_waiting: str
    requests_running: str
    kv_cache_usage: str
    ttft_seconds: str  # histogram base name; `_bucket` is appended where queried
    e2e_seconds: str
    prompt_tokens: str
    generation_tokens: str
    requests_finished: str
    failures_metric: str  # counter holding both failed and all requests ...
    failures_matcher: str  # ... the label matcher that picks the failed ones out of it ...
    failures_scope: str  # ... and one that keeps only inference requests (not /metrics), or ""

    @property
    def names(self) -> frozenset[str]:
        """Every series name this version exposes that hxpc reads (histograms as `_bucket`)."""
        return frozenset({self.requests_waiting, self.requests_running, self.kv_cache_usage,
                          f"{self.ttft_seconds}_bucket", f"{self.e2e_seconds}_bucket", self.prompt_tokens,
                          self.generation_tokens, self.requests_finished, self.failures_metric})


def image_version(image: str | None) -> Version:
    """The vLLM version in an image reference's tag; NEWEST when the tag is not a version."""
    if not image or "@" in image:
        return NEWEST
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return NEWEST
    match = _VERSION.match(last.split(":", 1)[1])
    if match is None:
        return NEWEST
    return tuple(int(g) for g in match.groups() if g is not None)


@lru_cache(maxsize=64)
def for_version(version: Version) -> VllmMetrics:
    http = version >= HTTP_METRICS_FROM
    return VllmMetrics(
        version=version,
        requests_waiting="vllm:num_requests_waiting",
        requests_running="vllm:num_requests_running",
        kv_cache_usage="vllm:kv_cache_usage_perc" if version >= KV_CACHE_RENAMED_IN else "vllm:gpu_cache_usage_perc",
        ttft_seconds="vllm:time_to_first_token_seconds",
        e2e_seconds="vllm:e2e_request_latency_seconds",
        prompt_tokens="vllm:prompt_tokens_total",
        generation_tokens="vllm:generation_tokens_total",
        requests_finished="vllm:request_success_total",
        failures_metric="http_requests_total" if http else "vllm:request_success_total",
        failures_matcher='status="5xx"' if http else 'finished_reason="abort"',
        failures_scope='handler=~"/v1/.*"' if http else "",
    )


def for_image(image: str | None) -> VllmMetrics:
    return for_version(image_version(image))


def scraped_metrics(kind: str, image: str | None = None, extra: frozenset[str] = frozenset()) -> frozenset[str]:
    """What a scrape job of `kind` (service, model, dcgm) exposes, as far as hxpc's queries are concerned.

    A service exposes what its spec says it does (`extra`: its SLO metrics);
    hxpc cannot know more about arbitrary software (rules may still read
    `process_start_time_seconds` where it exists, but dashboards do not).
    """
    if kind == "model":
        return SCRAPE_SYNTHETIC | PROCESS_METRICS | for_image(image).names
    if kind == "dcgm":
        return SCRAPE_SYNTHETIC | DCGM_METRICS
    return SCRAPE_SYNTHETIC | extra
