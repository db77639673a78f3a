"""Pure parsing for the systemd backend: unit files, the per-host read script's output, `systemctl show`.

The read script (`READ_SCRIPT`, run once per host) prints one framed report:
a `hxpc-read 1 <nonce>` line, then sections introduced by `@@<nonce> <what>`
lines: the unit files carrying this project's and environment's `X-Hxpc-`
keys (`owned` paths, then their contents as `file` sections), files with a
desired unit's name that lack them (`other`, with only their ownership keys),
the secret environment files' mode, owner and `# X-Hxpc-` header lines (never
their values), and one `systemctl show` for every instance. The nonce is
random per read, so no file content can fake a section. `parse_host` turns it
into `LiveObject`s keyed like the backend's desired objects; unit files are
compared as parsed sections (`parse_unit`): comments and `X-Hxpc-Hash=`,
which follow the spec's hash, never make a difference by themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hxpc.engine.objects import LiveObject, ObjectKey

TARGET = "systemd"
UNIT_DIR = "/etc/systemd/system"
SECRETS_DIR = "/etc/hxpc"
DROPIN = "replica.conf"
SHOW_PROPS = ("Id", "LoadState", "ActiveState", "SubState", "Result", "NRestarts", "MainPID", "InvocationID",
              "UnitFileState")
IGNORED_KEYS = frozenset({"X-Hxpc-Hash"})
_INSTANCE_DIR = re.compile(r"^(?P<base>.+)@(?P<index>[^@/]*)\.service\.d$")

# One command per host, whatever the number of units: grep finds the owned files, one awk prints them,
# one stat and one grep describe the secret files, one `systemctl show` covers every instance.
READ_SCRIPT = r"""set -u
n=$1 p=$2 e=$3
shift 3
d=/etc/systemd/system
s=/etc/hxpc/$p-$e
m="@@$n"
echo "hxpc-read 1 $n"
owned=$(grep -lxF "X-Hxpc-Project=$p" $d/*.service $d/*.service.d/replica.conf 2>/dev/null |
        xargs -r grep -lxF "X-Hxpc-Env=$e" 2>/dev/null)
owned=$(echo $owned)
for f in $owned; do echo "$m owned $f"; done
[ -z "$owned" ] || awk -v m="$m" 'FNR == 1 { print m " file " FILENAME } { print }' $owned
for u in "$@"; do
  for dd in $d /run/systemd/system /usr/lib/systemd/system /lib/systemd/system; do
    f=$dd/$u
    if [ -e "$f" ] || [ -L "$f" ]; then
      case " $owned " in
        *" $f "*) ;;
        *) echo "$m other $f"; grep -E '^X-Hxpc-(Project|Env)=' "$f" 2>/dev/null;;
      esac
    fi
  done
done
if [ -d "$s" ]; then
  set -- $s/*.env
  if [ -e "$1" ]; then
    stat -c "$m secret %n %a %U:%G" "$@"
    echo "$m secret-keys"
    grep -H '^# X-Hxpc-' "$@"
  fi
fi
units=""
for f in $owned; do
  case $f in
    */replica.conf) u=${f%/replica.conf}; u=${u##*/}; u=${u%.d};;
    *@.service) continue;;
    *) u=${f##*/};;
  esac
  units="$units $u"
done
echo "$m show"
props=Id,LoadState,ActiveState,SubState,Result,NRestarts,MainPID,InvocationID,UnitFileState
[ -z "$units" ] || systemctl show -p "$props" $units
echo "$m end"
"""

Sections = dict[str, dict[str, Any]]


def parse_unit(text: str) -> Sections:
    """A unit file as {section: {key: value, or a list of values when set more than once}}.

    Comments, blank lines and `X-Hxpc-Hash=` are left out; a line ending in a backslash continues
    on the next one (joined with one space, as systemd does); an empty assignment resets the
    list before it, as it does for systemd's list settings.
    """
    out: Sections = {}
    section: dict[str, Any] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        if section is None or "=" not in line:
            continue  # systemd ignores (and warns about) these; so does the comparison
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key in IGNORED_KEYS:
            continue
        if key in section:
            previous = section[key]
            section[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            section[key] = value
    if pending and section is not None and "=" in pending:
        key, _, value = pending.partition("=")
        section[key.strip()] = value.strip()
    return out


def unit_values(sections: Sections, section: str, key: str) -> list[str]:
    value = sections.get(section, {}).get(key)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def unit_value(sections: Sections, section: str, key: str, default: str = "") -> str:
    values = unit_values(sections, section, key)
    return values[-1] if values else default


def object_of(rel: str) -> str:
    """The unit object a file belongs to: `b@.service` for `b@2.service.d/replica.conf` and `b@2.service`."""
    head = rel.split("/", 1)[0]
    match = _INSTANCE_DIR.match(head)
    if match:
        return f"{match.group('base')}@.service"
    if "@" in head and head.endswith(".service"):
        return head.split("@", 1)[0] + "@.service"
    return head


def instance_of(rel: str) -> str | None:
    """`b@2.service` for a drop-in `b@2.service.d/replica.conf`; None for a main unit file."""
    head, _, rest = rel.partition("/")
    match = _INSTANCE_DIR.match(head)
    return f"{match.group('base')}@{match.group('index')}.service" if match and rest else None


def parse_show(text: str) -> dict[str, dict[str, str]]:
    """`systemctl show -p ...` for several units: blocks separated by blank lines, keyed by `Id`."""
    units: dict[str, dict[str, str]] = {}
    block: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if "Id" in block:
                units[block["Id"]] = block
            block = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            block[key] = value
    return units


@dataclass
class HostRead:
    """One host's read, split into its parts (still unparsed unit texts)."""

    files: dict[str, str] = field(default_factory=dict)             # owned path -> text
    others: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> its X-Hxpc-Project/Env keys
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> mode, owner and header keys
    show: dict[str, dict[str, str]] = field(default_factory=dict)


class ReadError(ValueError):
    """The read script's output is not a complete report (the host cut it short)."""


def split_read(output: str) -> HostRead:
    lines = output.split("\n")
    first = lines[0].split() if lines else []
    if len(first) != 3 or first[:2] != ["hxpc-read", "1"]:
        raise ReadError(f"unexpected first line {lines[0][:80]!r}" if lines and lines[0] else "no output")
    marker = f"@@{first[2]} "
    read = HostRead()
    owned: list[str] = []
    mode = ""
    show: list[str] = []
    other_path = ""
    ended = False
    for line in lines[1:]:
        if line.startswith(marker):
            kind, _, rest = line[len(marker):].partition(" ")
            mode = kind
            if kind == "owned":
                owned.append(rest)
            elif kind == "file":
                read.files[rest] = ""
                mode = "file:" + rest
            elif kind == "other":
                other_path = rest
                read.others.setdefault(rest, {})
            elif kind == "secret":
                path, _, tail = rest.rpartition(" ")
                path, _, perm = path.rpartition(" ")
                read.secrets[path] = {"mode": perm.zfill(4), "owner": tail}
            elif kind == "end":
                ended = True
                break
            continue
        if mode.startswith("file:"):
            path = mode[5:]
            read.files[path] += line + "\n"
        elif mode == "other":
            key, _, value = line.partition("=")
            if key in ("X-Hxpc-Project", "X-Hxpc-Env"):
                read.others[other_path][key] = value.strip()
        elif mode == "secret-keys":
            path, sep, header = line.partition(":")
            if sep and path in read.secrets and header.startswith("# X-Hxpc-"):
                key, _, value = header[2:].partition("=")
                read.secrets[path][key] = value.strip()
        elif mode == "show":
            show.append(line)
    if not ended:
        raise ReadError("the report was cut short (no end marker)")
    for path in owned:
        read.files.setdefault(path, "")
    read.show = parse_show("\n".join(show))
    return read


def _rel(path: str) -> str:
    return path[len(UNIT_DIR) + 1:] if path.startswith(UNIT_DIR + "/") else path.rsplit("/", 1)[-1]


def _state_words(show: Mapping[str, str] | None) -> str:
    if not show:
        return "unknown"
    return f"{show.get('ActiveState', '?')}/{show.get('SubState', '?')}"


def unit_objects(host: str, files: Mapping[str, str], show: Mapping[str, Mapping[str, str]]) -> list[LiveObject]:
    """Owned unit files grouped into one object per unit (a template with its drop-ins)."""
    groups: dict[str, dict[str, str]] = {}
    for path, text in files.items():
        rel = _rel(path)
        groups.setdefault(object_of(rel), {})[rel] = text
    out = []
    for name, texts in sorted(groups.items()):
        parsed = {rel: parse_unit(texts[rel]) for rel in sorted(texts)}
        instances = sorted(i for rel in parsed if (i := instance_of(rel)))
        if not name.endswith("@.service"):
            instances = [name]
        main = parsed.get(name, {})
        states = {i: show.get(i) for i in instances}
        enabled = sorted(i for i, s in states.items() if s and s.get("UnitFileState") == "enabled")
        running = all(s is not None and s.get("ActiveState") == "active" for s in states.values()) \
            if instances else None
        status = ", ".join(f"{i}: {_state_words(s)}" for i, s in states.items()) if len(instances) > 1 \
            else (_state_words(states[instances[0]]) if instances else "no instances")
        workload = unit_value(main, "Unit", "X-Hxpc-Name") or None
        deps = tuple(unit_value(main, "Unit", "X-Hxpc-DependsOn").split())
        serving = frozenset(i for i, s in states.items() if s and s.get("ActiveState") == "active")
        out.append(LiveObject(ObjectKey(TARGET, host, "unit", name), {"files": parsed, "enabled": enabled},
                              owned=True, workload=workload, depends_on=deps, running=running, status=status,
                              serving=serving))
    return out


def secret_state(path: str, info: Mapping[str, str]) -> dict[str, Any]:
    vars_ = info.get("X-Hxpc-Vars", "")
    return {"path": path, "mode": info.get("mode", ""), "owner": info.get("owner", ""),
            "vars": sorted(vars_.split()), "refs": info.get("X-Hxpc-Refs", "")}


SECRET_PATHS = frozenset({("refs",)})


def parse_host(host: str, project: str, env: str, output: str) -> dict[ObjectKey, LiveObject]:
    """Pure: one host's read-script output as live objects (owned units and secret files, and
    unowned files in the way of a desired name, as `owned=False` objects)."""
    read = split_read(output)
    live: dict[ObjectKey, LiveObject] = {o.key: o for o in unit_objects(host, read.files, read.show)}
    for path, keys in sorted(read.others.items()):
        key = ObjectKey(TARGET, host, "unit", object_of(path.rsplit("/", 1)[-1]))
        if key in live:
            continue
        mine = keys.get("X-Hxpc-Project") == project and keys.get("X-Hxpc-Env") == env
        live[key] = LiveObject(key, {"path": path, **keys}, owned=mine,
                               status=f"{path} exists without {project}/{env}'s X-Hxpc keys")
    for path, info in sorted(read.secrets.items()):
        key = ObjectKey(TARGET, host, "secret", path.rsplit("/", 1)[-1])
        mine = info.get("X-Hxpc-Project") == project and info.get("X-Hxpc-Env") == env
        live[key] = LiveObject(key, secret_state(path, info), owned=mine, workload=info.get("X-Hxpc-Name") or None,
                               secret_paths=SECRET_PATHS, status=f"mode {info.get('mode', '?')}")
    return live


# -- health ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceHealth:
    unit: str
    active: str
    sub: str
    result: str
    restarts: int
    main_pid: int
    probe_rc: int | None      # None: no probe
    probe_output: str = ""


def parse_health(output: str, units: Sequence[str], marker: str) -> list[InstanceHealth]:
    """The health script's output: one `systemctl show` for the units, then each probe's output and status
    after a `<marker> probe <unit>` line and before `<marker> rc <unit> <status>`."""
    show_text, _, rest = output.partition(f"{marker} probes\n")
    show = parse_show(show_text)
    probes: dict[str, tuple[int | None, str]] = {}
    current, buf = "", list[str]()
    for line in rest.splitlines():
        if line.startswith(f"{marker} probe "):
            current, buf = line.split(" ", 2)[2], []
        elif line.startswith(f"{marker} rc "):
            _, _, unit, status = line.split(" ", 3)
            probes[unit] = (int(status), "\n".join(buf).strip())
        elif current:
            buf.append(line)
    out = []
    for unit in units:
        s = show.get(unit, {})
        rc, text = probes.get(unit, (None, ""))
        out.append(InstanceHealth(unit, s.get("ActiveState", "unknown"), s.get("SubState", "unknown"),
                                  s.get("Result", ""), _int(s.get("NRestarts")), _int(s.get("MainPID")), rc, text))
    return out


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


# -- snapshots: the exact bytes of files about to be replaced, for rollback -------------------------------------------

SNAPSHOT_SCRIPT = r"""set -u
n=$1
shift
d=/etc/systemd/system
one() { [ -f "$1" ] || return 0; echo "@@$n file $(wc -c < "$1") $1"; cat -- "$1"; }
for a in "$@"; do
  case $a in
    unit:*@.service)
      u=${a#unit:}
      one "$d/$u"
      for f in "$d/${u%@.service}"@*.service.d/replica.conf; do one "$f"; done;;
    unit:*) one "$d/${a#unit:}";;
    file:*) one "${a#file:}";;
  esac
done
echo "@@$n end"
"""


def parse_snapshot(data: bytes, nonce: str) -> dict[str, bytes]:
    """`SNAPSHOT_SCRIPT`'s output: path -> exact bytes (each framed by its size, so any content is safe)."""
    files: dict[str, bytes] = {}
    head = f"@@{nonce} ".encode()
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        line = data[pos:end].decode("utf-8", "replace")
        if not data.startswith(head, pos):
            raise ReadError(f"unexpected line in a snapshot: {line[:80]!r}")
        parts = line.split(" ", 3)
        if parts[1] == "end":
            return files
        size, path = int(parts[2]), parts[3]
        files[path] = data[end + 1:end + 1 + size]
        pos = end + 1 + size
    raise ReadError("the snapshot was cut short (no end marker)")
