"""Kubernetes objects as the plan compares them: keys, ownership, and the state with the server's fields gone.

A live object and the server-side dry run of hxpc's manifest are both the
server's own rendering (defaults filled in, fields of other managers kept), so
after `state_of` strips what the server owns (managedFields, resourceVersion,
uid, generation, creationTimestamp, status, ...) and hxpc's hash annotation,
equal states mean "nothing to apply". A Secret's values become their SHA-256
in the state: the plan sees that a value changed, never the value (and the
engine redacts the path anyway). Objects are keyed `kubernetes:<namespace>/
<Kind>/<name>`; a Namespace's scope is its own name.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Mapping
from typing import Any

from hxpc.engine.objects import ObjectKey

TARGET = "kubernetes"
HASH_ANNOTATION = "hxpc.dev/hash"
DEPENDS_ANNOTATION = "hxpc.dev/depends-on"
PRUNE_ANNOTATION = "hxpc.dev/prune"     # "false": never pruned (kept, and the plan says why)
NAME_LABEL = "app.kubernetes.io/name"
SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp", "selfLink",
                   "deletionTimestamp", "deletionGracePeriodSeconds")
IGNORED_ANNOTATIONS = (HASH_ANNOTATION, "kubectl.kubernetes.io/last-applied-configuration")
CLUSTER_SCOPED = frozenset({"Namespace"})

Obj = dict[str, Any]


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    m = meta(obj)
    kind, name = str(obj.get("kind")), str(m.get("name"))
    scope = name if kind in CLUSTER_SCOPED else str(m.get("namespace") or "")
    return ObjectKey(TARGET, scope, kind, name)


def object_id(api_version: str, kind: str, namespace: str, name: str) -> str:
    """How the inventory names an object: `<Kind>[.<group>]/<namespace>/<name>` (namespace '' for a cluster's)."""
    group = group_of(api_version)
    return f"{kind}.{group}/{namespace}/{name}" if group else f"{kind}/{namespace}/{name}"


def id_of(obj: Mapping[str, Any]) -> str:
    m = meta(obj)
    namespace = "" if obj.get("kind") in CLUSTER_SCOPED else str(m.get("namespace") or "")
    return object_id(str(obj.get("apiVersion")), str(obj.get("kind")), namespace, str(m.get("name")))


def owned_by(obj: Mapping[str, Any], owner_labels: Mapping[str, str]) -> bool:
    labels = meta(obj).get("labels") or {}
    return all(labels.get(k) == v for k, v in owner_labels.items())


def version_of(obj: Mapping[str, Any]) -> str:
    """uid and resourceVersion: the identity a saved plan was made against."""
    m = meta(obj)
    return f"{m.get('uid', '')}/{m.get('resourceVersion', '')}"


def value_hash(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def state_of(obj: Mapping[str, Any]) -> Obj:
    """The object without what the server owns or hxpc's own bookkeeping; Secret values as their hashes."""
    out = copy.deepcopy(dict(obj))
    out.pop("status", None)
    m = dict(out.get("metadata") or {})
    for field in SERVER_METADATA:
        m.pop(field, None)
    annotations = {k: v for k, v in (m.get("annotations") or {}).items() if k not in IGNORED_ANNOTATIONS}
    if annotations:
        m["annotations"] = annotations
    else:
        m.pop("annotations", None)
    out["metadata"] = m
    if out.get("kind") == "Secret" and out.get("apiVersion") == "v1":
        data = dict(out.get("data") or {})
        for k, v in (out.pop("stringData", None) or {}).items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        out["data"] = {k: value_hash(base64.b64decode(v or "")) for k, v in data.items()}
        if not out["data"]:
            out.pop("data")
    return out


def without_server_fields(obj: Mapping[str, Any]) -> Obj:
    """A live object as a body to create again (a rollback of a delete or replace): no status or server fields."""
    out = copy.deepcopy(dict(obj))
    out.pop("status", None)
    m = dict(out.get("metadata") or {})
    for field in (*SERVER_METADATA, "ownerReferences", "finalizers"):
        m.pop(field, None)
    out["metadata"] = m
    if out.get("kind") == "Service":
        spec = dict(out.get("spec") or {})
        if spec.get("clusterIP") not in (None, "None"):  # the address goes with the old object
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        out["spec"] = spec
    return out
