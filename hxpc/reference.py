"""The reference pages in docs/, generated from what they describe: the spec's types and the command line.

`docs/spec.md` is written from the spec's JSON Schema (every class, every
field: type, default, constraints, description) with an example of every field
taken from the bundled specs and `docs/examples/`; `docs/cli.md` from the typer
app (every command and option) and the exit codes in `hxpc.guard`. Writing
them is `python -m hxpc.reference`; `--check` exits 1 when the committed pages
differ, and a test runs it, so the pages cannot drift from the code. A field
without an example anywhere is an error here: add one to docs/examples/.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hxpc.guard import EXIT_CODES

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DIRS = (ROOT / "specs", ROOT / "docs" / "examples")
PAGES = {"spec.md": "spec_reference", "cli.md": "cli_reference"}

Node = dict[str, Any]


# -- the spec ------------------------------------------------------------------------------------------------------


def _ref_name(node: Node) -> str | None:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _non_null(node: Node) -> tuple[Node, bool]:
    """The node without its `null` alternative, and whether it had one."""
    options = node.get("anyOf")
    if isinstance(options, list):
        rest = [o for o in options if o.get("type") != "null"]
        if len(rest) == 1 and len(rest) < len(options):
            return {**rest[0], **{k: v for k, v in node.items() if k not in ("anyOf",)}}, True
    return node, False


def _type(node: Node) -> str:
    node, _ = _non_null(node)
    name = _ref_name(node)
    if name:
        return f"[{name}](#{name.lower()})"
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    if "anyOf" in node:
        return " or ".join(_type(o) for o in node["anyOf"])
    kind = node.get("type")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object":
        patterns = node.get("patternProperties") or {}
        values = next(iter(patterns.values()), None) if patterns else node.get("additionalProperties")
        keys = "name" if patterns else "key"
        return f"map of {keys} → {_type(values) if isinstance(values, dict) else 'any'}"
    if isinstance(kind, list):
        return " or ".join(kind)
    return str(kind or "any")


def _constraints(node: Node) -> str:
    node, _ = _non_null(node)
    said = []
    for key, text in (("minimum", "≥ {}"), ("exclusiveMinimum", "> {}"), ("maximum", "≤ {}"),
                      ("exclusiveMaximum", "< {}"), ("minItems", "at least {} item(s)"),
                      ("maxLength", "at most {} characters"), ("pattern", "matches `{}`")):
        if key in node:
            said.append(text.format(node[key]))
    patterns = node.get("patternProperties") or {}
    if patterns:
        names = node.get("propertyNames", {})
        said.append("names are DNS labels" + (f" of at most {names['maxLength']} characters"
                                              if "maxLength" in names else ""))
        said += [f"each {c}" for c in [_constraints(v) for v in patterns.values()] if c]
    return "; ".join(said)


def _classes(schema: Node) -> dict[str, tuple[Node, list[str]]]:
    """Every class, in the order a reader meets it from the top, with the YAML paths where it appears."""
    defs: dict[str, Node] = schema["$defs"]
    found: dict[str, tuple[Node, list[str]]] = {"Stack": (schema, ["(the file)"])}

    def refs(node: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            name = _ref_name(node)
            if name:
                yield name, path
            for key, value in node.items():
                if key == "properties":
                    for field, sub in value.items():
                        yield from refs(sub, f"{path}.{field}" if path else field)
                elif key in ("additionalProperties", "patternProperties"):
                    for sub in value.values() if key == "patternProperties" else [value]:
                        yield from refs(sub, f"{path}.<name>")
                elif key == "items":
                    yield from refs(value, f"{path}[]")
                elif key in ("anyOf", "allOf", "oneOf"):
                    for sub in value:
                        yield from refs(sub, path)

    todo = [("Stack", "")]
    while todo:
        name, path = todo.pop(0)
        for ref, at in refs(found[name][0] if name == "Stack" else defs[name], path):
            if ref not in found:
                found[ref] = (defs[ref], [at])
                todo.append((ref, at))
            elif at not in found[ref][1]:
                found[ref][1].append(at)
                todo.append((ref, at))  # its own classes appear under this path too
    return found


def _example_docs() -> list[tuple[str, Any]]:
    from hxpc.compiler.load import load_document

    docs = []
    for directory in EXAMPLE_DIRS:
        # whole specs first (`<name>.yaml`), then overlay files (`<name>.<env>.yaml`)
        for path in sorted(directory.glob("*.yaml"), key=lambda p: (p.name.count(".") > 1, p.name)):
            data = load_document(path.read_text(), path.name).data
            docs.append((str(path.relative_to(ROOT)), data))
            # an inline overlay is a partial spec of its own
            for overlay in (data.get("environments") or {}).values() if isinstance(data, dict) else []:
                docs.append((str(path.relative_to(ROOT)), overlay))
    return docs


def _at(data: Any, path: str) -> Iterator[Any]:
    """Every value at a reference path (`services.<name>.health`, `rules[]`) in loaded example data."""
    if path in ("", "(the file)"):
        yield data
        return
    head, _, rest = path.partition(".")
    if head.endswith("[]"):
        head = head[:-2]
        items = data.get(head) if isinstance(data, dict) else None
        for item in items if isinstance(items, list) else []:
            yield from _at(item, rest)
        return
    if head == "<name>":
        for value in data.values() if isinstance(data, dict) else []:
            yield from _at(value, rest)
        return
    if isinstance(data, dict) and head in data:
        yield from _at(data[head], rest)
    if head in ("environments",):
        return


# `defaults` holds what a service (or model) may set, meaning the same: its examples are theirs
_ALSO_AT = {"defaults": ("services.<name>", "models.<name>")}


def _compact(value: Any, depth: int = 0) -> Any:
    """An example small enough for a table cell: one entry of a map of objects, whose own maps and
    lists are shown as `{…}` (each class has its own table with its fields' examples)."""
    if isinstance(value, dict):
        if depth >= 1:
            return {"…": "…"} if value else {}
        items = list(value.items())
        if any(isinstance(v, dict) for _, v in items):
            items = items[:1]
        return {k: _compact(v, depth + 1) for k, v in items[:4]}
    if isinstance(value, list) and depth >= 2:
        return ["…"] if value else []
    return value


def _show(field: str, value: Any) -> str:
    text = json.dumps({field: _compact(value)}, ensure_ascii=False)[1:-1].replace('{"…": "…"}', "{…}")
    return f"`{text}`"


def _example(field: str, paths: list[str], docs: list[tuple[str, Any]], node: Node) -> str:
    also = [f"{alias}{path[len(prefix):]}" for path in paths for prefix, aliases in _ALSO_AT.items()
            if path == prefix or path.startswith(prefix + ".") for alias in aliases]
    for _, data in docs:
        for path in [*paths, *also]:
            for instance in _at(data, path):
                if isinstance(instance, dict) and field in instance and instance[field] is not None:
                    return _show(field, instance[field])
    examples = _non_null(node)[0].get("examples")
    if examples:
        return _show(field, examples[0])
    raise LookupError(f"no example of `{field}` at {' or '.join(paths)}: add one to docs/examples/")


def _cell(text: str) -> str:
    """Text for a table cell: one line, `|` escaped, and `<...>` outside code spans shown, not taken for HTML."""
    parts = " ".join(text.split()).replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def spec_reference() -> str:
    from hxpc.compiler.spec import json_schema

    schema = json_schema()
    docs = _example_docs()
    lines = ["# The spec reference", "",
             "Generated from hxpc's spec types by `python -m hxpc.reference`; do not edit. Every field, its type,",
             "default, constraints and meaning, with an example taken from the bundled specs (`specs/`) or",
             "`docs/examples/`. Editors get the same descriptions from `schemas/hxpc.schema.json`.", "",
             "Durations are `10s`, `500ms`, `2m`, `1h`; sizes are Kubernetes quantities (`512Mi`, `80Gi`, `1.5G`);",
             "cpu is a number of cores (`0.5`) or millicores (`500m`). Names of hosts, models, services, secrets,",
             "ports and volumes are DNS labels. Environment overlays may set any field; `null` deletes it.", ""]
    for name, (node, paths) in _classes(schema).items():
        title = "Stack (the top level)" if name == "Stack" else name
        lines += [f"## {title}", "", f"<a id=\"{name.lower()}\"></a>", ""]
        if node.get("description"):
            lines += [" ".join(node["description"].split()), ""]
        if name != "Stack":
            lines += ["At: " + ", ".join(f"`{p}`" for p in paths), ""]
        required = set(node.get("required", []))
        lines += ["| field | type | default | description | example |", "| --- | --- | --- | --- | --- |"]
        for field, sub in node.get("properties", {}).items():
            kind = _type(sub)
            limits = _constraints(sub)
            if limits:
                kind += f" ({limits})"
            if field in required:
                default = "required"
            elif "default" in sub:
                value = sub["default"]
                if isinstance(value, dict):  # a sub-object's default: only what it sets
                    value = {k: v for k, v in value.items() if v is not None}
                default = f"`{json.dumps(value, ensure_ascii=False)}`"
            else:
                default = "—"
            lines.append(f"| `{field}` | {_cell(kind)} | {_cell(default)} | {_cell(sub.get('description', ''))} | "
                         f"{_cell(_example(field, paths, docs, sub))} |")
        lines.append("")
    return "\n".join(lines)


# -- the command line ----------------------------------------------------------------------------------------------


def _param_row(param: Any) -> str:
    names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    if param.param_type_name == "argument":
        names = f"`{param.human_readable_name}`"
    help_text = getattr(param, "help", None) or ""
    extra = []
    if getattr(param, "envvar", None):
        extra.append(f"env `{param.envvar}`")
    if param.required:
        extra.append("required")
    elif param.default not in (None, False, (), []) and not callable(param.default):
        extra.append(f"default `{param.default}`")
    if getattr(param, "multiple", False):
        extra.append("repeatable")
    choices = getattr(param.type, "choices", None)
    kind = "flag" if getattr(param, "is_flag", False) else (
        "one of " + ", ".join(str(c) for c in choices) if choices else param.type.name)
    return f"| {names} | {_cell(kind)} | {_cell(help_text)} | {_cell('; '.join(extra))} |"


def cli_reference() -> str:
    import typer.main

    from hxpc.cli import app

    group = typer.main.get_command(app)
    lines = ["# The command line reference", "",
             "Generated from the command line itself by `python -m hxpc.reference`; do not edit.", "",
             "```", "hxpc [--version] [--install-completion] COMMAND [ARGS]...", "```", "",
             "`hxpc --install-completion` installs shell completion (bash, zsh, fish) of commands, options,",
             "the spec's environments and targets; `hxpc --show-completion` prints it instead.", "",
             "## Exit codes", "", "| code | meaning |", "| --- | --- |"]
    lines += [f"| {code} | {_cell(meaning)} |" for code, meaning in EXIT_CODES.items()]
    lines.append("")
    commands: dict[str, Any] = getattr(group, "commands", {})  # a click group: its commands in declaration order
    for name, command in commands.items():
        if command.hidden:
            continue
        params = [p for p in command.params if p.name != "help"]
        usage = " ".join(["hxpc", name, *(p.human_readable_name.upper() for p in params
                                          if p.param_type_name == "argument"), "[OPTIONS]"])
        lines += [f"## `hxpc {name}`", "", _cell(command.help or ""), "", "```", usage, "```", "",
                  "| argument or option | type | what it does | |", "| --- | --- | --- | --- |"]
        lines += [_param_row(p) for p in params]
        lines.append("")
    return "\n".join(lines)


# -- writing and checking --------------------------------------------------------------------------------------------


def pages() -> dict[str, str]:
    return {"spec.md": spec_reference(), "cli.md": cli_reference()}


def main(argv: list[str]) -> int:
    docs = ROOT / "docs"
    stale = []
    for name, text in pages().items():
        path = docs / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            sys.stdout.write(f"wrote {path.relative_to(ROOT)}\n")
    for name in stale:
        sys.stderr.write(f"docs/{name} is out of date: run `python -m hxpc.reference`\n")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
