"""The systemd target: one unit per service and model replica, per host, for docker, podman or native runtimes.

Files are `<host>/<unit>` (only hosts that run something get a directory).
A workload with one replica is a plain unit, `<project>-<name>.service`
(models `<project>-model-<name>.service`). With replicas > 1 it is a template
unit `<project>-<name>@.service` on every host that runs one of its replicas,
plus one drop-in per instance placed there, `<project>-<name>@<i>.service.d/replica.conf`,
so each host directory holds exactly the instances placed on it. Everything
that differs between replicas lives in the drop-in as `Environment=` lines
(`HXPC_REPLICA`, `PORT_<NAME>` = port + i, `CUDA_VISIBLE_DEVICES`) plus the
instance's `DeviceAllow=` and `X-Hxpc-Health=`; the template refers to them as
`${PORT_HTTP}` etc., so a plain unit and a template share one code path.
A template change restarts every instance, a drop-in change only its own.
Decisions the spec leaves open:

- Dependencies: `Requires=`/`After=` only name units on the same host; a
  dependency with no replica on this host is a comment, and every dependency is
  listed in `X-Hxpc-DependsOn=` (apply orders waves across hosts and gates them
  on health). Ownership and probes are `X-Hxpc-*=` keys in `[Unit]` of every
  file, including drop-ins; `X-Hxpc-Hash=` is the object hash of the file's
  text without that line. X- values escape backslashes and control characters C-style.
- Environment: plain `env` is `Environment=` (native) or `--env K=V` (containers:
  never put into the container CLI's own environment, where `LD_PRELOAD` or
  `DOCKER_HOST` would change the CLI itself). Secrets are only referenced:
  `EnvironmentFile=/etc/hxpc/<project>-<env>/<name>.env`, in systemd's
  EnvironmentFile syntax, written root-only by apply; containers get the
  names as `--env VAR`. A missing file fails the start loudly.
- GPUs: `CUDA_VISIBLE_DEVICES` holds the host device indices. Containers get
  them as the runtime's flag (docker `--gpus "device=2,3"`, podman CDI
  `--device nvidia.com/gpu=2 ...`) and not as the variable: inside, the
  devices are renumbered from 0. Native units get `DeviceAllow=` for exactly
  their devices and the NVIDIA control nodes.
- Health: exec probes become the container's `--health-cmd` (docker: a
  shell string; podman: a JSON argv, no shell needed); every probe is also
  recorded as `X-Hxpc-Health=http:<host port><path>|tcp:<host port>|exec:<cmd>`
  with `X-Hxpc-Health{Interval,Timeout,Retries,StartPeriod}=`, because http/tcp
  cannot assume a tool in the image: apply's health gate probes them.
  `TimeoutStartSec=` is the workload's startup budget (it bounds the start job:
  podman units are `Type=notify` via conmon and cover the image pull).
- Volumes are bind mounts of `/var/lib/hxpc/<project>/<name>/<volume>`,
  created by `StateDirectory=`; replicas on one host share them, as on
  compose. A bind mount cannot enforce `size`: it is kept as a comment and an
  `X-Hxpc-Volume=` key (a capacity note, as local-path provisioners treat it
  on kubernetes), not refused, which would make every kubernetes-sized spec
  uncompilable here. Models cache hub downloads under `/var/cache/hxpc/...`.
- Native units run with a dynamic user shared by the replicas of a workload,
  read-only system, no capabilities and a syscall filter. `MemoryDenyWriteExecute=`
  is on only for units without GPUs: CUDA, PyTorch and Triton JIT-compile
  into writable+executable memory. Native models run the host's vLLM
  (`python3 -m vllm.entrypoints.openai.api_server`; hosts need it installed).
  In `exec`, `${HXPC_REPLICA}`, `${PORT_<NAME>}` and `${CUDA_VISIBLE_DEVICES}`
  are expanded by systemd; every other `$` is literal.
- What systemd cannot express (a NUL character, a relative or `:`-containing
  mount path, an `exec` program that is neither absolute nor a bare name) is
  an HX401 error naming the field and the target.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from hxpc.compiler.bundle import TARGET_LABEL, Meta, TargetError, object_hash
from hxpc.compiler.fieldtypes import SPEC_CONFIG, Name
from hxpc.compiler.quantities import cores, format_duration, format_size
from hxpc.compiler.targets import Placing, Platform, Problem, config_of, missing_field, surge_problems
from hxpc.diagnostics import Diagnostic, suggest
from hxpc.records import record

if TYPE_CHECKING:
    import jinja2

    from hxpc.compiler.model import Probe, Replica, ResolvedStack, Workload
    from hxpc.compiler.spec import Stack

TARGET = "systemd"


@record(kw_only=True)
class SystemdTarget:
    """systemd units on hosts, run by docker, podman or natively."""

    __pydantic_config__ = SPEC_CONFIG
    hosts: list[Name] = dataclasses.field(default_factory=list)
    """hosts that get units; workloads that name no hosts run on all of them"""
    runtime: Literal["docker", "podman", "native"] = "docker"
    """how units run the services: docker or podman containers, or the native `exec` command"""


Config = SystemdTarget


def placement(config: SystemdTarget) -> Placing:
    """Replicas round-robin over their own `hosts`, or over `targets.systemd.hosts` when they name none."""
    return Placing(lambda w: w.hosts, default_hosts=tuple(config.hosts))


def check(config: SystemdTarget, stack: Stack, workloads: Mapping[str, Workload]) -> Iterator[Problem]:
    if config.runtime == "native":
        yield from missing_field(stack, "exec", "the native systemd runtime", "HX310",
                                 hint="add `exec: [/path/to/binary, ...]`")
    else:
        yield from missing_field(stack, "image", f"the systemd {config.runtime} runtime", "HX309")
    for i, host in enumerate(config.hosts):
        if host not in stack.hosts:
            yield Problem("HX303", f"systemd target host `{host}` is not declared under `hosts`",
                          ("targets", TARGET, "hosts", i), hint=suggest(host, stack.hosts))
    allowed = set(config.hosts)
    for w in workloads.values():
        section = "models" if w.kind == "model" else "services"
        if not w.hosts and w.replicas:
            yield Problem("HX313", f"{w.kind} `{w.name}` has no hosts to run on for the systemd target",
                          (section, w.name), key=True, hint="set its `hosts`, or list hosts in `targets.systemd.hosts`")
        for i, host in enumerate(w.hosts):
            if host in stack.hosts and host not in allowed:
                yield Problem("HX311", f"`{w.name}` is placed on `{host}`, which is not in targets.systemd.hosts",
                              (section, w.name, "hosts", i), hint=f"add `{host}` to targets.systemd.hosts")
    yield from surge_problems(TARGET, workloads, surge_blocker)


def surge_blocker(w: Workload, replica: Replica | None = None, project: str = "") -> str:
    """Why a new replica of `w` cannot start beside the one it replaces: never "" here, since a replica is one
    unit (`<base>@<i>.service`), which systemd runs once, on its own host port and GPUs. `project` (with
    `replica`) names the unit."""
    unit = unit_name(project, w, replica.index) if project and replica is not None else "one systemd unit"
    reasons = [f"runs as {unit}" if project and replica is not None else "runs each replica as one systemd unit"]
    if w.ports:
        ports = sorted(replica.host_ports.values()) if replica is not None else sorted(w.ports.values())
        reasons.append(f"listens on host port {', '.join(str(p) for p in ports)}" if replica is not None
                       else "listens on its own host ports")
    if w.gpus:
        devices = replica.gpu_devices if replica is not None else ()
        reasons.append(f"holds GPU {','.join(str(d) for d in devices)}" if devices else f"holds {w.gpus} GPU(s)")
    return ", ".join(reasons[:-1]) + (" and " if len(reasons) > 1 else "") + reasons[-1]


def platform(config: SystemdTarget, stack: ResolvedStack) -> Platform:
    return Platform("hosts", TARGET, stack.placements.get(TARGET))


def template(name: str) -> jinja2.Template:
    # Jinja is imported with the first unit rendered, not with the spec's classes that import this module
    from hxpc.compiler.targets.templates import template as load

    return load(TARGET, name)
HASH_MARK = "X-Hxpc-Hash=@HXPC-HASH@"
RESTART = {"always": "always", "on-failure": "on-failure", "never": "no"}
RUNTIME_BIN = {"docker": "/usr/bin/docker", "podman": "/usr/bin/podman"}
STATE_ROOT, CACHE_ROOT, SECRETS_ROOT = "/var/lib", "/var/cache", "/etc/hxpc"
NVIDIA_CONTROL = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
# what common images' entrypoints need to chown their data and drop to their user (as on compose)
CAP_ADD = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID")
SHM_MIN_GIB, SHM_GIB_PER_GPU = 2, 1
HF_CACHE_PATH = "/root/.cache/huggingface"  # vllm/vllm-openai runs as root with the default HF_HOME
VLLM = ("/usr/bin/env", "python3", "-m", "vllm.entrypoints.openai.api_server")
USER_MAX = 31  # systemd refuses longer user names for DynamicUser=
_BARE_PROGRAM = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.+-]*$")


# --- quoting: systemd's rules for command lines, Environment= and paths ---------------------------------------------


@record
class Var:
    """A reference to a unit environment variable, left for systemd to expand (`${NAME}`)."""

    name: str


_SPECIAL = re.compile(r'[\\"%$\x00-\x1f\x7f]')
_NEEDS_QUOTES = re.compile(r"""[\s"'\\;\x00-\x1f\x7f]""")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "%": "%%", "\n": "\\n", "\t": "\\t"}


def _escape(text: str, *, dollar: bool) -> str:
    """C-style escapes for systemd's unquoting, `%%` for its specifiers, `$$` where it expands variables."""
    if not _SPECIAL.search(text):
        return text

    def one(match: re.Match[str]) -> str:
        ch = match.group()
        if ch == "$":  # command lines expand $VAR; `$$` is a literal `$`
            return "$$" if dollar else "$"
        return _ESCAPES.get(ch) or f"\\x{ord(ch):02x}"

    return _SPECIAL.sub(one, text)


def word(*parts: str | Var, dollar: bool = True) -> str:
    """One argument, written so that systemd's parser gives back exactly these characters."""
    literal = "".join(p for p in parts if isinstance(p, str))
    text = "".join(_escape(p, dollar=dollar) if isinstance(p, str) else f"${{{p.name}}}" for p in parts)
    return text if text and not _NEEDS_QUOTES.search(literal) else f'"{text}"'


_X_SPECIAL = re.compile(r"[\\\x00-\x1f\x7f]")


def _x(text: str) -> str:
    """A value for an `X-Hxpc-*=` key or a comment: kept on one line (a trailing `\\` would continue it)."""
    return _X_SPECIAL.sub(lambda m: _ESCAPES.get(m.group()) or f"\\x{ord(m.group()):02x}", text)


def _port_var(port_name: str) -> str:
    return "PORT_" + port_name.upper().replace("-", "_")


# --- names ----------------------------------------------------------------------------------------------------------


def unit_base(project: str, w: Workload) -> str:
    return f"{project}-model-{w.name}" if w.kind == "model" else f"{project}-{w.name}"


def unit_name(project: str, w: Workload, index: int) -> str:
    """The unit a replica runs as: `<base>.service`, or the instance `<base>@<i>.service` when replicas > 1."""
    base = unit_base(project, w)
    return f"{base}@{index}.service" if w.replicas > 1 else f"{base}.service"


def container_name(meta: Meta, w: Workload, index: int) -> str:
    base = f"{meta.project}-{meta.env}-{w.name}"
    return base if w.replicas == 1 else f"{base}-{index}"


def dynamic_user(project: str, w: Workload) -> str:
    # one user per workload, shared by its instances, so state and cache directories are not chowned back and forth
    name = f"{project}-{w.name}"
    return name if len(name) <= USER_MAX else f"hxpc-{object_hash([project, w.name])[:USER_MAX - 5]}"


# --- checks: what systemd cannot express ----------------------------------------------------------------------------


def _limit(w: Workload, field: str, message: str, hint: str | None = None) -> Diagnostic:
    section = "models" if w.kind == "model" else "services"
    return Diagnostic("HX401", f"{message} (field `{section}.{w.name}.{field}`, target {TARGET})", hint=hint)


def _strings(w: Workload) -> list[tuple[str, str]]:
    found = [(f"env.{k}", v) for k, v in w.env.items()]
    found += [("args", a) for a in w.args] + [("command", c) for c in w.command or ()]
    found += [("exec", e) for e in (w.exec or ())] + [("image", w.image or "")]
    found += [(f"volumes.{n}.path", v.path) for n, v in w.volumes.items()]
    if w.probe is not None:
        found += [("health.exec", c) for c in w.probe.command or ()] + [("health.http.path", w.probe.path or "")]
    return found


def _problems(stack: ResolvedStack, runtime: str) -> list[Diagnostic]:
    problems: list[Diagnostic] = []
    for w in stack.workloads.values():
        if not w.replicas:
            continue
        for field, value in _strings(w):
            if "\0" in value:
                problems.append(_limit(w, field, "a unit file cannot carry a NUL character"))
        for vname, volume in w.volumes.items():
            if not volume.path.startswith("/") or ":" in volume.path:
                problems.append(_limit(w, f"volumes.{vname}.path", f"volume `{vname}` mounts at `{volume.path}`; "
                                       "a bind mount needs an absolute path without `:`"))
        if w.model is not None and w.model.source.startswith("/") and ":" in w.model.source:
            problems.append(_limit(w, "source", "a local model path is bind-mounted and cannot contain `:`"))
        if runtime == "native" and w.kind == "service" and w.exec:
            program = w.exec[0]
            if not (program.startswith("/") or _BARE_PROGRAM.match(program)):
                problems.append(_limit(w, "exec", f"systemd runs `{program}` only by absolute path or bare name "
                                       "(searched in /usr/local/bin:/usr/bin...)", hint="write an absolute path"))
    return problems


def _collisions(stack: ResolvedStack, meta: Meta, runtime: str,
                by_host: dict[str, dict[str, list[Replica]]]) -> list[Diagnostic]:
    """Two workloads whose generated names meet on a host: one unit file would overwrite the other, or
    each unit's `rm -f` would kill the other's container. Names follow the spec names (the golden files
    pin them), so the only safe answer is an error asking for a rename."""
    problems: list[Diagnostic] = []
    reported: set[tuple[str, str, str]] = set()
    for host in sorted(by_host):
        owners: dict[tuple[str, str], Workload] = {}
        for name, here in by_host[host].items():
            w = stack.workloads[name]
            base = unit_base(meta.project, w)
            # a template's drop-ins are `<base>@<i>...`, so they can only meet if the templates do
            generated = [("unit file", f"{base}@.service" if w.replicas > 1 else f"{base}.service")]
            if runtime != "native":
                generated += [("container", container_name(meta, w, r.index)) for r in here]
            for what, generated_name in generated:
                first = owners.setdefault((what, generated_name), w)
                if first is w or (what, first.name, w.name) in reported:
                    continue
                reported.add((what, first.name, w.name))
                problems.append(Diagnostic("HX405", (
                    f"{first.kind} `{first.name}` and {w.kind} `{w.name}` both generate the {what} "
                    f"`{generated_name}` on host `{host}` (target {TARGET})"),
                    hint=f"rename `{first.name}` or `{w.name}`: otherwise one silently replaces the other"))
    return problems


# --- emit -----------------------------------------------------------------------------------------------------------


def emit(stack: ResolvedStack, meta: Meta) -> dict[str, str]:
    """`<host>/<unit>` and `<host>/<unit>@<i>.service.d/replica.conf` for every host that runs a replica."""
    target = config_of(stack.spec, SystemdTarget)
    placed = stack.placements.get(TARGET)
    if target is None or placed is None:
        return {}
    problems = _problems(stack, target.runtime)
    if problems:
        raise TargetError(problems)
    by_host: dict[str, dict[str, list[Replica]]] = {}
    for name, replicas in placed.replicas.items():
        for r in replicas:
            if r.host is not None:  # validation (HX313) reports replicas without a host
                by_host.setdefault(r.host, {}).setdefault(name, []).append(r)
    collisions = _collisions(stack, meta, target.runtime, by_host)
    if collisions:
        raise TargetError(collisions)
    units_on = {host: {name: [unit_name(meta.project, stack.workloads[name], r.index) for r in reps]
                       for name, reps in names.items()} for host, names in by_host.items()}
    hosts_of = {name: sorted({r.host for r in reps if r.host}) for name, reps in placed.replicas.items()}
    files: dict[str, str] = {}
    for host in sorted(by_host):
        for name, here in by_host[host].items():
            unit = _Unit(stack, meta, target.runtime, stack.workloads[name], host, here)
            files.update(unit.files(units_on[host], hosts_of))
    return dict(sorted(files.items()))


def _finish(text: str) -> str:
    """Put the hash of the text, without its hash line and comments, into that line.

    Comments (the header with its own content hash among them) say nothing to systemd, so they
    are left out: the object hash changes exactly when what the unit does changes.
    """
    without = "".join(line for line in text.splitlines(keepends=True)
                      if line.rstrip("\n") != HASH_MARK and not line.startswith("#"))
    return text.replace(HASH_MARK, f"X-Hxpc-Hash={object_hash(without)}")


class _Unit:
    """One workload on one host: a plain unit, or a template and the drop-ins of the instances placed here."""

    def __init__(self, stack: ResolvedStack, meta: Meta, runtime: str, w: Workload, host: str,
                 replicas: list[Replica]) -> None:
        self.stack, self.meta, self.runtime, self.w, self.host, self.replicas = stack, meta, runtime, w, host, replicas
        self.template = w.replicas > 1
        self.native = runtime == "native"
        self.project = meta.project

    def files(self, units_here: dict[str, list[str]], hosts_of: dict[str, list[str]]) -> dict[str, str]:
        w, base = self.w, unit_base(self.project, self.w)
        main = f"{base}@.service" if self.template else f"{base}.service"
        out = {f"{self.host}/{main}": _finish(template("unit.service.j2").render(
            self._context(units_here, hosts_of)))}
        if self.template:
            dropin = template("replica.conf.j2")
            for r in self.replicas:
                text = dropin.render(header=self.meta.header(), project=self.project, env=self.meta.env,
                                     name=w.name, host=self.host, hash_mark=HASH_MARK, replica=self._replica(r))
                out[f"{self.host}/{base}@{r.index}.service.d/replica.conf"] = _finish(text)
        return out

    # -- [Unit] ---------------------------------------------------------------------------------------------------

    def _context(self, units_here: dict[str, list[str]], hosts_of: dict[str, list[str]]) -> dict[str, Any]:
        w, meta = self.w, self.meta
        wants, after, requires = ["network-online.target"], ["network-online.target"], []
        if self.runtime == "docker":
            requires.append("docker.service")
            after.append("docker.service")
        remote = []
        for dep in w.depends_on:
            local = units_here.get(dep, [])
            requires += local
            after += local
            if not local:
                elsewhere = ", ".join(hosts_of.get(dep, [])) or "no host (0 replicas)"
                remote.append(f"{dep} runs on {elsewhere}: systemd cannot order units across hosts; "
                              "apply starts it in an earlier wave")
        what = "model" if w.kind == "model" else "service"
        description = f"{self.project} {what} {w.name} ({meta.env})"
        if w.model is not None:
            description = f"{self.project} model {w.name}: vLLM serving {w.model.source} ({meta.env})"
        if self.template:
            description += ", replica %i"
        notes = []
        if self.template:
            here = ", ".join(str(r.index) for r in self.replicas)
            notes.append(f"Template for the replicas of {w.name} on {self.host}: instances {here}. Each instance's "
                         "HXPC_REPLICA, ports and GPUs are in <unit>@<i>.service.d/replica.conf.")
        if self.native and w.model is not None:
            notes.append("Runs the host's vLLM (python3 -m vllm.entrypoints.openai.api_server must be importable); "
                         f"the image {w.image} is what the container runtimes would run.")
        probe = w.probe
        timing = [] if probe is None else [
            ("Interval", format_duration(probe.interval_ms)), ("Timeout", format_duration(probe.timeout_ms)),
            ("Retries", str(probe.retries)), ("StartPeriod", format_duration(probe.start_period_ms))]
        return {
            "header": meta.header(), "notes": [_x(n) for n in notes], "description": _x(description),
            "wants": wants, "requires": requires, "after": after, "remote": [_x(r) for r in remote],
            "depends_on": " ".join(w.depends_on), "project": self.project, "env": meta.env, "kind": w.kind,
            "name": w.name, "runtime": self.runtime, "health_timing": timing, "hash_mark": HASH_MARK,
            "replica": None if self.template else self._replica(self.replicas[0]),
            "volumes": self._volume_notes(),
            "service": self._service(),
        }

    def _volume_notes(self) -> list[dict[str, str]]:
        out = []
        for vname, volume in self.w.volumes.items():
            note = {"name": vname, "source": self._volume_dir(vname), "target": _x(volume.path), "size": ""}
            if volume.size is not None:
                note["size"] = format_size(volume.size)
            out.append(note)
        return out

    def _volume_dir(self, vname: str) -> str:
        return f"{STATE_ROOT}/hxpc/{self.project}/{self.w.name}/{vname}"

    # -- per replica ------------------------------------------------------------------------------------------------

    def _replica(self, r: Replica) -> dict[str, Any]:
        w = self.w
        env = [("HXPC_REPLICA", str(r.index))]
        env += [(_port_var(p), str(n)) for p, n in r.host_ports.items()]
        if r.gpu_devices:
            env.append(("CUDA_VISIBLE_DEVICES", ",".join(map(str, r.gpu_devices))))
            if self.runtime == "podman":
                flags = " ".join(f"--device nvidia.com/gpu={d}" for d in r.gpu_devices)
                env.append(("HXPC_GPU_ARGS", flags))
        devices = [f"/dev/nvidia{d}" for d in r.gpu_devices] if self.native else []
        return {
            "index": r.index, "unit": unit_name(self.project, w, r.index), "host": self.host,
            "environment": [word(f"{k}={v}", dollar=False) for k, v in env],
            "devices": devices, "health": _x(self._health(w.probe, r)) if w.probe else None,
            "metrics": _x(f"http:{w.metrics[0] + r.index}{w.metrics[1]}") if w.metrics else None,
        }

    def _health(self, probe: Probe | None, r: Replica) -> str:
        assert probe is not None
        port = r.host_ports.get(probe.port_name or "", probe.port)
        if probe.kind == "http":
            return f"http:{port}{probe.path or '/'}"
        if probe.kind == "tcp":
            return f"tcp:{port}"
        return f"exec:{shlex.join(probe.command or ())}"

    # -- [Service] --------------------------------------------------------------------------------------------------

    def _service(self) -> dict[str, Any]:
        w = self.w
        env_files = [f"{SECRETS_ROOT}/{self.project}-{self.meta.env}/{w.name}.env"] if w.secrets else []
        svc: dict[str, Any] = {
            "type": "exec", "native": self.native, "environment": [], "env_files": env_files,
            "state_dirs": [f"hxpc/{self.project}/{w.name}/{v}" for v in w.volumes],
            "cache_dirs": [], "exec_start_pre": [], "exec_stop": [], "exec_stop_post": [],
            "restart": RESTART[w.restart], "timeout_start": f"{w.startup_budget_s}s", "limits": [],
            "hardening": None,
        }
        if self.native:
            self._native(svc)
        else:
            self._container(svc)
        return svc

    def _cache_dir(self) -> str:
        return f"hxpc/{self.project}/{self.w.name}" if self.native else f"hxpc/{self.project}/huggingface"

    def _native(self, svc: dict[str, Any]) -> None:
        w = self.w
        svc["environment"] = [word(f"{k}={v}", dollar=False) for k, v in w.env.items()]
        replica_vars = {"HXPC_REPLICA", "CUDA_VISIBLE_DEVICES", *(_port_var(p) for p in w.ports)}
        if w.model is not None:
            argv = [" ".join(word(a) for a in VLLM), *self._vllm_args()]
            if not w.model.source.startswith("/"):
                cache = f"{CACHE_ROOT}/{self._cache_dir()}"
                svc["cache_dirs"].append(self._cache_dir())
                # vLLM, torch and triton keep caches under $HOME; the dynamic user has none
                svc["environment"] += [word(f"HF_HOME={cache}", dollar=False), word(f"HOME={cache}", dollar=False)]
        else:
            argv = [_exec_word(a, replica_vars) for a in w.exec or ()]
        svc["exec_start"] = _lines([argv[:1], *_grouped(argv[1:])])
        if w.cpu_millis:
            quota = w.cpu_millis / 10
            svc["limits"].append(f"CPUQuota={quota:g}%")
        if w.memory_bytes:
            svc["limits"].append(f"MemoryMax={_systemd_bytes(w.memory_bytes)}")
        gpu = w.gpus > 0
        low_port = any(n < 1024 for r in self.replicas for n in r.host_ports.values())
        caps = "CAP_NET_BIND_SERVICE" if low_port else ""
        uid, _, gid = (w.security.container_user() or "" if w.security is not None else "").partition(":")
        svc["hardening"] = {
            "user": dynamic_user(self.project, w), "gpu": gpu, "caps": caps,
            "uid": uid, "gid": gid,  # the spec's security.run_as_user (or root) instead of a dynamic user
            # a capability held inside a user namespace does not reach the host's network namespace
            "private_users": not gpu and not caps,
            "control_devices": list(NVIDIA_CONTROL) if gpu else [],
            # getifaddrs() (NCCL, torch.distributed) enumerates interfaces over netlink
            "families": "AF_UNIX AF_INET AF_INET6" + (" AF_NETLINK" if gpu or w.model else ""),
            "mdwe": not gpu and w.model is None,
            "bind_paths": [word(f"{self._volume_dir(n)}:{v.path}", dollar=False) for n, v in w.volumes.items()],
            "bind_ro_paths": [word(w.model.source, dollar=False)]
            if w.model is not None and w.model.source.startswith("/") else [],
        }

    def _vllm_args(self) -> list[str]:
        # a native replica listens on its host port, so `--port` follows PORT_HTTP
        args, out, i = list(self.w.args), [], 0
        port_done = False
        while i < len(args):
            if args[i] == "--port" and not port_done and i + 1 < len(args):
                out += [word("--port"), word(Var(_port_var("http")))]
                port_done, i = True, i + 2
                continue
            out.append(word(args[i]))
            i += 1
        return out

    def _container(self, svc: dict[str, Any]) -> None:
        w, meta, binary = self.w, self.meta, RUNTIME_BIN[self.runtime]
        # names are DNS labels, so no quoting; a template names its container after the instance (%i)
        name = f"{meta.project}-{meta.env}-{w.name}-%i" if self.template else container_name(meta, w, 0)
        run = [[binary, "run", "--rm", "--name", name]]
        if self.runtime == "podman":
            # podman's own systemd integration: conmon signals readiness, the unit's cgroup holds the container
            svc["type"] = "notify"
            run[0] += ["--replace", "--detach", "--sdnotify=conmon", "--cgroups=no-conmon"]
            svc["environment"].append("PODMAN_SYSTEMD_UNIT=%n")  # %n: the unit's own name, for `podman auto-update`
            svc["exec_stop"].append(f"{binary} stop --ignore {name}")
            svc["exec_stop_post"].append(f"-{binary} rm --force --ignore {name}")
            svc["exec_start_pre"].append(f"-{binary} rm --force --ignore {name}")
        else:
            svc["exec_stop"].append(f"-{binary} stop {name}")
            svc["exec_start_pre"].append(f"-{binary} rm -f {name}")
        # the target label: a compose apply on the same Docker Engine must neither own nor prune this container
        labels = {**meta.owner_labels, TARGET_LABEL: "systemd"}
        run += [["--label", word(f"{k}={v}")] for k, v in sorted(labels.items())]
        run += [["--publish", word(Var(_port_var(p)), f":{n}")] for p, n in w.ports.items()]
        if w.cpu_millis:
            run.append(["--cpus", cores(w.cpu_millis)])
        if w.memory_bytes:
            run.append(["--memory", _docker_bytes(w.memory_bytes)])
        if w.gpus:
            if self.runtime == "docker":
                # docker reads the value as CSV: the quotes keep `device=2,3` one field
                run.append(["--gpus", word('"device=', Var("CUDA_VISIBLE_DEVICES"), '"')])
            else:
                run.append(["$HXPC_GPU_ARGS"])  # unbraced: systemd splits it into `--device nvidia.com/gpu=<i>` pairs
        if w.model is not None:
            # NCCL between tensor-parallel ranks and vLLM's worker queues live in /dev/shm (64 MiB by default)
            run.append(["--shm-size", f"{max(SHM_MIN_GIB, SHM_GIB_PER_GPU * w.gpus)}g"])
        run.append(["--cap-drop", "ALL"] + [a for c in CAP_ADD for a in ("--cap-add", c)])
        run.append(["--security-opt", "no-new-privileges"])
        user = w.security.container_user() if w.security is not None else None
        if user is not None:
            run.append(["--user", user])
        if w.security is not None and w.security.read_only_root_filesystem:
            run.append(["--read-only"])
        run += [["--env", word(f"{k}={v}")] for k, v in w.env.items()]
        run += [["--env", word(k)] for k in w.secrets]
        run += [["--volume", word(f"{self._volume_dir(n)}:{v.path}")] for n, v in w.volumes.items()]
        if w.model is not None:
            if w.model.source.startswith("/"):
                run.append(["--volume", word(f"{w.model.source}:{w.model.source}:ro")])
            else:
                svc["cache_dirs"].append(self._cache_dir())
                run.append(["--volume", word(f"{CACHE_ROOT}/{self._cache_dir()}:{HF_CACHE_PATH}")])
        if w.probe is not None and w.probe.kind == "exec":
            run.append(self._health_flags(w.probe))
        tail: list[str] = []
        if w.command is not None:
            run.append(["--entrypoint", word(w.command[0] if w.command else "")])
            tail += [word(c) for c in w.command[1:]]
        run.append([word(w.image or "")])
        run += _grouped([*tail, *(word(a) for a in w.args)])
        svc["exec_start"] = _lines(run)

    def _health_flags(self, probe: Probe) -> list[str]:
        command = list(probe.command or ())
        # docker only takes a shell string; podman takes an exact argv as JSON, so the image needs no shell
        text = shlex.join(command) if self.runtime == "docker" else json.dumps(command, separators=(",", ":"))
        return ["--health-cmd", word(text), "--health-interval", format_duration(probe.interval_ms),
                "--health-timeout", format_duration(probe.timeout_ms), "--health-retries", str(probe.retries),
                "--health-start-period", format_duration(probe.start_period_ms)]


def _exec_word(arg: str, replica_vars: set[str]) -> str:
    """An `exec` argument: hxpc's own per-replica variables stay references, every other `$` is literal."""
    parts: list[str | Var] = []
    pos = 0
    for match in re.finditer(r"\$\{([A-Z0-9_]+)\}", arg):
        if match.group(1) in replica_vars:
            parts += [arg[pos:match.start()], Var(match.group(1))]
            pos = match.end()
    parts.append(arg[pos:])
    return word(*[p for p in parts if p != ""] or [""])


def _grouped(words: list[str]) -> list[list[str]]:
    """Arguments as `--flag value...` groups, one per line of the unit."""
    groups: list[list[str]] = []
    for w in words:
        if not groups or w.startswith("-"):
            groups.append([w])
        else:
            groups[-1].append(w)
    return groups


def _lines(groups: list[list[str]]) -> str:
    """A command line, one option per line, continued with backslashes."""
    return " \\\n    ".join(" ".join(g) for g in groups)


def _systemd_bytes(size: int) -> str:
    for suffix, factor in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def _docker_bytes(size: int) -> str:
    for suffix, factor in (("g", 2**30), ("m", 2**20), ("k", 2**10)):
        if size % factor == 0:
            return f"{size // factor}{suffix}"
    return f"{size}b"
