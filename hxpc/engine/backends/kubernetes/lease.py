"""The apply lock on a cluster: a coordination.k8s.io/v1 Lease, as `hxpc.engine.lock` expects of a primitive.

The Lease `hxpc-lock-<project>-<env>` lives in the stack's namespace. Creating
it is atomic (a second create gets 409 Conflict); its holderIdentity,
acquireTime, renewTime and leaseDurationSeconds say who holds it and until
when, and annotations carry the lock's payload (holder, since, spec hash) for
hxpc's messages. The engine renews it while applying (`renew`, at most a
minute apart), and it lives `leaseDurationSeconds` (at most three minutes) past
the last renewal: an apply killed elsewhere is taken over within minutes, one
that is alive never is, and one killed on this machine at once (its payload
proves its holder gone, see `hxpc.engine.lock`). Removal and renewal go by the
lock id, and by uid and resourceVersion, so a holder never removes or renews a
lock that changed hands.

Before the namespace exists (the first apply creates it) the Lease is taken in
`default` instead; taking it in the namespace also checks that no first apply
holds the one in `default`, and a first apply that finds the namespace
created under it retries there, so two applies can never both hold the lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hxpc.engine.backends.kubernetes.client import ApiError, Cluster, Conflict, NotFound
from hxpc.errors import BackendError

API_VERSION = "coordination.k8s.io/v1"
KIND = "Lease"
FALLBACK_NAMESPACE = "default"
PAYLOAD_PREFIX = "hxpc.dev/lock-"
# hxpc.engine.lock.renew_interval renews at least every minute: three chances before the Lease lapses
MAX_DURATION_S = 180
_COMPARED = ("holder", "since", "spec_hash")  # of a payload without a lock id


def _micro(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def duration_of(payload: Mapping[str, str]) -> int:
    return max(1, min(int(payload.get("ttl_s") or MAX_DURATION_S), MAX_DURATION_S))


def payload_of(lease: Mapping[str, Any]) -> dict[str, str]:
    """The lock's payload as `hxpc.engine.lock` reads it. Expiry there is `since + ttl_s`; a renewed Lease
    expires `leaseDurationSeconds` after its renewTime, so ttl_s counts from `since` to that."""
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    out = {k[len(PAYLOAD_PREFIX):]: str(v) for k, v in annotations.items() if k.startswith(PAYLOAD_PREFIX)}
    spec = lease.get("spec") or {}
    out.setdefault("holder", str(spec.get("holderIdentity") or "an unknown holder"))
    acquired = _parse_time(spec.get("acquireTime")) or _parse_time(
        (lease.get("metadata") or {}).get("creationTimestamp")) or datetime.fromtimestamp(0, UTC)
    since = _parse_time(out.get("since")) or acquired.replace(microsecond=0)
    out["since"] = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.pop("renewed", None)  # ttl_s below already runs to the Lease's expiry
    renewed = _parse_time(spec.get("renewTime")) or acquired
    expires = renewed + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))
    out["ttl_s"] = str(max(0, int((expires - since).total_seconds())))
    return out


def _same(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    if a.get("lock_id") or b.get("lock_id"):
        return a.get("lock_id") == b.get("lock_id")
    return all(a.get(k) == b.get(k) for k in _COMPARED)


class LeaseLock:
    """The lock primitive (see the module docstring)."""

    def __init__(self, cluster: Cluster, namespace: str, name: str, labels: Mapping[str, str]):
        self.cluster, self.namespace, self.name, self.labels = cluster, namespace, name, dict(labels)
        self.held_in: str | None = None
        self._found_in: dict[str, str] = {}  # lock id -> where `read` found it (a retried create that went through)

    def _body(self, namespace: str, payload: Mapping[str, str]) -> dict[str, Any]:
        now = _micro(datetime.now(UTC))
        return {"apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": self.name, "namespace": namespace, "labels": self.labels,
                             "annotations": {PAYLOAD_PREFIX + k: v for k, v in payload.items()}},
                "spec": {"holderIdentity": payload.get("holder", ""), "acquireTime": now, "renewTime": now,
                         "leaseDurationSeconds": duration_of(payload)}}

    def _namespace_exists(self) -> bool:
        return self.cluster.get("v1", "Namespace", self.namespace, None) is not None

    def _read(self, namespace: str) -> dict[str, Any] | None:
        try:
            return self.cluster.get(API_VERSION, KIND, self.name, namespace)
        except ApiError as exc:
            if exc.status == 403 and namespace == FALLBACK_NAMESPACE != self.namespace:
                # a user who may not read Leases in `default` cannot have taken a first apply's lock there
                return None
            raise

    def _create(self, namespace: str, payload: Mapping[str, str]) -> bool:
        try:
            self.cluster.create(self._body(namespace, payload))
        except Conflict:
            return False
        except NotFound:  # the namespace went away under us
            return False
        return True

    def _remove_in(self, namespace: str, payload: Mapping[str, str]) -> None:
        lease = self._read(namespace)
        if lease is None or not _same(payload_of(lease), payload):
            return  # gone, or someone else's by now
        meta = lease.get("metadata") or {}
        # renewed or taken over between our read and delete (a Conflict): not ours to remove
        with contextlib.suppress(Conflict):
            self.cluster.delete(API_VERSION, KIND, self.name, namespace, uid=meta.get("uid"),
                                resource_version=meta.get("resourceVersion"))

    # -- LockPrimitive --------------------------------------------------------------------------------------------

    def try_create(self, payload: Mapping[str, str]) -> bool:
        for _ in range(2):
            if self._namespace_exists():
                if not self._create(self.namespace, payload):
                    return False
                if self._read(FALLBACK_NAMESPACE) is not None:  # a first apply of this stack holds it there
                    self._remove_in(self.namespace, payload)
                    return False
                self.held_in = self.namespace
                return True
            try:
                created = self._create(FALLBACK_NAMESPACE, payload)
            except BackendError as exc:
                raise BackendError(f"namespace {self.namespace} does not exist yet, so the apply lock is a Lease in "
                                   f"`{FALLBACK_NAMESPACE}`, which failed: {exc}; create the namespace first and "
                                   "apply with --adopt") from exc
            if not created:
                return False
            if not self._namespace_exists():
                self.held_in = FALLBACK_NAMESPACE
                return True
            self._remove_in(FALLBACK_NAMESPACE, payload)  # created meanwhile: the lock belongs there now
        return False

    def read(self) -> Mapping[str, str] | None:
        for namespace in (FALLBACK_NAMESPACE, self.namespace):
            lease = self._read(namespace)
            if lease is not None:
                if self.held_in is None and payload_of(lease).get("lock_id"):
                    self._found_in[payload_of(lease)["lock_id"]] = namespace
                return payload_of(lease)
        return None

    def remove(self, payload: Mapping[str, str]) -> None:
        for namespace in (self.held_in,) if self.held_in else (FALLBACK_NAMESPACE, self.namespace):
            self._remove_in(namespace, payload)

    def renew(self, payload: Mapping[str, str]) -> bool:
        """Move renewTime to now if the lock is still ours; False when it is not (taken over or removed)."""
        namespace = self.held_in or self._found_in.get(payload.get("lock_id", ""), self.namespace)
        lease = self._read(namespace)
        if lease is None or not _same(payload_of(lease), payload):
            return False
        lease.setdefault("spec", {})["renewTime"] = _micro(datetime.now(UTC))
        annotations = lease["metadata"].setdefault("annotations", {})
        annotations.update({PAYLOAD_PREFIX + k: v for k, v in payload.items()})
        try:
            self.cluster.replace(lease)
        except (Conflict, NotFound):
            return False
        return True
