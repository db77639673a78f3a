"""The systemd backend: hxpc's units and secret files on each host of `targets.systemd`, over a Transport.

Desired objects (units and secret files per host, with the instances'
health checks) are built purely in `desired`. Live state costs one
command per host (`READ_SCRIPT`, parsed purely in `parse`); every
host is read, in parallel, before anything is planned, so an unreachable host
fails the plan with its name and the transport's message. Applying follows
the engine's waves: before a wave's first action on a host, that host's
batch snapshots the files about to change, writes every changed unit and
secret file atomically and runs `daemon-reload` once; then each action
enables and restarts exactly the instances whose files (or secrets) changed.
Secret values are resolved from the environment or files in the preflight
(lock held, plan fresh, no action run yet: a missing one refuses the apply
with nothing touched), only for the secret files the plan writes, and travel
only on a command's stdin into a root-only 0600 file. Deletes stop and
disable, then remove files; the reload follows at the end of the wave.
Rollback restores the snapshot and restarts the previous version. A change
to a workload's serving instances rolls (hxpc.engine.rolling): the files are
written for the whole wave as above, which running instances do not notice,
and each step restarts only its own instances (each one unit on its own
port, so always stop-first); rolling back a step restores the files and
restarts that step's instances, so those never reached keep running the
previous version with the previous files back in place. The lock
is a `mkdir` under `/run/lock` on every host (atomic), holding a JSON info
file. The health gate runs each instance's check (`probe_script`) on its host.
"""

from __future__ import annotations

import json
import secrets as pysecrets
import shlex
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hxpc.compiler.bundle import Meta
from hxpc.compiler.model import ResolvedStack
from hxpc.compiler.targets import config_of
from hxpc.compiler.targets.systemd import SystemdTarget
from hxpc.engine.backend import ActionContext, HealthResult, TransientError, Undo
from hxpc.engine.backends.systemd.desired import (
    SECRET_OWNER,
    Check,
    describe,
    desired_objects,
    env_file_text,
    probe_script,
    recorded_check,
    secret_data,
    secret_path,
    unit_data,
)
from hxpc.engine.backends.systemd.parse import (
    READ_SCRIPT,
    SNAPSHOT_SCRIPT,
    TARGET,
    UNIT_DIR,
    ReadError,
    instance_of,
    parse_health,
    parse_host,
    parse_show,
    parse_snapshot,
    parse_unit,
    unit_value,
)
from hxpc.engine.backends.systemd.transport import Transport, transport_for
from hxpc.engine.lock import LockInfo, MultiLock, acquire_all
from hxpc.engine.objects import DesiredObject, LiveObject, LiveState, ObjectKey
from hxpc.engine.plan import Action
from hxpc.engine.rolling import Step
from hxpc.engine.secrets import read_secrets
from hxpc.errors import BackendError

LOCK_SCRIPT_DIR = 'b=/run/lock; [ -d "$b" ] || b=/var/lock; d=$b/hxpc-$1'
MISSING_INFO_TTL_S = 60  # a lock directory without its info file: its taker died between mkdir and write


# -- the lock primitive ----------------------------------------------------------------------------------------------


class HostLock:
    """`mkdir /run/lock/hxpc-<project>-<env>` (atomic) with `info.json` inside, on one host."""

    def __init__(self, transport: Transport, name: str):
        self.transport, self.name = transport, name

    def try_create(self, payload: Mapping[str, str]) -> bool:
        script = LOCK_SCRIPT_DIR + '; mkdir "$d" 2>/dev/null || exit 3; cat > "$d/info.json"'
        result = self.transport.sh(script, self.name, input=_payload(payload))
        if result.rc == 3:
            return False
        if result.rc != 0:
            raise BackendError(f"{self.transport.name}: taking the lock failed: {result.err}")
        return True

    def read(self) -> Mapping[str, str] | None:
        script = LOCK_SCRIPT_DIR + '; [ -d "$d" ] || exit 3; stat -c %Y "$d"; cat "$d/info.json" 2>/dev/null; true'
        result = self.transport.sh(script, self.name)
        if result.rc == 3:
            return None
        if result.rc != 0:
            raise BackendError(f"{self.transport.name}: reading the lock failed: {result.err}")
        mtime, _, text = result.out.partition("\n")
        try:
            data = json.loads(text)
            if isinstance(data, dict):
                return {str(k): str(v) for k, v in data.items()}
        except json.JSONDecodeError:
            pass
        since = LockInfo("", float(mtime.strip() or 0), "", 0).since_iso
        return {"holder": "an apply that died while taking the lock (no info file)", "since": since,
                "spec_hash": "", "ttl_s": str(MISSING_INFO_TTL_S), "missing": "1"}

    def remove(self, payload: Mapping[str, str]) -> None:
        if payload.get("missing"):
            script = LOCK_SCRIPT_DIR + '; [ -e "$d/info.json" ] || rm -rf "$d"'
            self.transport.sh(script, self.name)
            return
        if payload.get("lock_id"):  # by id: a renewal rewrites the rest
            script = LOCK_SCRIPT_DIR + '; if grep -qF -- "$2" "$d/info.json"; then rm -rf "$d"; fi'
            self.transport.sh(script, self.name, _id_field(payload))
            return
        script = LOCK_SCRIPT_DIR + '; if cmp -s - "$d/info.json"; then rm -rf "$d"; fi'
        self.transport.sh(script, self.name, input=_payload(payload))

    def renew(self, payload: Mapping[str, str]) -> bool:
        """Rewrite info.json (atomically: a temporary name, then a rename) if the lock still carries our id."""
        script = (LOCK_SCRIPT_DIR + '; grep -qF -- "$2" "$d/info.json" 2>/dev/null || exit 3; '
                  'cat > "$d/.info.json.new" && mv -f "$d/.info.json.new" "$d/info.json"')
        result = self.transport.sh(script, self.name, _id_field(payload), input=_payload(payload))
        if result.rc == 3:
            return False
        if result.rc != 0:
            raise BackendError(f"{self.transport.name}: renewing the lock failed: {result.err}")
        return True


def _id_field(payload: Mapping[str, str]) -> str:
    """The lock id as it stands in info.json (`_payload`'s JSON), to match with `grep -F`."""
    return json.dumps({"lock_id": payload.get("lock_id", "")})[1:-1]


def _payload(payload: Mapping[str, str]) -> bytes:
    return json.dumps(dict(payload), sort_keys=True).encode()


# -- what rollback needs (`Undo.data`) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreSecret:
    """Undo of a secret file's write or removal: its previous bytes (None: it did not exist), and the
    instances restarted for it, restarted again with the previous values."""

    files: Mapping[str, bytes | None]
    restart: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestoreUnit:
    """Undo of a unit object's change or removal: the previous bytes of its files, the instances it has now
    and had before, which were enabled and active before, and the instances the action started or stopped."""

    files: Mapping[str, bytes | None]
    instances: tuple[str, ...]
    old_instances: tuple[str, ...]
    enabled_before: tuple[str, ...]
    active_before: Mapping[str, bool]
    touched: tuple[str, ...]


# -- per host and wave: the batch ------------------------------------------------------------------------------------


@dataclass
class _Batch:
    """One host's actions in one wave: prepared (snapshot, writes, one daemon-reload) by whichever action
    comes first; the rest wait on `guard` until it is done."""

    host: str
    actions: list[Action]
    guard: threading.Lock = field(default_factory=threading.Lock)
    prepared: bool = False
    error: str = ""
    snapshot: dict[str, bytes] = field(default_factory=dict)
    written: dict[ObjectKey, list[str]] = field(default_factory=dict)   # paths each action wrote or removed
    claimed: set[ObjectKey] = field(default_factory=set)
    reload_needed: bool = False
    restart_all: set[str] = field(default_factory=set)   # workloads whose secrets changed in this wave


class SystemdBackend:
    target = TARGET

    def __init__(self, resolved: ResolvedStack, meta: Meta, ssh_config: str | None = None,
                 transports: Mapping[str, Transport] | None = None):
        self.stack, self.meta = resolved, meta
        self.project, self.env = meta.project, meta.env
        systemd = config_of(resolved.spec, SystemdTarget)
        self.hosts: list[str] = sorted(systemd.hosts) if systemd is not None else []
        self.ssh_config = ssh_config
        self._transports: dict[str, Transport] = dict(transports or {})
        self._desired: dict[ObjectKey, DesiredObject] | None = None
        self._values: dict[str, str] | None = None
        self._batches: dict[tuple[str, int], _Batch] = {}
        self._baseline: dict[tuple[str, str], int] = {}
        self._guard = threading.Lock()

    # -- transports ---------------------------------------------------------------------------------------------

    def transport(self, host: str) -> Transport:
        with self._guard:
            if host not in self._transports:
                spec_host = self.stack.spec.hosts.get(host)
                address = spec_host.address if spec_host is not None else None
                self._transports[host] = transport_for(address, host, self.ssh_config)
            return self._transports[host]

    def close(self) -> None:
        for t in self._transports.values():
            t.close()

    # -- desired ------------------------------------------------------------------------------------------------

    def desired(self) -> Mapping[ObjectKey, DesiredObject]:
        if self._desired is None:
            self._desired = desired_objects(self.stack, self.meta)
        return self._desired

    # -- reading ------------------------------------------------------------------------------------------------

    def _candidates(self, host: str) -> list[str]:
        names: set[str] = set()
        for key, want in self.desired().items():
            if key.scope == host and key.kind == "unit":
                names.add(key.name)
                names.update(unit_data(want).instances if key.name.endswith("@.service") else ())
        return sorted(names)

    def _read_host(self, host: str) -> str:
        transport = self.transport(host)
        nonce = pysecrets.token_hex(8)
        try:
            result = transport.sh(READ_SCRIPT, nonce, self.project, self.env, *self._candidates(host), timeout=120)
        except TransientError as exc:
            raise TransientError(f"cannot read host `{host}`: {exc}") from exc
        except BackendError as exc:
            raise BackendError(f"cannot read host `{host}`: {exc}") from exc
        if result.rc != 0 or not result.out.startswith("hxpc-read 1 "):
            raise BackendError(f"cannot read host `{host}` ({transport.name}): exit {result.rc}: "
                               f"{result.err or result.out[:200] or 'no output'}")
        return result.out

    def read_raw(self, keys: Collection[ObjectKey] | None = None) -> dict[str, str]:
        """Every host's report (or only the hosts of `keys`), read in parallel; any host that cannot be
        read fails the whole read, naming each such host."""
        hosts = self.hosts if keys is None else sorted({k.scope for k in keys if k.target == TARGET})
        if not hosts:
            return {}
        out: dict[str, str] = {}
        failures: list[BackendError] = []
        with ThreadPoolExecutor(max_workers=min(16, len(hosts)), thread_name_prefix="hxpc-read") as pool:
            futures = {h: pool.submit(self._read_host, h) for h in hosts}
            for host, future in futures.items():
                try:
                    out[host] = future.result()
                except BackendError as exc:
                    failures.append(exc)
        if failures:
            message = "; ".join(str(f) for f in failures)
            if all(isinstance(f, TransientError) for f in failures):
                raise TransientError(message)
            raise BackendError(message)
        return out

    def parse(self, raw: Mapping[str, str]) -> LiveState:
        live: dict[ObjectKey, LiveObject] = {}
        for host in sorted(raw):
            try:
                live.update(parse_host(host, self.project, self.env, raw[host]))
            except ReadError as exc:
                raise BackendError(f"host `{host}`: {exc}") from exc
        return live

    # -- secrets and locking --------------------------------------------------------------------------------------

    def resolve_secrets(self, names: Iterable[str]) -> dict[str, str]:
        """The values of secrets `names`, read now (and kept in memory for the run); every missing one is
        named at once."""
        with self._guard:
            values = dict(self._values or {})
        found, missing = read_secrets(set(names) - set(values), self.stack.spec.secrets)
        values.update(found)
        if missing:
            raise BackendError("missing secrets; nothing was touched:\n" + "\n".join(f"  {m}" for m in missing))
        with self._guard:
            self._values = values
        return values

    def _secret_names(self, keys: Iterable[ObjectKey]) -> set[str]:
        desired = self.desired()
        return {r["secret"] for k in keys if k.kind == "secret" and k in desired
                for r in secret_data(desired[k]).refs.values()}

    def prepare(self, actions: Sequence[Action]) -> None:
        """Preflight, with the lock held and the plan fresh: every secret a written file needs must resolve."""
        self.resolve_secrets(self._secret_names(a.key for a in actions if a.kind in ("create", "update", "replace")))

    def lock_primitives(self) -> dict[str, HostLock]:
        name = f"{self.project}-{self.env}"
        return {f"host `{host}`": HostLock(self.transport(host), name) for host in self.hosts}

    def lock(self, info: LockInfo) -> MultiLock:
        return acquire_all(self.lock_primitives(), info, lambda where: f"{self.project}/{self.env} on {where}")

    # -- applying -----------------------------------------------------------------------------------------------

    def begin_wave(self, actions: Sequence[Action]) -> None:
        with self._guard:
            for action in actions:
                key = (action.key.scope, action.wave)
                self._batches.setdefault(key, _Batch(action.key.scope, [])).actions.append(action)

    def end_wave(self, actions: Sequence[Action]) -> None:
        with self._guard:
            batches = [self._batches.pop(k) for k in sorted({(a.key.scope, a.wave) for a in actions})
                       if k in self._batches]
        errors = []
        for batch in batches:
            try:
                self._finish(batch)
            except BackendError as exc:
                errors.append(str(exc))
        if errors:
            raise BackendError("; ".join(errors))

    def _finish(self, batch: _Batch) -> None:
        """Undo what was prepared for actions that never ran (interrupted), and reload after deletes."""
        t = self.transport(batch.host)
        with batch.guard:
            unclaimed = [k for k in batch.written if k not in batch.claimed]
            if unclaimed:
                self._restore(t, {p: batch.snapshot.get(p) for k in unclaimed for p in batch.written[k]})
                batch.reload_needed = True
            if batch.reload_needed:
                t.check("systemctl daemon-reload", what="daemon-reload")
                batch.reload_needed = False

    def _batch_for(self, action: Action) -> tuple[_Batch, bool]:
        with self._guard:
            batch = self._batches.get((action.key.scope, action.wave))
            if batch is not None and any(a.key == action.key for a in batch.actions):
                return batch, False
        return _Batch(action.key.scope, [action]), True  # outside a wave hook: a batch of one

    def apply_action(self, action: Action, ctx: ActionContext) -> Undo | None:
        return self.roll(action, ctx, None)

    def roll(self, action: Action, ctx: ActionContext, step: Step | None) -> Undo | None:
        """`apply_action`, or (with `step`) one step of a rolling update: restart only the step's instances,
        plus, on the object's first step, whatever is new or was down (hxpc.engine.rolling.Rolling)."""
        batch, alone = self._batch_for(action)
        self._prepare(batch)
        with batch.guard:
            batch.claimed.add(action.key)
        if batch.error:
            raise BackendError(batch.error)
        try:
            if action.kind == "delete":
                return self._delete(batch, action, ctx)
            if action.key.kind == "secret":
                return self._apply_secret(batch, action, step)
            return self._apply_unit(batch, action, ctx, step)
        finally:
            if alone:
                self._finish(batch)

    def retire(self, undo: Undo) -> None:
        """Never asked: an instance is one unit, which systemd runs once, so every step is stop-first."""

    def replica_health(self, key: ObjectKey, replicas: Sequence[str], deadline: float) -> HealthResult:
        return self._health(key, set(replicas))

    def restored_health(self, undo: Undo, deadline: float) -> HealthResult:
        """The instances a rollback restarted with their previous files, judged by the check those files
        record (`X-Hxpc-Health=`), or by the desired one where the file holding it did not change."""
        data = undo.data
        if not isinstance(data, RestoreUnit | RestoreSecret):
            return HealthResult(True, "nothing brought back to wait for")
        if isinstance(data, RestoreSecret):
            return self._health(undo.key, set(data.restart)) if data.restart else HealthResult(True, "")
        back = [i for i in data.touched if i in data.old_instances and data.active_before.get(i)]
        if not back or undo.key.kind != "unit":
            return HealthResult(True, "nothing brought back to wait for")
        want = self.desired().get(undo.key)
        desired_checks = unit_data(want).checks if want is not None else {}
        checks: dict[str, Check] = {}
        for i in back:
            holder = f"{UNIT_DIR}/{i}.d/replica.conf" if undo.key.name.endswith("@.service") else \
                f"{UNIT_DIR}/{undo.key.name}"
            like = desired_checks.get(i, Check("none"))
            old = data.files.get(holder)
            recorded = unit_value(parse_unit(old.decode("utf-8", "replace")), "Unit", "X-Hxpc-Health") if old else ""
            checks[i] = recorded_check(recorded, like) if recorded else like
        return self._health(undo.key, set(back), checks)

    def _prepare(self, batch: _Batch) -> None:
        with batch.guard:
            if batch.prepared:
                return
            batch.prepared = True
            t = self.transport(batch.host)
            try:
                batch.snapshot = self._snapshot(t, batch.actions)
                self._write(t, batch)
            except BackendError as exc:
                batch.error = f"{t.name}: preparing wave on host `{batch.host}` failed: {exc}"
                try:
                    self._restore(t, {p: batch.snapshot.get(p) for ps in batch.written.values() for p in ps})
                    t.check("systemctl daemon-reload", what="daemon-reload")
                except BackendError as again:
                    batch.error += f"; restoring the previous files failed too: {again}"
                batch.written.clear()

    def _snapshot(self, t: Transport, actions: Sequence[Action]) -> dict[str, bytes]:
        args = []
        for a in actions:
            if a.key.kind == "unit":
                args.append(f"unit:{a.key.name}")
            else:
                args.append(f"file:{self._secret_path(a.key)}")
        nonce = pysecrets.token_hex(8)
        result = t.sh(SNAPSHOT_SCRIPT, nonce, *args)
        if result.rc != 0:
            raise BackendError(f"reading the current files failed: {result.err}")
        try:
            return parse_snapshot(result.stdout, nonce)
        except (ReadError, ValueError) as exc:
            raise BackendError(f"reading the current files failed: {exc}") from exc

    def _secret_path(self, key: ObjectKey) -> str:
        return secret_path(self.meta, key.name)

    def _write(self, t: Transport, batch: _Batch) -> None:
        """Every changed file of the batch's creates and updates, then one daemon-reload."""
        desired = self.desired()
        removals: list[str] = []
        for action in batch.actions:
            if action.kind == "delete":
                continue
            want = desired[action.key]
            paths: list[str] = []
            batch.written[action.key] = paths
            if action.key.kind == "secret":
                if action.kind in ("create", "update", "replace"):
                    assert want.workload is not None
                    data = secret_data(want)
                    text = env_file_text(self.meta, self.stack.workloads[want.workload], data.refs,
                                         self.resolve_secrets(self._secret_names([action.key])))
                    paths.append(data.path)
                    t.put_file(data.path, text.encode(), mode=0o600, owner=SECRET_OWNER, dir_mode=0o700)
                    batch.restart_all.add(want.workload)
                continue
            texts = unit_data(want).texts
            for rel, text in texts.items():
                path = f"{UNIT_DIR}/{rel}"
                old = batch.snapshot.get(path)
                if old is not None and parse_unit(old.decode("utf-8", "replace")) == parse_unit(text):
                    continue
                paths.append(path)
                t.put_file(path, text.encode(), mode=0o644, owner="root:root")
            for path in self._unit_paths(batch, action.key):
                if path[len(UNIT_DIR) + 1:] not in texts:
                    paths.append(path)
                    removals.append(path)
        if removals:
            self._remove_files(t, removals)
        if any(batch.written.values()):
            t.check("systemctl daemon-reload", what="daemon-reload")

    def _unit_paths(self, batch: _Batch, key: ObjectKey) -> list[str]:
        """The snapshot's files of unit object `key` (its main file and its drop-ins)."""
        base = key.name.removesuffix("@.service")
        template = key.name.endswith("@.service")
        return sorted(p for p in batch.snapshot if p == f"{UNIT_DIR}/{key.name}" or (
            template and p.startswith(f"{UNIT_DIR}/{base}@") and p.endswith(".d/replica.conf")))

    def _remove_files(self, t: Transport, paths: Sequence[str]) -> None:
        # a drop-in directory goes with its last file; rmdir leaves one that holds someone else's drop-ins
        script = 'for f in "$@"; do rm -f -- "$f"; case $f in *.d/*) rmdir -- "${f%/*}" 2>/dev/null;; esac; done; true'
        t.check(script, *paths, what="removing unit files")

    def _restore(self, t: Transport, files: Mapping[str, bytes | None]) -> None:
        gone = sorted(p for p, data in files.items() if data is None)
        for path, data in sorted(files.items()):
            if data is not None:
                secret = not path.startswith(UNIT_DIR + "/")
                t.put_file(path, data, mode=0o600 if secret else 0o644, owner="root:root",
                           dir_mode=0o700 if secret else 0o755)
        if gone:
            self._remove_files(t, gone)

    def _systemctl(self, t: Transport, *, disable: Sequence[str] = (), enable: Sequence[str] = (),
                   restart: Sequence[str] = (), stop: Sequence[str] = (), what: str) -> dict[str, dict[str, str]]:
        """One command: disable --now, enable, restart (not waiting: the gate watches), stop; then the
        restarted units' NRestarts, the health gate's baseline."""
        lines = ["set -e"]
        q = shlex.join
        if disable:
            lines.append(f"systemctl disable --now --quiet {q(disable)}")
        if stop:
            lines.append(f"systemctl stop {q(stop)}")
        if enable:
            lines.append(f"systemctl enable --quiet {q(enable)}")
        if restart:
            lines.append(f"systemctl reset-failed {q(restart)} 2>/dev/null || true")
            lines.append(f"systemctl restart --no-block {q(restart)}")
            lines.append(f"systemctl show -p Id,NRestarts {q(restart)}")
        result = t.check("\n".join(lines), what=what)
        return parse_show(result.out)

    def _record_baseline(self, host: str, shown: Mapping[str, Mapping[str, str]]) -> None:
        with self._guard:
            for unit, props in shown.items():
                self._baseline[(host, unit)] = int(props.get("NRestarts", "0") or 0)

    def _apply_unit(self, batch: _Batch, action: Action, ctx: ActionContext, step: Step | None) -> Undo:
        t = self.transport(batch.host)
        want = self.desired()[action.key]
        instances = list(unit_data(want).instances)
        written = batch.written.get(action.key, [])
        before = ctx.live
        old_instances = [] if before is None else _live_instances(before)
        enabled_before = [] if before is None else list(before.state.get("enabled", []))
        template_changed = any(not instance_of(p[len(UNIT_DIR) + 1:]) for p in written)
        changed = {i for i in instances if template_changed or f"{UNIT_DIR}/{i}.d/replica.conf" in written}
        active_before = {} if before is None else _active(before)
        # a new secret restarts every instance, unless the secret file's own action rolls them a few at a time
        secret_rolls = any(a.key.kind == "secret" and a.update is not None and a.workload == want.workload
                           for a in batch.actions)
        if (want.workload in batch.restart_all and not secret_rolls) or before is None:
            changed = set(instances)
        down = {i for i in instances if not active_before.get(i, False)}  # converge: whatever is down starts
        removed = sorted(set(old_instances) - set(instances))
        if step is not None:  # one step of a roll: this step's instances; what serves nothing goes first
            changed = (changed & set(step.replicas)) | (down if step.first else set())
            removed = removed if step.first else []
        else:
            changed |= down
        shown = self._systemctl(t, disable=removed, enable=instances, restart=sorted(changed),
                                what=f"starting {', '.join(sorted(changed)) or action.key.name}")
        self._record_baseline(batch.host, shown)
        return Undo(action.key, "restore the previous unit files and restart the previous version",
                    RestoreUnit({p: batch.snapshot.get(p) for p in written}, tuple(instances), tuple(old_instances),
                                tuple(enabled_before), active_before, tuple(sorted(changed | set(removed)))))

    def _apply_secret(self, batch: _Batch, action: Action, step: Step | None) -> Undo:
        """The file was written with the batch; restart the workload's instances here (or, in a roll, the
        step's) unless its unit object's action in this wave restarts them itself."""
        t = self.transport(batch.host)
        want = self.desired()[action.key]
        data = secret_data(want)
        restarted: tuple[str, ...] = ()
        unit_action = next((a for a in batch.actions if a.key == data.unit), None)
        instances = unit_data(self.desired()[data.unit]).instances
        if step is not None:
            # the unit's own roll restarts the instances it rolls, in this same step; the rest are this file's
            theirs = set(unit_action.update.replicas) if unit_action and unit_action.update else set()
            restarted = tuple(i for i in step.replicas if i in instances and i not in theirs)
        elif unit_action is None:
            restarted = instances
        if restarted:
            shown = self._systemctl(t, restart=restarted, what=f"restarting {want.workload} for its secrets")
            self._record_baseline(batch.host, shown)
        path = data.path
        return Undo(action.key, f"restore the previous {path}",
                    RestoreSecret({path: batch.snapshot.get(path)} if path in batch.written.get(action.key, []) else {},
                                  restarted))

    def _delete(self, batch: _Batch, action: Action, ctx: ActionContext) -> Undo:
        t = self.transport(batch.host)
        if action.key.kind == "secret":
            path = self._secret_path(action.key)
            self._remove_files(t, [path])
            return Undo(action.key, f"restore {path}", RestoreSecret({path: batch.snapshot.get(path)}))
        before = ctx.live
        instances = _live_instances(before) if before is not None else []
        self._systemctl(t, disable=instances, what=f"stopping {action.key.name}")
        paths = self._unit_paths(batch, action.key)
        self._remove_files(t, paths)
        with batch.guard:
            batch.reload_needed = True
        return Undo(action.key, "restore the unit files and start it again",
                    RestoreUnit({p: batch.snapshot.get(p) for p in paths}, tuple(instances), tuple(instances),
                                tuple(before.state.get("enabled", [])) if before is not None else (),
                                _active(before) if before is not None else {}, tuple(instances)))

    def rollback(self, undo: Undo) -> None:
        host = undo.key.scope
        t = self.transport(host)
        data = undo.data
        if isinstance(data, RestoreSecret):
            self._restore(t, data.files)
            if data.restart:
                self._record_baseline(host, self._systemctl(t, restart=data.restart,
                                                            what="restarting with the previous secrets"))
            return
        if not isinstance(data, RestoreUnit):
            raise TypeError(f"no rollback for {data!r}")
        old = set(data.old_instances)
        new_only = sorted(set(data.instances) - old)
        if new_only:  # stopped while their files still exist
            self._systemctl(t, disable=new_only, what="stopping the new instances")
        self._restore(t, data.files)
        t.check("systemctl daemon-reload", what="daemon-reload")
        touched = [i for i in data.touched if i in old]
        was_active = data.active_before
        shown = self._systemctl(t, enable=sorted(set(data.enabled_before) & old),
                                restart=[i for i in touched if was_active.get(i)],
                                stop=[i for i in touched if not was_active.get(i)],
                                what="restoring the previous version")
        self._record_baseline(host, shown)  # the restored instances' own restarts count from here

    # -- health -------------------------------------------------------------------------------------------------

    def health(self, key: ObjectKey, deadline: float) -> HealthResult:
        return self._health(key, None)

    def _health(self, key: ObjectKey, only: set[str] | None,
                checks: Mapping[str, Check] | None = None) -> HealthResult:
        """The object's instances (or `only` these): active, not crash-looping, and passing their checks (the
        desired ones, or `checks`)."""
        want = self.desired().get(key)
        if want is None:
            return HealthResult(True, "not in the spec")
        unit = unit_data(want if key.kind == "unit" else self.desired()[secret_data(want).unit])
        instances = [i for i in unit.instances if only is None or i in only]
        checks = {**unit.checks, **(checks or {})}
        if not instances:
            return HealthResult(True, "no instance to check here")
        t = self.transport(key.scope)
        marker = "@@" + pysecrets.token_hex(6)
        lines = [f"systemctl show -p Id,ActiveState,SubState,Result,NRestarts,MainPID {shlex.join(instances)}",
                 f"echo '{marker} probes'"]
        for i in instances:
            check = checks[i]
            if check.kind != "none":
                lines += [f"echo '{marker} probe {i}'", f"( {probe_script(check)} ) 2>&1 </dev/null",
                          f"echo \"{marker} rc {i} $?\""]
        timeout = 10 + sum(c.timeout_s for c in checks.values())
        result = t.sh("\n".join(lines), timeout=timeout)
        states = parse_health(result.out, instances, marker)
        problems, final = [], False
        for s in states:
            base = self._baseline.get((key.scope, s.unit))
            crashed = base is not None and s.restarts > base
            if s.active == "failed" or s.sub == "auto-restart" or crashed:
                final = True
                problems.append(f"{s.unit} {s.active}/{s.sub} (result {s.result or 'unknown'}, "
                                f"{s.restarts - (base or 0)} restart(s))")
            elif s.active != "active":
                problems.append(f"{s.unit} {s.active}/{s.sub}")
            elif s.probe_rc not in (None, 0):
                problems.append(f"{s.unit} {describe(checks[s.unit])}: {s.probe_output or f'exit {s.probe_rc}'}")
        if problems:
            return HealthResult(False, "; ".join(problems)[:500], final)
        described = sorted({describe(checks[s.unit]) for s in states if checks[s.unit].kind != "none"})
        return HealthResult(True, "active/running" + (f", {', '.join(described)} ok" if described else ""))


def _live_instances(obj: LiveObject) -> list[str]:
    files = obj.state.get("files", {})
    if not obj.key.name.endswith("@.service"):
        return [obj.key.name]
    return sorted(i for rel in files if (i := instance_of(rel)))


def _active(obj: LiveObject) -> dict[str, bool]:
    """Which instances were active, from the live status words (`unit: active/running, ...`)."""
    instances = _live_instances(obj)
    if len(instances) == 1:
        return {instances[0]: obj.status.startswith("active/")}
    out = {i: False for i in instances}
    for part in obj.status.split(", "):
        unit, _, words = part.partition(": ")
        if unit in out:
            out[unit] = words.startswith("active/")
    return out


__all__ = ["HostLock", "SystemdBackend"]
