"""The inventory: one ConfigMap per project and environment naming every object hxpc applied there.

Pruning needs proof of what hxpc made, beyond labels anyone can copy: an
object is pruned only when it is in the previous inventory, still carries
hxpc's ownership labels and is not opted out (`hxpc.dev/prune: "false"`).
The inventory is the ConfigMap `hxpc-inventory-<project>-<env>` in the
stack's namespace, its data `objects.json` a JSON map from object id
(`<Kind>[.<group>]/<namespace>/<name>`) to an entry: apiVersion, uid, the
manifest's hash and a digest of the fields hxpc owned right after applying it
(so an unchanged object needs no dry run at the next plan). The plan sees the
inventory as an object whose state maps ids to hashes; it is applied after
every delete, so it is written only once the prune it describes succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from hxpc.engine.backends.kubernetes.normalize import Obj, group_of, object_id

DATA_KEY = "objects.json"
INVENTORY_LABEL = "hxpc.dev/inventory"


@dataclass(frozen=True)
class Entry:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""
    hash: str = ""
    fields: str = ""

    @property
    def id(self) -> str:
        return object_id(self.api_version, self.kind, self.namespace, self.name)

    @property
    def group(self) -> str:
        return group_of(self.api_version)


def name_of(project: str, env: str) -> str:
    return f"hxpc-inventory-{project}-{env}"


def decode(configmap: Mapping[str, Any] | None) -> dict[str, Entry]:
    """The entries of a live inventory ConfigMap by id ({} for none or unreadable data: nothing is provable)."""
    if not configmap:
        return {}
    try:
        data = json.loads((configmap.get("data") or {}).get(DATA_KEY) or "{}")
    except json.JSONDecodeError:
        return {}
    out: dict[str, Entry] = {}
    if not isinstance(data, dict):
        return out
    for value in data.values():
        if not isinstance(value, dict):
            continue
        try:
            entry = Entry(**{k: str(v) for k, v in value.items() if k in Entry.__dataclass_fields__})
        except TypeError:
            continue
        out[entry.id] = entry
    return out


def encode(entries: Iterable[Entry]) -> str:
    return json.dumps({e.id: asdict(e) for e in entries}, sort_keys=True, separators=(",", ":"))


def manifest(name: str, namespace: str, labels: Mapping[str, str], entries: Iterable[Entry] = ()) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": {**labels, INVENTORY_LABEL: "true"}},
            "data": {DATA_KEY: encode(entries)}}


def state(entries: Iterable[Entry]) -> dict[str, Any]:
    """What the plan compares: which objects the inventory holds and the hash each was applied with."""
    return {"objects": {e.id: e.hash for e in sorted(entries, key=lambda e: e.id)}}
