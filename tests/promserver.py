"""A real Prometheus and fake exporters for tests that check generated monitoring against what servers export.

`start_prometheus()` runs Debian's `/usr/bin/prometheus` on 127.0.0.1 (free port, temporary TSDB, lifecycle API,
short scrape and evaluation intervals) and talks to its HTTP API with the standard library only.

`FakeExporter` serves `/metrics` in the Prometheus text format from one of the metric lists in
tests/data/metrics/*.yaml (what a given vLLM version or dcgm-exporter really exposes). It starts "healthy":
every series the list says exists, with steady traffic (counters rising, histograms observing), failure series
absent (`absent_when_healthy`) or flat at 0 (`zero_when_healthy`). With `idle=True` it starts as a server that
has had no request yet: series that `appear` only with traffic are absent and counters stay flat, until
`serve_traffic()`. Tests then inject bad data at run time (`set`, `rate`, `inc`, `observe`, `restart`,
`set_available`). By default it refuses series the real exporter
never produces (a metric or label value not in the list), so a test cannot inject a signal that version lacks.
"""

from __future__ import annotations

import contextlib
import http.server
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml import YAML

DATA = Path(__file__).resolve().parent / "data" / "metrics"
PROMETHEUS = "/usr/bin/prometheus"

T = TypeVar("T")

# ------------------------------------------------------------------------------------------------ helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.2, what: str = "") -> T:
    """Call `predicate` until it returns something truthy and return that; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    error: Exception | None = None
    while True:
        try:
            value = predicate()
            last, error = value, None
            if value:
                return value
        except (OSError, ValueError, KeyError) as exc:  # server not ready yet, or an answer still incomplete
            error = exc
        if time.monotonic() >= deadline:
            detail = f"; last error: {error!r}" if error else f"; last value: {last!r}"
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate!r}{detail}")
        time.sleep(interval)


def _yaml() -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    return yaml


def _dump(doc: Any) -> str:
    out = StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels_text(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


# ------------------------------------------------------------------------------------------------ Prometheus


class PrometheusError(RuntimeError):
    pass


@dataclass
class PromServer:
    """A running Prometheus; see start_prometheus()."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    config_path: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- raw HTTP ---------------------------------------------------------------------------------------

    def _request(self, path: str, params: Mapping[str, str] | None = None, method: str = "GET",
                 timeout: float = 10.0) -> bytes:
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read())

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """The `data` of a /api/v1 call; PrometheusError if Prometheus answers with an error."""
        try:
            body = self._request("/api/v1/" + path.lstrip("/"), params)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise PrometheusError(f"{path} {dict(params or {})}: HTTP {exc.code}: {detail}") from exc
        answer = json.loads(body)
        if answer.get("status") != "success":
            raise PrometheusError(f"{path} {dict(params or {})}: {answer}")
        return answer["data"]

    # --- API --------------------------------------------------------------------------------------------

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector `expr` evaluates to now: [{"metric": {...}, "value": float}, ...].

        A scalar result comes back as one element with an empty metric.
        """
        data = self.api("query", {"query": expr})
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            return [{"metric": {}, "value": float(result[1])}]
        if kind != "vector":
            raise PrometheusError(f"{expr!r} is a {kind}, not an instant vector")
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in result]

    def query_value(self, expr: str) -> float | None:
        """The single value of `expr`, None when it is empty; PrometheusError when it has several series."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{expr!r} has {len(result)} series: {result}")
        return float(result[0]["value"])

    def targets(self) -> list[dict[str, Any]]:
        """The active targets (each with labels, scrapeUrl, health, lastError)."""
        return list(self.api("targets", {"state": "active"})["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (recording and alerting), each with its `group` added."""
        out: list[dict[str, Any]] = []
        for group in self.api("rules")["groups"]:
            for rule in group["rules"]:
                out.append({**rule, "group": group["name"]})
        return out

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["groups"])

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (state pending or firing), each with labels and annotations."""
        return list(self.api("alerts")["alerts"])

    def alert_states(self) -> dict[str, set[str]]:
        """Alert name -> the states it is in now (pending, firing)."""
        states: dict[str, set[str]] = {}
        for alert in self.alerts():
            states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return states

    def reload(self) -> None:
        """Re-read the configuration and rule files (POST /-/reload)."""
        self._request("/-/reload", method="POST")

    def ready(self) -> bool:
        try:
            self._request("/-/ready", timeout=2.0)
        except OSError:
            return False
        return True

    def wait_until(self, predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.2,
                   what: str = "") -> T:
        return wait_until(predicate, timeout=timeout, interval=interval, what=what)

    def wait_for_targets_up(self, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until every active target has been scraped successfully; the targets."""
        def all_up() -> list[dict[str, Any]]:
            targets = self.targets()
            return targets if targets and all(t["health"] == "up" for t in targets) else []
        return self.wait_until(all_up, timeout, what=f"every target up (log: {self.log_path})")

    def wait_for_value(self, expr: str, check: Callable[[float], bool] = bool, timeout: float = 20.0) -> float:
        """Wait until `expr` has a single value for which `check` holds; that value."""
        found: list[float] = []

        def ok() -> bool:
            value = self.query_value(expr)
            if value is not None and check(value):
                found.append(value)
                return True
            return False

        self.wait_until(ok, timeout, what=repr(expr))
        return found[-1]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop this Prometheus (SIGTERM, then SIGKILL) and reap it; only the process this object started."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def __enter__(self) -> PromServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def prometheus_binary() -> str | None:
    """Debian's prometheus server binary, or None when it is not installed."""
    return PROMETHEUS if os.access(PROMETHEUS, os.X_OK) else None


def build_config(config_text: str, rule_files: Sequence[str | Path] = (), *, scrape_interval: str = "1s",
                 evaluation_interval: str = "1s", force_scrape_interval: bool = True) -> dict[str, Any]:
    """A Prometheus configuration from `config_text` (a whole prometheus.yml or just `scrape_configs:`).

    Sets the global scrape and evaluation intervals (and, with force_scrape_interval, every job's
    scrape_interval, since generated jobs say 15s), and lists `rule_files`.
    """
    doc = _yaml().load(config_text) or {}
    if not isinstance(doc, dict):
        raise ValueError("the configuration must be a mapping")
    glob = dict(doc.get("global") or {})
    glob["scrape_interval"] = scrape_interval
    glob["evaluation_interval"] = evaluation_interval
    glob.setdefault("scrape_timeout", scrape_interval)
    doc["global"] = glob
    jobs = list(doc.get("scrape_configs") or [])
    if force_scrape_interval:
        for job in jobs:
            job["scrape_interval"] = scrape_interval
            job.pop("scrape_timeout", None)
    doc["scrape_configs"] = jobs
    files = [str(Path(f)) for f in rule_files]
    if files:
        doc["rule_files"] = list(doc.get("rule_files") or []) + files
    return doc


def retarget(config_text: str, targets: Mapping[str, str], *, drop_unmapped: bool = True) -> str:
    """`config_text` with each static target replaced by `targets[target]` (e.g. a fake exporter's address).

    Unmapped targets are dropped (with drop_unmapped), and so are static_configs and jobs left empty.
    """
    doc = _yaml().load(config_text) or {}
    jobs = []
    for job in doc.get("scrape_configs") or []:
        static = []
        for sc in job.get("static_configs") or []:
            new = [targets.get(t, t) for t in sc.get("targets", []) if t in targets or not drop_unmapped]
            if new:
                static.append({**sc, "targets": new})
        if static or not drop_unmapped:
            jobs.append({**job, "static_configs": static})
    doc["scrape_configs"] = jobs
    return _dump(doc)


def start_prometheus(workdir: str | Path, config_text: str, rule_files: Sequence[str | Path] = (), *,
                     scrape_interval: str = "1s", evaluation_interval: str = "1s",
                     force_scrape_interval: bool = True, binary: str | None = None,
                     startup_timeout: float = 20.0, extra_args: Sequence[str] = ()) -> PromServer:
    """Run Prometheus on 127.0.0.1 with `config_text` and `rule_files`; wait until it is ready.

    The rule files are copied into `workdir`/rules (so a test can rewrite them and reload()); the TSDB lives
    in `workdir`/data. Raises PrometheusError (with its log) when it does not come up.
    """
    binary = binary or prometheus_binary()
    if binary is None:
        raise FileNotFoundError(f"{PROMETHEUS} is not installed (.ci/install-system.sh installs it)")
    workdir = Path(workdir)
    rules_dir = workdir / "rules"
    rules_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for i, src in enumerate(rule_files):
        dst = rules_dir / f"{i:02d}-{Path(src).name}"
        dst.write_bytes(Path(src).read_bytes())
        copied.append(dst)
    config = build_config(config_text, copied, scrape_interval=scrape_interval,
                          evaluation_interval=evaluation_interval, force_scrape_interval=force_scrape_interval)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(_dump(config))
    log_path = workdir / "prometheus.log"

    last_error = ""
    for _attempt in range(3):  # a port taken between free_port() and the bind: try another one
        port = free_port()
        data = workdir / f"data-{port}"
        data.mkdir()
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [binary, f"--config.file={config_path}", f"--storage.tsdb.path={data}",
                 f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
                 "--storage.tsdb.retention.time=1d", "--log.level=info", *extra_args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
        server = PromServer(process=process, port=port, workdir=workdir, config_path=config_path, log_path=log_path)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline and process.poll() is None and not server.ready():
            time.sleep(0.1)
        if process.poll() is None and server.ready():
            return server
        server.stop()
        last_error = server.log()
        if "address already in use" not in last_error:
            break
    raise PrometheusError(f"prometheus did not start:\n{last_error[-4000:]}")


# ------------------------------------------------------------------------------------------------ metric lists


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as exposed; counters end in _total
    type: str  # counter, gauge, histogram, summary
    help: str
    labels: dict[str, list[str]]
    buckets: tuple[float, ...] = ()
    created: bool = False
    absent_when_healthy: dict[str, list[str]] = field(default_factory=dict)
    zero_when_healthy: dict[str, list[str]] = field(default_factory=dict)
    follow_value: bool = False  # label values derived from the value (DCGM's XID err_code / err_msg)
    collector: str = ""
    healthy_label_sets: tuple[dict[str, str], ...] = ()  # the series ordinary traffic makes, when not all combos
    appears: str = "at_start"  # or after_first_stats_log, on_first_request, on_first_observation, ...

    @property
    def needs_traffic(self) -> bool:
        """Whether the series exist only once the server has served a request."""
        return self.appears.startswith("on_first_")

    @property
    def base(self) -> str:
        """The family name: without _total for counters."""
        return self.name[: -len("_total")] if self.type == "counter" and self.name.endswith("_total") else self.name

    def healthy_values(self, label: str) -> list[str]:
        bad = set(self.absent_when_healthy.get(label, []))
        return [v for v in self.labels[label] if v not in bad]


@dataclass(frozen=True)
class MetricsList:
    """One tests/data/metrics/*.yaml file."""

    path: Path
    exporter: str
    version: str
    engine: str
    registry: str
    metrics: dict[str, MetricSpec]
    zip_labels: tuple[str, ...] = ()
    kubernetes_labels: dict[str, list[str]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> frozenset[str]:
        """Every series name this exporter exposes (histograms/summaries with their _bucket/_sum/_count)."""
        out: set[str] = set()
        for spec in self.metrics.values():
            if spec.type == "histogram":
                out |= {f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count"}
            elif spec.type == "summary":
                out |= {f"{spec.name}_sum", f"{spec.name}_count"}
            else:
                out.add(spec.name)
            if spec.created:
                out.add(f"{spec.base}_created")
        return frozenset(out)

    @property
    def stem(self) -> str:
        return self.path.stem


def load_metrics(path: str | Path) -> MetricsList:
    path = Path(path)
    doc = _yaml().load(path.read_text())
    metrics: dict[str, MetricSpec] = {}
    for m in doc["metrics"]:
        spec = MetricSpec(
            name=m["name"], type=m["type"], help=m.get("help", ""),
            labels={str(k): [str(v) for v in vs] for k, vs in (m.get("labels") or {}).items()},
            buckets=tuple(float(b) for b in m.get("buckets") or ()),
            created=bool(m.get("created", False)),
            absent_when_healthy={k: [str(v) for v in vs] for k, vs in (m.get("absent_when_healthy") or {}).items()},
            zero_when_healthy={k: [str(v) for v in vs] for k, vs in (m.get("zero_when_healthy") or {}).items()},
            follow_value=bool(m.get("label_values_follow_value")), collector=str(m.get("collector", "")),
            healthy_label_sets=tuple({str(k): str(v) for k, v in row.items()}
                                     for row in m.get("healthy_label_sets") or ()),
            appears=str(m.get("appears", "at_start")))
        if spec.type not in {"counter", "gauge", "histogram", "summary"}:
            raise ValueError(f"{path}: {spec.name}: unknown type {spec.type}")
        if spec.type == "histogram" and not spec.buckets:
            raise ValueError(f"{path}: histogram {spec.name} has no buckets")
        metrics[spec.name] = spec
    return MetricsList(path=path, exporter=str(doc["exporter"]), version=str(doc["version"]),
                       engine=str(doc.get("engine", "")), registry=str(doc.get("registry", "")), metrics=metrics,
                       zip_labels=tuple(doc.get("zip_labels") or ()),
                       kubernetes_labels={k: [str(v) for v in vs]
                                          for k, vs in (doc.get("kubernetes_labels") or {}).items()},
                       source=dict(doc.get("source") or {}))


def metrics_files() -> list[Path]:
    return sorted(DATA.glob("*.yaml"))


def metrics_list(stem: str) -> MetricsList:
    """The list tests/data/metrics/<stem>.yaml, e.g. metrics_list("vllm-0.6.3")."""
    return load_metrics(DATA / f"{stem}.yaml")


# ------------------------------------------------------------------------------------------------ fake exporter

# What a healthy server shows where a gauge's value matters to hxpc's rules; other gauges are 0 (info gauges 1).
HEALTHY_GAUGES: dict[str, float] = {
    "vllm:num_requests_running": 4.0,
    "vllm:num_requests_waiting": 0.0,
    "vllm:gpu_cache_usage_perc": 0.35,
    "vllm:kv_cache_usage_perc": 0.35,
    "vllm:cpu_cache_usage_perc": 0.0,
    "DCGM_FI_DEV_GPU_TEMP": 55.0,
    "DCGM_FI_DEV_MEMORY_TEMP": 60.0,
    "DCGM_FI_DEV_GPU_UTIL": 65.0,
    "DCGM_FI_DEV_FB_USED": 40960.0,
    "DCGM_FI_DEV_FB_FREE": 40000.0,
    "DCGM_FI_DEV_XID_ERRORS": 0.0,
    "DCGM_FI_DEV_POWER_USAGE": 300.0,
    "DCGM_FI_DEV_SM_CLOCK": 1980.0,
    "process_max_fds": 1048576.0,
    "process_open_fds": 64.0,
    "process_resident_memory_bytes": 2.0e9,
    "process_virtual_memory_bytes": 3.0e10,
}
# The value each observation of a histogram/summary has on healthy traffic (fast, small requests).
HEALTHY_OBSERVATION_SECONDS = 0.2
HEALTHY_OBSERVATION_COUNT = 100.0


def _healthy_observation(spec: MetricSpec) -> float:
    if spec.name.endswith("_seconds") or "seconds" in spec.name:
        return HEALTHY_OBSERVATION_SECONDS
    if spec.name.endswith("params_n"):
        return 1.0
    if spec.name.endswith("num_preemptions"):
        return 0.0
    return HEALTHY_OBSERVATION_COUNT


LabelKey = tuple[tuple[str, str], ...]


@dataclass
class _Series:
    labels: dict[str, str]
    created: float
    # counters: value = base + rate * (now - since); histograms/summaries: count/sum the same way
    base: float = 0.0
    rate: float = 0.0
    since: float = 0.0
    value: float = 0.0  # gauges
    observation: float = 0.0  # the value steady observations have
    buckets: dict[float, float] = field(default_factory=dict)  # one-off observations per upper bound
    obs_sum: float = 0.0
    obs_count: float = 0.0

    def counted(self, now: float) -> float:
        return self.base + self.rate * max(0.0, now - self.since)

    def rebase(self, now: float) -> None:
        self.base = self.counted(now)
        self.since = now


class FakeExporter:
    """An HTTP server on 127.0.0.1 serving what one metrics list says, with values a test controls.

    `counter_rate` is how fast healthy counters rise (per second) and how many observations healthy histograms
    get per second. `kubernetes=True` adds the exporter's Kubernetes labels (dcgm-exporter's pod/namespace/...).
    With `strict` (the default) a metric or label value the list does not have is a ValueError.
    """

    def __init__(self, metrics: MetricsList | str | Path, *, counter_rate: float = 1.0, strict: bool = True,
                 kubernetes: bool = False, start_time: float | None = None, idle: bool = False) -> None:
        if isinstance(metrics, MetricsList):
            self.spec = metrics
        elif isinstance(metrics, Path) or str(metrics).endswith(".yaml"):
            self.spec = load_metrics(metrics)
        else:
            self.spec = metrics_list(str(metrics))
        self.counter_rate = counter_rate
        self.strict = strict
        self.kubernetes = kubernetes
        self.available = True
        self.idle = idle
        self.scrapes = 0
        self._lock = threading.RLock()
        self._series: dict[str, dict[LabelKey, _Series]] = {}
        self.start_time = time.time() if start_time is None else start_time
        self._populate(self.start_time)
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> FakeExporter:
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                if not exporter.available:
                    self.send_error(503)
                    return
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"fake-{self.spec.stem}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> FakeExporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the exporter is not started")
        return int(self._httpd.server_address[1])

    @property
    def address(self) -> str:
        """host:port, as a scrape target."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    # --- the healthy state --------------------------------------------------------------------------------

    def _label_sets(self, spec: MetricSpec) -> list[dict[str, str]]:
        """Every label set of `spec` a healthy server exposes."""
        if spec.healthy_label_sets:
            return [self._resolve(spec, row) for row in spec.healthy_label_sets]
        zipped = [name for name in self.spec.zip_labels if name in spec.labels]
        free = [name for name in spec.labels if name not in zipped]
        if spec.follow_value:  # derived labels start at their first value (XID "0" / "No Error")
            follow = [n for n in free if n in {"err_code", "err_msg"}]
            free = [n for n in free if n not in follow]
        else:
            follow = []
        rows: list[dict[str, str]] = [{}]
        if zipped:
            count = len(spec.labels[zipped[0]])
            rows = [{name: spec.labels[name][i % len(spec.labels[name])] for name in zipped} for i in range(count)]
        choices = [spec.healthy_values(name) for name in free]
        out = []
        for row in rows:
            for combo in itertools.product(*choices):
                labels = {**row, **dict(zip(free, combo, strict=True))}
                labels.update({name: spec.labels[name][0] for name in follow})
                out.append({name: labels[name] for name in spec.labels})  # keep the list's label order
        return out

    def _is_zero_when_healthy(self, spec: MetricSpec, labels: Mapping[str, str]) -> bool:
        return any(labels.get(k) in vs for k, vs in spec.zero_when_healthy.items())

    def _new_series(self, spec: MetricSpec, labels: dict[str, str], now: float) -> _Series:
        series = _Series(labels=labels, created=now, since=now)
        if spec.type == "gauge":
            if spec.name == "process_start_time_seconds":
                series.value = self.start_time
            elif spec.name.endswith("_info") or (spec.name == "vllm:engine_sleep_state"
                                                 and labels.get("sleep_state") == "awake"):
                series.value = 1.0
            else:
                series.value = HEALTHY_GAUGES.get(spec.name, 0.0)
        elif not self._is_zero_when_healthy(spec, labels) and not self.idle:
            series.rate = self.counter_rate
            if spec.type in {"histogram", "summary"}:
                series.observation = _healthy_observation(spec)
        return series

    def _populate(self, now: float) -> None:
        with self._lock:
            self._series = {}
            for spec in self.spec.metrics.values():
                family = self._series.setdefault(spec.name, {})
                if self.idle and spec.needs_traffic:
                    continue
                for labels in self._label_sets(spec):
                    family[self._key(labels)] = self._new_series(spec, labels, now)

    def serve_traffic(self) -> None:
        """An idle server starts serving ordinary requests: the series traffic creates appear, counters rise."""
        now = time.time()
        with self._lock:
            if not self.idle:
                return
            self.idle = False
            for spec in self.spec.metrics.values():
                family = self._series.setdefault(spec.name, {})
                for labels in self._label_sets(spec):
                    key = self._key(labels)
                    if key not in family:
                        family[key] = self._new_series(spec, labels, now)
                    elif spec.type != "gauge" and not self._is_zero_when_healthy(spec, labels):
                        series = family[key]
                        series.rebase(now)
                        series.rate = self.counter_rate
                        if spec.type in {"histogram", "summary"}:
                            series.observation = _healthy_observation(spec)

    @staticmethod
    def _key(labels: Mapping[str, str]) -> LabelKey:
        return tuple(sorted(labels.items()))

    # --- changing values ----------------------------------------------------------------------------------

    def metric(self, name: str) -> MetricSpec:
        try:
            return self.spec.metrics[name]
        except KeyError:
            raise ValueError(f"{self.spec.stem} does not export {name!r}") from None

    def _resolve(self, spec: MetricSpec, labels: Mapping[str, str]) -> dict[str, str]:
        """The full label set: given labels, the rest from the first healthy value of each label."""
        unknown = set(labels) - set(spec.labels)
        if unknown:
            raise ValueError(f"{spec.name} ({self.spec.stem}) has no label(s) {sorted(unknown)}; "
                             f"it has {sorted(spec.labels)}")
        out: dict[str, str] = {}
        zipped = [n for n in self.spec.zip_labels if n in spec.labels]
        index = 0
        for name in zipped:  # a zipped label given (e.g. gpu="1") picks the matching UUID, device, ...
            if name in labels and labels[name] in spec.labels[name]:
                index = spec.labels[name].index(labels[name])
                break
        for name, values in spec.labels.items():
            if name in labels:
                value = str(labels[name])
                if self.strict and value not in values and not (spec.follow_value and name in {"err_code",
                                                                                               "err_msg"}):
                    raise ValueError(f"{spec.name} ({self.spec.stem}) never has {name}={value!r}; "
                                     f"it has {values}")
                out[name] = value
            elif name in zipped:
                out[name] = values[index % len(values)]
            else:
                healthy = spec.healthy_values(name) or values
                out[name] = healthy[0]
        return out

    def _series_for(self, name: str, labels: Mapping[str, str], kind: Iterable[str], now: float) -> _Series:
        spec = self.metric(name)
        if spec.type not in set(kind):
            raise ValueError(f"{name} is a {spec.type}")
        full = self._resolve(spec, labels)
        family = self._series.setdefault(name, {})
        key = self._key(full)
        if key not in family:
            series = _Series(labels=full, created=now, since=now)
            family[key] = series
        return family[key]

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge (every series of it when no labels are given and it has several)."""
        now = time.time()
        with self._lock:
            spec = self.metric(name)
            if spec.type != "gauge":
                raise ValueError(f"{name} is a {spec.type}, not a gauge")
            if spec.follow_value:
                self._set_following(spec, value, labels)
                return
            if not labels and len(self._series.get(name, {})) > 1:
                for series in self._series[name].values():
                    series.value = float(value)
                return
            self._series_for(name, labels, {"gauge"}, now).value = float(value)

    def _set_following(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        """DCGM's XID gauge: err_code/err_msg follow the value, so the series is replaced by a new one."""
        code = str(int(value))
        texts = dict(zip(spec.labels.get("err_code", []), spec.labels.get("err_msg", []), strict=False))
        derived = {"err_code": code, "err_msg": texts.get(code, "Unknown Error")}
        family = self._series.setdefault(spec.name, {})
        given = {k: str(v) for k, v in labels.items() if k not in derived}
        if given:
            full = self._resolve(spec, {**given, **derived})
            targets = [s for s in family.values() if all(s.labels.get(k) == full[k] for k in full if k not in derived)]
        else:
            full = {}
            targets = list(family.values())
        if not targets and full:
            family[self._key(full)] = _Series(labels=full, created=time.time(), value=float(value))
        for old in targets:
            del family[self._key(old.labels)]
            new_labels = {**old.labels, **derived}
            family[self._key(new_labels)] = _Series(labels=new_labels, created=old.created, value=float(value))

    def rate(self, name: str, per_second: float, *, observe: float | None = None, **labels: str) -> None:
        """Make a counter rise (or a histogram/summary get observations) at `per_second` from now on.

        Creates the series if the server would only now start exposing it (e.g. status="5xx").
        `observe` is the value each histogram/summary observation has.
        """
        now = time.time()
        with self._lock:
            series = self._series_for(name, labels, {"counter", "histogram", "summary"}, now)
            spec = self.metric(name)
            series.rebase(now)
            series.rate = float(per_second)
            if spec.type != "counter":
                self._fold_steady(spec, series)  # what was observed so far keeps its value
                series.observation = (float(observe) if observe is not None
                                      else series.observation or _healthy_observation(spec))

    def _fold_steady(self, spec: MetricSpec, series: _Series) -> None:
        """Turn the steady observations counted so far into one-off ones (so the observed value can change)."""
        count = series.base
        for bound in spec.buckets:
            if series.observation <= bound:
                series.buckets[bound] = series.buckets.get(bound, 0.0) + count
        series.obs_sum += series.observation * count
        series.obs_count += count
        series.base = 0.0

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` to a counter once."""
        now = time.time()
        with self._lock:
            series = self._series_for(name, labels, {"counter"}, now)
            series.base += float(amount)

    def observe(self, name: str, value: float, count: int = 1, **labels: str) -> None:
        """Record `count` one-off observations of `value` in a histogram or summary."""
        now = time.time()
        with self._lock:
            spec = self.metric(name)
            series = self._series_for(name, labels, {"histogram", "summary"}, now)
            for bound in spec.buckets:
                if value <= bound:
                    series.buckets[bound] = series.buckets.get(bound, 0.0) + count
            series.obs_sum += float(value) * count
            series.obs_count += count

    def remove(self, name: str, **labels: str) -> None:
        """Drop the series of `name` whose labels include `labels` (all of them without labels)."""
        with self._lock:
            family = self._series.get(name, {})
            for key, series in list(family.items()):
                if all(series.labels.get(k) == v for k, v in labels.items()):
                    del family[key]

    def restart(self) -> None:
        """The server restarted: counters and histograms back to 0, a new process_start_time_seconds.

        Series that exist only after an event (first request, first failure) are gone again; healthy traffic
        goes on at the same rates. Gauges keep what the test set, except process_start_time_seconds.
        """
        now = time.time()
        with self._lock:
            gauges = {name: family for name, family in self._series.items()
                      if self.spec.metrics[name].type == "gauge" and name != "process_start_time_seconds"}
            self.start_time = now
            self._populate(now)
            self._series.update(gauges)

    def set_available(self, available: bool) -> None:
        """Answer /metrics with 503 while unavailable (Prometheus then records up == 0)."""
        self.available = available

    # --- rendering ----------------------------------------------------------------------------------------

    def value(self, name: str, **labels: str) -> float:
        """The current value of one counter or gauge series (for assertions)."""
        now = time.time()
        with self._lock:
            spec = self.metric(name)
            full = self._resolve(spec, labels)
            series = self._series[name][self._key(full)]
            return series.value if spec.type == "gauge" else series.counted(now)

    def render(self) -> str:
        now = time.time()
        extra = self.spec.kubernetes_labels if self.kubernetes else {}
        out: list[str] = []
        with self._lock:
            self.scrapes += 1
            for spec in self.spec.metrics.values():
                family = self._series.get(spec.name) or {}
                if not family:
                    continue
                out.append(f"# HELP {spec.name} {_escape_help(spec.help)}")
                out.append(f"# TYPE {spec.name} {spec.type}")
                created_lines: list[str] = []
                for series in family.values():
                    labels = {**series.labels, **{k: v[0] for k, v in extra.items()}}
                    out.extend(self._render_series(spec, series, labels, now))
                    if spec.created:
                        created_lines.append(f"{spec.base}_created{_labels_text(labels)} {_fmt(series.created)}")
                out.extend(created_lines)
        return "\n".join(out) + "\n"

    def _render_series(self, spec: MetricSpec, series: _Series, labels: dict[str, str], now: float) -> list[str]:
        if spec.type == "gauge":
            return [f"{spec.name}{_labels_text(labels)} {_fmt(series.value)}"]
        if spec.type == "counter":
            return [f"{spec.name}{_labels_text(labels)} {_fmt(series.counted(now))}"]
        steady = series.counted(now)
        count = steady + series.obs_count
        total = steady * series.observation + series.obs_sum
        lines = []
        if spec.type == "histogram":
            for bound in spec.buckets:
                in_bucket = series.buckets.get(bound, 0.0) + (steady if series.observation <= bound else 0.0)
                lines.append(f"{spec.name}_bucket{_labels_text({**labels, 'le': _fmt(bound)})} {_fmt(in_bucket)}")
            lines.append(f"{spec.name}_bucket{_labels_text({**labels, 'le': '+Inf'})} {_fmt(count)}")
        lines.append(f"{spec.name}_count{_labels_text(labels)} {_fmt(count)}")
        lines.append(f"{spec.name}_sum{_labels_text(labels)} {_fmt(total)}")
        return lines


@contextlib.contextmanager
def exporters(*lists: MetricsList | str | Path, **kwargs: Any) -> Any:
    """Start one FakeExporter per metrics list; stop them all on exit."""
    started: list[FakeExporter] = []
    try:
        for item in lists:
            started.append(FakeExporter(item, **kwargs).start())
        yield started
    finally:
        for exporter in started:
            exporter.stop()
