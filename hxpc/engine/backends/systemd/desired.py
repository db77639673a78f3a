"""The systemd backend's desired state, pure: what hxpc wants on each host, and how the gate checks it.

`desired_objects` turns the systemd target's files (exactly what compile
writes) into one object per unit and host (a template together with the
drop-ins of its instances on that host) plus one secret environment file per
workload and host, whose state is a hash of the secret references, never of
values. Both carry their instances as the replicas a change rolls
(`Rollout`). Each unit object carries its instances' `Check`s (the spec's
probe at the replica's host port; an exec check runs inside the container
under a container runtime, and natively as the unit's own dynamic user in a
transient sandboxed unit, never as root on the host) and its workload's
`Gate`; `probe_script` makes a check the shell script the health gate runs on
the host. `env_file_text` renders a secret file from values the backend
resolved at apply time. No I/O here.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from hxpc.compiler import probes
from hxpc.compiler.bundle import Meta, emit_target, object_hash
from hxpc.compiler.model import ResolvedStack, Workload
from hxpc.compiler.targets import config_of
from hxpc.compiler.targets import systemd as target
from hxpc.engine.backends.systemd.parse import SECRET_PATHS, TARGET, parse_unit
from hxpc.engine.objects import DesiredObject, Gate, ObjectKey, Rollout

SECRET_MODE, SECRET_OWNER = "0600", "root:root"


@dataclass(frozen=True)
class Check:
    """What the gate probes for one instance, on its host."""

    kind: str           # http | tcp | exec | none
    port: int | None = None
    path: str = "/"
    command: tuple[str, ...] = ()
    timeout_s: int = 3
    # an exec check's argv prefix that runs `command` where the spec means it: `docker exec <container>`,
    # or `systemd-run` as the native unit's user; kept apart so failures name the spec's own command
    wrapper: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnitData:
    """What writing and gating a unit object needs (`DesiredObject.extra`): its files' text, the instances
    it runs on this host, and each instance's check."""

    texts: Mapping[str, str]
    instances: tuple[str, ...]
    checks: Mapping[str, Check]


@dataclass(frozen=True)
class SecretData:
    """What writing a secret file needs (`DesiredObject.extra`): the references it holds, the unit object
    whose instances read it, and its path on the host."""

    refs: Mapping[str, Mapping[str, str]]
    unit: ObjectKey
    path: str


def unit_data(want: DesiredObject) -> UnitData:
    assert isinstance(want.extra, UnitData), want.key
    return want.extra


def secret_data(want: DesiredObject) -> SecretData:
    assert isinstance(want.extra, SecretData), want.key
    return want.extra


def desired_objects(stack: ResolvedStack, meta: Meta) -> dict[ObjectKey, DesiredObject]:
    files = emit_target("systemd", stack, meta)  # sealed: what compile writes
    per_object: dict[tuple[str, str], dict[str, str]] = {}
    for path, text in files.items():
        host, rel = path.split("/", 1)
        name = rel.split("/", 1)[0]
        name = name.split("@", 1)[0] + "@.service" if "@" in name else name
        per_object.setdefault((host, name), {})[rel] = text
    by_base = {target.unit_base(meta.project, w): w for w in stack.workloads.values()}
    placement = stack.placements.get("systemd")
    out: dict[ObjectKey, DesiredObject] = {}
    for (host, name), texts in sorted(per_object.items()):
        w = by_base[name.removesuffix(".service").removesuffix("@")]
        replicas = [r for r in (placement.replicas.get(w.name, ()) if placement else ()) if r.host == host]
        instances = [target.unit_name(meta.project, w, r.index) for r in replicas]
        checks = {target.unit_name(meta.project, w, r.index): check_for(stack, meta, w, r.host_ports, r.index)
                  for r in replicas}
        gate = gate_for(w)
        key = ObjectKey(TARGET, host, "unit", name)
        rollout = rollout_for(w, name, instances)
        out[key] = DesiredObject(
            key, {"files": {rel: parse_unit(texts[rel]) for rel in sorted(texts)}, "enabled": sorted(instances)},
            workload=w.name, gate=gate, rollout=rollout,
            extra=UnitData(dict(sorted(texts.items())), tuple(sorted(instances)), checks))
        if w.secrets:
            refs = secret_refs(stack, w)
            skey = ObjectKey(TARGET, host, "secret", f"{w.name}.env")
            path = secret_path(meta, f"{w.name}.env")
            state = {"path": path, "mode": SECRET_MODE, "owner": SECRET_OWNER, "vars": sorted(refs),
                     "refs": object_hash(refs)}
            # every instance on the host reads the file: a new value reaches each as it restarts, a few at a time
            out[skey] = DesiredObject(skey, state, workload=w.name, secret_paths=SECRET_PATHS, gate=gate,
                                      rollout=dataclasses.replace(rollout, own={}, inert=()),
                                      extra=SecretData(refs, key, path))
    return out


def rollout_for(w: Workload, name: str, instances: list[str]) -> Rollout:
    """A unit object's replicas are its instances on the host, each one unit that runs once (stop-first). An
    instance's drop-in is its own: changing it restarts that instance alone; the template restarts them all,
    and enabling an instance restarts none."""
    own = {i: (("files", f"{i}.d/replica.conf"),) for i in instances} if name.endswith("@.service") else {}
    return Rollout(tuple(sorted(instances)), w.max_unavailable, target.surge_blocker(w), own, (("enabled",),))


def secret_path(meta: Meta, name: str) -> str:
    """Where secret file `name` (`<workload>.env`) lives on a host: root-only, one directory per project and env."""
    return f"{target.SECRETS_ROOT}/{meta.project}-{meta.env}/{name}"


def gate_for(w: Workload) -> Gate:
    interval = min(2.0, w.probe.interval_ms / 1000) if w.probe else 1.0
    return Gate(float(w.startup_budget_s), max(0.2, interval))


def check_for(stack: ResolvedStack, meta: Meta, w: Workload, ports: Mapping[str, int], index: int) -> Check:
    """Replica `index`'s check: http/tcp at its host port (`ports`), exec where the spec means it."""
    probe = w.probe
    if probe is None:
        return Check("none")
    timeout = probes.timeout_s(probe.timeout_ms)
    if probe.kind == "exec":
        config = config_of(stack.spec, target.SystemdTarget)
        runtime = config.runtime if config else "native"
        if runtime != "native":  # the check runs where the spec means it: inside the container
            wrapper: tuple[str, ...] = (target.RUNTIME_BIN[runtime], "exec", target.container_name(meta, w, index))
        else:
            wrapper = native_exec_wrapper(meta, w, timeout)
        return Check("exec", command=tuple(probe.command or ()), timeout_s=timeout, wrapper=wrapper)
    return Check(probe.kind, ports.get(probe.port_name or "", probe.port), probe.path or "/", (), timeout)


SYSTEMD_RUN = "systemd-run"
# What the native unit's sandbox (targets/systemd's template) holds that a transient unit can cheaply share;
# DynamicUser=yes adds ProtectSystem=strict, PrivateTmp=, NoNewPrivileges= and RemoveIPC= on its own.
SANDBOX = ("NoNewPrivileges=yes", "CapabilityBoundingSet=", "UMask=0077", "ProtectSystem=strict", "ProtectHome=yes",
           "PrivateTmp=yes", "ProtectProc=invisible", "ProtectClock=yes", "ProtectHostname=yes",
           "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
           "ProtectControlGroups=yes", "RestrictNamespaces=yes", "RestrictRealtime=yes", "RestrictSUIDSGID=yes",
           "LockPersonality=yes")


def native_exec_wrapper(meta: Meta, w: Workload, timeout: int) -> tuple[str, ...]:
    """`systemd-run` as the unit's user (its dynamic user, or the spec's `security.run_as_user`): a command that
    may point into the service's writable state
    must not run as root. systemd gives every unit naming the same dynamic user the same UID while one is
    active, so the check sees what the service sees and no more. `RuntimeMaxSec=` bounds the transient unit
    itself: the gate's `timeout` only ends the `systemd-run` client."""
    uid, _, gid = (w.security.container_user() or "" if w.security is not None else "").partition(":")
    dynamic = ("DynamicUser=yes", f"User={target.dynamic_user(meta.project, w)}")
    user = (f"User={uid}", f"Group={gid}") if uid else dynamic
    props = (*user, *SANDBOX, *(() if w.gpus else ("PrivateDevices=yes",)), f"RuntimeMaxSec={timeout + 1}")
    return (SYSTEMD_RUN, "--wait", "--pipe", "--collect", "--quiet",
            *(arg for p in props for arg in ("-p", p)), "--")


def probe_script(check: Check) -> str:
    """The check as a POSIX sh script for the host (`hxpc.compiler.probes`: no tool is assumed to exist)."""
    if check.kind == "exec":
        command = check.command
        if check.wrapper[:1] == (SYSTEMD_RUN,):  # systemd expands `$VAR` and `${VAR}` in a command; `$$` is `$`
            command = tuple(a.replace("$", "$$") for a in command)
        return probes.exec_script((*check.wrapper, *command), check.timeout_s)
    if check.port is None:  # validation refuses a probe naming no known port; should one get here, it fails
        return "echo 'the health check names no known port' >&2; exit 1"
    if check.kind == "tcp":
        return probes.tcp_script(check.port, check.timeout_s)
    return probes.http_script(check.port, check.path, check.timeout_s)


_X_ESCAPE = re.compile(r"\\(\\|n|t|x[0-9a-fA-F]{2})")


def recorded_check(health: str, like: Check) -> Check:
    """The check a unit file records as `X-Hxpc-Health=` (`http:<port><path>`, `tcp:<port>`, `exec:<argv>`,
    written C-escaped), timed and wrapped as `like`: how a rolled-back instance is judged by its own version."""
    text = _X_ESCAPE.sub(lambda m: {"\\": "\\", "n": "\n", "t": "\t"}.get(m.group(1))
                         or chr(int(m.group(1)[1:], 16)), health)
    kind, _, rest = text.partition(":")
    if kind == "exec":
        return Check("exec", command=tuple(shlex.split(rest)), timeout_s=like.timeout_s, wrapper=like.wrapper)
    port, path = re.match(r"(\d*)(.*)", rest).groups()  # type: ignore[union-attr]
    if kind in ("http", "tcp") and port:
        return Check(kind, int(port), path or "/", (), like.timeout_s)
    return like


def describe(check: Check) -> str:
    if check.kind == "http":
        return f"GET {probes.url(check.port or 0, check.path)}"
    if check.kind == "tcp":
        return f"tcp 127.0.0.1:{check.port}"
    return f"exec {shlex.join(check.command)}"[:80]


def secret_refs(stack: ResolvedStack, w: Workload) -> dict[str, dict[str, str]]:
    """`VAR: {secret, env|file}` for each of `w`'s secrets: the references a secret file's state hashes."""
    refs: dict[str, dict[str, str]] = {}
    for var, name in sorted(w.secrets.items()):
        source = stack.spec.secrets[name]
        refs[var] = {"secret": name, **({"env": source.env} if source.env else {"file": source.file or ""})}
    return refs


def env_file_text(meta: Meta, w: Workload, refs: Mapping[str, Mapping[str, str]], values: Mapping[str, str]) -> str:
    lines = [f"# Secrets of {meta.project} {w.kind} {w.name} (env {meta.env}), written by hxpc apply: root-only,",
             "# never in a unit, plan or log. Do not edit: hxpc rewrites it when the references change.",
             f"# X-Hxpc-Project={meta.project}", f"# X-Hxpc-Env={meta.env}", f"# X-Hxpc-Name={w.name}",
             f"# X-Hxpc-Vars={' '.join(sorted(refs))}", f"# X-Hxpc-Refs={object_hash(refs)}"]
    lines += [f"{var}={env_quote(values[ref['secret']])}" for var, ref in sorted(refs.items())]
    return "\n".join(lines) + "\n"


def env_quote(value: str) -> str:
    """systemd's EnvironmentFile syntax: double quotes, with `"`, `\\`, `` ` `` and `$` escaped (newlines kept)."""
    return '"' + "".join("\\" + c if c in '"\\`$' else c for c in value) + '"'
