"""Talking to a Kubernetes API server: configuration as kubectl finds it, discovery, and plain-dict calls.

`Cluster(kubeconfig, context)` loads the configuration the way kubectl does:
the given kubeconfig file(s) (`--kubeconfig`, or `KUBECONFIG`, a list joined
by the path separator), else `~/.kube/config`, else the in-cluster service
account; `--context` picks a context. Calls go through the official client's
`DynamicClient`, whose discovery is cached for this run only (a private cache
file, removed with the client) and refreshed when a kind is missing. Requests
and answers are plain dicts (no `ResourceInstance` wrapping: a list of a
thousand objects would cost seconds). Failures become `TransientError` (may
pass on retry: connection trouble, HTTP 408, 429 and 5xx) or `BackendError`
with the API server's own message.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import urllib3.exceptions
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from hxpc.engine.backend import TransientError
from hxpc.errors import BackendError

T = TypeVar("T")
FIELD_MANAGER = "hxpc"
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
REQUEST_TIMEOUT = (10, 60)  # connect, read (seconds): a call never hangs an apply
POOL_SIZE = 32
LIST_PAGE = 1000  # objects per list call (kubectl pages by 500); a stack's kind rarely needs a second page


class ApiError(BackendError):
    """The API server answered with an error status; `status` and `reason` are the server's."""

    def __init__(self, message: str, status: int, reason: str = "", causes: tuple[str, ...] = ()):
        super().__init__(message)
        self.status, self.reason, self.causes = status, reason, causes


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


def _server_message(exc: ApiException) -> tuple[str, str, tuple[str, ...]]:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    causes = tuple(f"{c.get('field', '')}: {c.get('message', '')}".strip(": ")
                   for c in (body.get("details") or {}).get("causes") or [] if isinstance(c, dict))
    return str(body.get("message") or exc.reason or exc), str(body.get("reason") or exc.reason or ""), causes


def translate(exc: BaseException, what: str) -> BackendError:
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message, reason, causes = _server_message(exc)
        text = f"{what}: {message}" + (f" (HTTP {status})" if status else "")
        if status in TRANSIENT_STATUS:
            return TransientError(text)
        cls = NotFound if status == 404 else Conflict if status == 409 else ApiError
        return cls(text, status, reason, causes)
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        return TransientError(f"{what}: cannot reach the API server: {type(exc).__name__}: {exc}")
    return BackendError(f"{what}: {type(exc).__name__}: {exc}")


def load_configuration(kubeconfig: str | None, context: str | None) -> k8s_client.Configuration:
    configuration = k8s_client.Configuration()
    default = Path(os.path.expanduser("~/.kube/config"))
    try:
        if kubeconfig or os.environ.get("KUBECONFIG") or default.exists():
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig or None, context=context or None, client_configuration=configuration,
                persist_config=False)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            if context:
                raise BackendError(f"--context {context} needs a kubeconfig; running in a cluster there is none")
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            raise BackendError("no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, create "
                               "~/.kube/config, or run inside a cluster")
    except (ConfigException, OSError, ValueError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or str(default)
        raise BackendError(f"cannot load the Kubernetes configuration ({where}"
                           f"{', context ' + context if context else ''}): {exc}") from exc
    configuration.connection_pool_maxsize = POOL_SIZE
    return configuration


class Cluster:
    """One API server, reached lazily (nothing is loaded until the first call)."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None,
                 api_client: k8s_client.ApiClient | None = None):
        self.kubeconfig, self.context = kubeconfig, context
        self._api = api_client
        self._dynamic: DynamicClient | None = None
        self._resources: dict[tuple[str, str], Any] = {}
        self._guard = threading.Lock()

    @property
    def api(self) -> k8s_client.ApiClient:
        with self._guard:
            if self._api is None:
                self._api = k8s_client.ApiClient(load_configuration(self.kubeconfig, self.context))
            return self._api

    @property
    def dynamic(self) -> DynamicClient:
        api = self.api
        with self._guard:
            if self._dynamic is None:
                cache = tempfile.mkdtemp(prefix="hxpc-discovery-")
                try:
                    self._dynamic = self._call(
                        lambda: DynamicClient(api, cache_file=os.path.join(cache, "c.json")),  # type: ignore[no-untyped-call]
                        "discovering the API")
                finally:
                    # a cache for this run only: what the server serves may change between runs
                    weakref.finalize(self, shutil.rmtree, cache, True)
            return self._dynamic

    def _call(self, call: Callable[[], T], what: str) -> T:
        try:
            return call()
        except (ApiException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
            raise translate(exc, what) from exc

    def resource(self, api_version: str, kind: str) -> Any | None:
        """The API resource serving `kind` in `api_version`, or None when the server does not serve it (the
        discovery cache is refreshed once before saying so)."""
        key = (api_version, kind)
        with self._guard:
            if key in self._resources:
                return self._resources[key]
        dynamic = self.dynamic
        # the core group only under /api: a search by version alone would load every group's resources
        where = {} if "/" in api_version else {"prefix": "api"}
        try:
            found = self._call(lambda: dynamic.resources.get(api_version=api_version, kind=kind, **where),
                                f"discovering {kind} ({api_version})")
        except ResourceNotFoundError:
            found = None
        with self._guard:
            self._resources[key] = found
        return found

    def served(self, api_version: str, kind: str) -> bool:
        return self.resource(api_version, kind) is not None

    def _need(self, api_version: str, kind: str) -> Any:
        found = self.resource(api_version, kind)
        if found is None:
            raise BackendError(f"the API server does not serve {kind} ({api_version})")
        return found

    def request(self, what: str, method: str, api_version: str, kind: str, *, name: str | None = None,
                namespace: str | None = None, body: Any = None, **params: Any) -> dict[str, Any]:
        resource = self._need(api_version, kind)
        dynamic = self.dynamic
        path = resource.path(name=name, namespace=namespace if resource.namespaced else None)

        def call() -> Any:
            return dynamic.request(method, path, body=body, serialize=False, _request_timeout=REQUEST_TIMEOUT,
                                   **params)

        response = self._call(call, what)  # the dynamic client raises DynamicApiError, an ApiException
        data = json.loads(response.data or b"{}")
        return data if isinstance(data, dict) else {}

    # -- what the backend calls ----------------------------------------------------------------------------------

    def list(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:  # in pages, so no answer grows without bound on a large cluster
            data = self.request(f"listing {kind}", "get", api_version, kind, namespace=namespace,
                                label_selector=label_selector, field_selector=field_selector, limit=LIST_PAGE,
                                _continue=token)
            items += data.get("items") or []
            token = (data.get("metadata") or {}).get("continue") or None
            if token is None:
                break
        for item in items:  # a list's items lack these; everything else in hxpc expects them
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return list(items)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        try:
            return self.request(f"reading {kind} {name}", "get", api_version, kind, name=name, namespace=namespace)
        except NotFound:
            return None

    def apply(self, body: Mapping[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply with field manager `hxpc`, taking conflicting fields over (the spec is the source
        of truth); `dry_run` asks what the server would store."""
        meta = body.get("metadata") or {}
        what = f"{'dry-run ' if dry_run else ''}applying {body.get('kind')} {meta.get('name')}"
        return self.request(what, "patch", str(body["apiVersion"]), str(body["kind"]), name=str(meta["name"]),
                            namespace=meta.get("namespace"), body=dict(body),
                            content_type="application/apply-patch+yaml", field_manager=FIELD_MANAGER,
                            force_conflicts=True, dry_run="All" if dry_run else None)

    def create(self, body: Mapping[str, Any], dry_run: bool = False) -> dict[str, Any]:
        meta = body.get("metadata") or {}
        return self.request(f"creating {body.get('kind')} {meta.get('name')}", "post", str(body["apiVersion"]),
                            str(body["kind"]), namespace=meta.get("namespace"), body=dict(body),
                            field_manager=FIELD_MANAGER, dry_run="All" if dry_run else None)

    def replace(self, body: Mapping[str, Any]) -> dict[str, Any]:
        meta = body.get("metadata") or {}
        return self.request(f"updating {body.get('kind')} {meta.get('name')}", "put", str(body["apiVersion"]),
                            str(body["kind"]), name=str(meta["name"]), namespace=meta.get("namespace"),
                            body=dict(body), field_manager=FIELD_MANAGER)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None, *, uid: str | None = None,
               resource_version: str | None = None, propagation: str = "Background") -> bool:
        """Delete it (only the instance with `uid`, when given); False when it was already gone."""
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation,
                **({"preconditions": preconditions} if preconditions else {})}
        try:
            self.request(f"deleting {kind} {name}", "delete", api_version, kind, name=name, namespace=namespace,
                         body=body)
        except NotFound:
            return False
        return True
