"""The `hxpc` command line: parse options, make one call, render, return an exit code.

Exit codes follow CLI.md: 0 success, 1 live-system or internal failure,
2 differences (with --check / --detailed-exitcode), 3 invalid spec or command
line, 4 refused before touching anything, 130 interrupted. Heavy modules are
imported inside the commands that use them, so `hxpc validate` does not pay
for the engine's imports. The process starts in main.py, which runs a plain
`hxpc compile` without importing typer and hands everything else to `main`.
"""

from __future__ import annotations

import enum
import functools
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hxpc.errors import SpecError, UsageError
from hxpc.guard import INTERRUPTED, guarded

DIFFERS = 2  # CLI.md: the live system (or the output directory) differs from the spec

if TYPE_CHECKING:
    from hxpc.compiler.pipeline import Resolved
    from hxpc.diagnostics import Diagnostic
    from hxpc.engine.plan import Plan
    from hxpc.engine.wiring import Wiring

app = typer.Typer(
    name="hxpc", no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
    help="Compile an LLM serving stack spec into systemd, Compose, Kubernetes and monitoring artifacts.",
)


class Format(enum.StrEnum):
    text = "text"
    json = "json"


class GraphFormat(enum.StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    json = "json"


def _version(value: bool) -> None:
    if value:
        from hxpc import version

        _out(f"hxpc {version()}\n")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print hxpc's version and exit")] = False) -> None:
    """Compile an LLM serving stack spec into systemd, Compose, Kubernetes and monitoring artifacts."""


def complete_env(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of --env: the environments the command's spec declares. While completing, click
    leaves the command's positional words unparsed in `ctx.args`."""
    from hxpc.compiler.pipeline import environments
    from hxpc.sources import FileSources

    given = ctx.params.get("spec") or ctx.params.get("target_file")
    spec = given or next((w for w in ctx.args if not w.startswith("-")), None)
    try:
        names = environments(FileSources(str(spec))) if spec else []
    except Exception:  # noqa: BLE001 - an unreadable spec completes nothing; completion must never fail
        return []
    return [n for n in names if n.startswith(incomplete)]


def complete_target(incomplete: str) -> list[str]:
    """Shell completion of --target: every target hxpc compiles."""
    from hxpc.compiler.targets import names

    return [n for n in names() if n.startswith(incomplete)]


SpecArg = Annotated[str, typer.Argument(help="the stack spec, e.g. specs/hxp.yaml", metavar="SPEC", show_default=False)]
EnvsOpt = Annotated[list[str] | None, typer.Option("--env", "-e", help="environment (repeatable); default: all",
                                                  autocompletion=complete_env)]
EnvOpt = Annotated[str | None, typer.Option("--env", "-e", help="environment (may be left out when the spec has "
                                                                    "only one)", autocompletion=complete_env)]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="output format")]


def _out(text: str) -> None:
    sys.stdout.write(text)


def _err(text: str) -> None:
    sys.stderr.write(text)


def _resolve(spec: str, env: str | None) -> Resolved:
    """The spec merged and resolved for `env` (its only environment when None), loaded once."""
    from hxpc.compiler.pipeline import load_base, resolve_env
    from hxpc.sources import FileSources

    sources = FileSources(spec)
    loaded = load_base(sources)
    return resolve_env(sources, env or _only_env(spec, sources, loaded), loaded)


def _only_env(spec: str, sources: Any = None, loaded: Any = None) -> str:
    """The spec's one environment; a usage error naming them when there are several."""
    from hxpc.compiler.pipeline import environments
    from hxpc.sources import FileSources

    names = environments(sources or FileSources(spec), loaded)
    if len(names) != 1:
        raise UsageError(f"{spec} declares {len(names)} environments ({', '.join(names)}): choose one with --env")
    return names[0]


SpecsArg = Annotated[list[str], typer.Argument(
    help="one or more stack specs; an overlay file (<name>.<env>.yaml) stands for its spec", metavar="SPEC...",
    show_default=False)]


@app.command()
def validate(spec: SpecsArg, env: EnvsOpt = None, fmt: FormatOpt = Format.text) -> None:
    """Load, merge and validate each SPEC for each environment; print every problem."""
    from hxpc.compiler.pipeline import environments, load_base, resolve_env
    from hxpc.diagnostics import render_json, unique_sorted
    from hxpc.sources import FileSources, specs_of

    problems: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    texts: dict[str, str] = {}
    lines: list[str] = []
    for path in specs_of(spec):
        sources = FileSources(path)
        try:
            loaded = load_base(sources)
        except SpecError as exc:
            problems.extend(exc.diagnostics)
            texts.update(exc.texts)
            continue
        texts.update(loaded.texts)
        valid = []
        for name in env or environments(sources, loaded):
            try:
                resolved = resolve_env(sources, name, loaded)
                valid.append(name)
                warnings.extend(resolved.warnings)
                texts.update(resolved.texts)
            except SpecError as exc:
                problems.extend(exc.diagnostics)
                texts.update(exc.texts)
        if valid:
            lines.append(f"{path}: valid ({', '.join(valid)})\n")
    if problems:
        raise SpecError(unique_sorted([*problems, *warnings]), texts)
    warnings = unique_sorted(warnings)
    if fmt is Format.json:
        _out(render_json(warnings))
        return
    _print_warnings(warnings, texts)
    _out("".join(lines))


def _print_warnings(warnings: list[Diagnostic], texts: dict[str, str]) -> None:
    """Warnings go to stderr like errors, but the command goes on (exit 0)."""
    from hxpc.diagnostics import render_text

    if warnings:
        _err(render_text(warnings, texts))
        _err(f"hxpc: {len(warnings)} warning{'s' if len(warnings) != 1 else ''}; the spec is valid\n")


TargetsOpt = Annotated[list[str] | None, typer.Option("--target", "-t", help="target (repeatable); default: all",
                                                     autocompletion=complete_target)]


@app.command("compile")
def compile_(spec: SpecsArg, env: EnvsOpt = None, target: TargetsOpt = None,
             output: Annotated[Path, typer.Option("-o", "--output", help="output directory")] = Path("out"),
             check: Annotated[bool, typer.Option("--check", help="write nothing; exit 2 if DIR differs")] = False,
             replace_unowned: Annotated[bool, typer.Option(
                 "--replace-unowned", help="replace (or delete) files in DIR/<env>/ that hxpc did not write or "
                                           "that were changed since; without it such files stop the compile "
                                           "(exit 4) before anything is changed")] = False,
             ) -> int:
    """Compile SPEC into DIR/<env>/<target>/... (atomically; byte-identical on every run).

    Only files hxpc wrote (listed in DIR/<env>/.hxpc-manifest.json) are replaced or deleted; other files are
    left where they are.
    """
    from hxpc.compile_command import compile_command
    from hxpc.sources import specs_of

    specs = specs_of(spec)
    if len(specs) != 1:
        raise UsageError(f"compile takes one spec, given {len(specs)} ({', '.join(specs)}): their environments "
                         "would share DIR/<env>/; compile each into its own -o DIR")
    return compile_command(specs[0], env, target, output, check, replace_unowned)


@app.command()
def diff(spec: SpecArg,
         base: Annotated[str, typer.Option("--base", help="git revision to compare against")],
         env: EnvOpt = None,
         target: TargetsOpt = None,
         detailed_exitcode: Annotated[bool, typer.Option("--detailed-exitcode", help="exit 2 when artifacts differ")]
         = False) -> int:
    """Compile SPEC at GITREV and in the work tree; print the artifact diff (no live system needed)."""
    from hxpc.artifacts import diff_bundles
    from hxpc.compiler.bundle import Bundle
    from hxpc.compiler.compile import compile_spec
    from hxpc.compiler.pipeline import environments
    from hxpc.sources import FileSources, GitSources, stable_name

    env = env or _only_env(spec)
    old_sources = GitSources(spec, base)
    # an environment (or the whole spec) that did not exist at the base revision diffs against nothing;
    # any other failure to read the base (git, YAML) is an error, not an empty base
    had_env = old_sources.spec_exists() and env in environments(old_sources)
    name = stable_name(spec)
    old = compile_spec(old_sources, [env], target or [], spec_name=name) if had_env else Bundle()
    new = compile_spec(FileSources(spec), [env], target or [], spec_name=name)
    text = diff_bundles(old, new)
    _out(text or f"no changes in the artifacts of {env} since {base}\n")
    return DIFFERS if detailed_exitcode and text else 0


BackendOptions = dict[str, Any]


def with_backend_options(command: Callable[..., int]) -> Callable[..., int]:
    """Offer every backend's own options (hxpc.engine.backends) on `command`, which receives them as one
    `backend_options` mapping: typer reads the signature this gives the wrapper."""
    from hxpc.engine.backends import declared_options

    declared = declared_options()
    signature = inspect.signature(command, eval_str=True)  # typer reads a set __signature__ as it is
    params = [p for p in signature.parameters.values() if p.name != "backend_options"]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False if spec.switch else None,
                                 annotation=Annotated[bool if spec.switch else str | None,
                                                      typer.Option(spec.flag, envvar=spec.envvar, help=spec.help)])
               for name, spec in sorted(declared.items())]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        given = {name: kwargs.pop(name, None) for name in declared}
        return command(*args, backend_options=given, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper


class PlanFormat(enum.StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


def _wire(spec: str, env: str | None, target: list[str] | None, options: BackendOptions) -> Wiring:
    """Resolve the environment once and build the backends of its targets."""
    from hxpc.engine.wiring import build_backends
    from hxpc.sources import stable_name

    wiring = build_backends(_resolve(spec, env), stable_name(spec), target or [], options)
    for skipped in wiring.skipped:
        _err(f"hxpc: note: `{skipped}` is not planned: its apply backend is not implemented yet\n")
    return wiring


def _plan_live(wiring: Wiring, spec: str) -> Plan:
    from hxpc import engine

    meta = wiring.meta
    return engine.plan_live(wiring.backends, wiring.resolved.stack.waves, project=meta.project, env=meta.env,
                            spec_hash=meta.spec_hash, spec_file=spec, progress=engine.make_progress())


@app.command()
@with_backend_options
def plan(spec: SpecArg, env: EnvOpt = None, target: TargetsOpt = None,
         output: Annotated[Path | None, typer.Option("-o", "--output", help="save the plan for `hxpc apply PLAN`")]
         = None,
         fmt: Annotated[PlanFormat, typer.Option("--format", "-f")] = PlanFormat.text,
         detailed_exitcode: Annotated[bool, typer.Option("--detailed-exitcode", help="exit 2 when there are changes")]
         = False,
         backend_options: BackendOptions | None = None) -> int:
    """Read the live system and print the ordered plan; -o saves it for apply."""
    from hxpc import engine
    from hxpc.fsutil import write_atomic

    the_plan = _plan_live(_wire(spec, env, target, backend_options or {}), spec)
    render = {"text": engine.render_text, "json": engine.render_json, "markdown": engine.render_markdown}[fmt.value]
    _out(render(the_plan))
    if output is not None:
        write_atomic(output, engine.render_json(the_plan))
        _err(f"hxpc: plan saved to {output}; apply it with `hxpc apply {output}`\n")
    return DIFFERS if detailed_exitcode and the_plan.has_changes else 0


def _saved_plan(path: str) -> Plan | None:
    """The plan in `path` if it is a saved plan, None if it is a spec: told apart by content (a plan's
    `kind: hxpc-plan` / `format_version`, a spec's `apiVersion`), not by syntax: a spec may be JSON too."""
    from hxpc.engine import load_plan
    from hxpc.engine.plan import PLAN_KIND

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # reading it as a spec reports the problem, located
    try:
        data = json.loads(text)
    except ValueError:
        return None  # not JSON: a YAML spec
    if not isinstance(data, dict):
        raise UsageError(f"{path} is neither an hxpc spec nor a saved plan (it holds a JSON {type(data).__name__})")
    if data.get("kind") == PLAN_KIND or "format_version" in data:
        return load_plan(text)
    if "apiVersion" in data:
        return None
    raise UsageError(f"{path} is neither an hxpc spec (no `apiVersion: hxpc/v1`) nor a saved plan "
                     f"(no `kind: {PLAN_KIND}`); pass a spec with --env, or a plan saved by `hxpc plan -o`")


@app.command("apply")
@with_backend_options
def apply_(target_file: Annotated[str, typer.Argument(metavar="SPEC|PLAN", help="a spec (with --env) or a saved plan")],
           env: EnvOpt = None,
           target: TargetsOpt = None,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="apply without asking")] = False,
           parallelism: Annotated[int, typer.Option("--parallelism", min=1, help="actions at once per wave")] = 4,
           metrics_file: Annotated[Path | None, typer.Option("--metrics-file", help="write the outcome for "
                                                             "node_exporter's textfile collector")] = None,
           lock_ttl: Annotated[int | None, typer.Option(
               "--lock-ttl", envvar="HXPC_LOCK_TTL", min=1,
               help="seconds after which another apply may take over this run's lock "
                    "(default: sized from the plan's startup budgets)")] = None,
           backend_options: BackendOptions | None = None) -> int:
    """Execute the plan in dependency order with health gates; a saved plan is refused when stale."""
    from hxpc import engine

    saved = _saved_plan(target_file)
    if saved is not None:
        if not saved.spec_file:
            raise UsageError("the saved plan does not name its spec")
        spec, env = saved.spec_file, env or saved.env
        if env != saved.env:
            raise UsageError(f"the saved plan is for environment `{saved.env}`, not `{env}`")
        wiring = _wire(spec, env, list(saved.targets), backend_options or {})
        the_plan = saved
    else:
        spec = target_file
        wiring = _wire(spec, env, target, backend_options or {})
        env = wiring.meta.env
        the_plan = _plan_live(wiring, spec)
        _out(engine.render_text(the_plan))
        if not the_plan.has_changes:
            _reap_dead_locks(wiring)
            return 0
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError("refusing to apply without confirmation: pass --yes (stdin is not a terminal)")
            if not typer.confirm("Apply these changes?", default=False):
                _err("hxpc: apply cancelled; nothing was changed\n")
                return 0
    options = engine.ApplyOptions(parallelism=parallelism, metrics_file=metrics_file, lock_ttl_s=lock_ttl)
    from hxpc.engine.lock import LockHeldBy

    try:
        report = engine.apply(the_plan, wiring.backends, env=env, spec_hash=wiring.meta.spec_hash,
                              project=wiring.meta.project, options=options, progress=engine.make_progress())
    except (engine.ApplyFailed, engine.ApplyInterrupted) as exc:
        _out(exc.report.render())
        raise
    except LockHeldBy as exc:  # name the exact command that breaks the lock
        command = f"hxpc unlock {spec} --env {env}"
        raise LockHeldBy(str(exc).replace("hxpc unlock SPEC --env ENV", command), exc.holder, exc.since,
                         exc.lock_id) from None
    _out(report.render())
    return 0


def _reap_dead_locks(wiring: Wiring) -> None:
    """Nothing to change: still remove the locks that applies killed on this machine left behind."""
    from hxpc.engine.lock import LockPrimitives, reap_dead

    for name, backend in sorted(wiring.backends.items()):
        if isinstance(backend, LockPrimitives):
            for said in reap_dead(backend.lock_primitives()):
                _err(f"hxpc: note: {name}: {said}\n")


@app.command()
@with_backend_options
def unlock(spec: SpecArg, env: EnvOpt,
           lock_id: Annotated[str, typer.Option("--lock-id", help="the id of the lock to break, as a refused "
                                                                 "apply printed it", show_default=False)],
           target: TargetsOpt = None, backend_options: BackendOptions | None = None) -> int:
    """Break the apply lock LOCK_ID of SPEC's environment on every live system (like `terraform force-unlock`).

    Use it when the apply holding the lock is gone but cannot be proven dead from here (it ran on another
    machine or container); an apply whose holder died on this machine is taken over at once anyway. Refused
    (exit 4, nothing changed) when a lock held carries another id.
    """
    from hxpc.engine.lock import LockPrimitives, break_locks

    wiring = _wire(spec, env, target, backend_options or {})
    primitives = {}
    for name, backend in sorted(wiring.backends.items()):
        if not isinstance(backend, LockPrimitives):
            raise UsageError(f"the `{name}` backend cannot list its locks; break them with its own tools")
        primitives.update({f"{name} {where}": p for where, p in backend.lock_primitives().items()})
    broken = break_locks(primitives, lock_id)
    if not broken:
        _out(f"no apply lock is held for {wiring.meta.project}/{env}; nothing to do\n")
    for where, info in broken:
        _out(f"broke lock {info.lock_id} of {info.holder} (since {info.since_iso}) on {where}\n")
    return 0


@app.command()
@with_backend_options
def status(spec: SpecArg, env: EnvOpt = None, target: TargetsOpt = None, fmt: FormatOpt = Format.text,
           backend_options: BackendOptions | None = None) -> int:
    """Live health of every object, per target; exit 2 when any is missing, not in the spec, or unhealthy."""
    from hxpc import engine
    from hxpc.engine.status import all_healthy

    wiring = _wire(spec, env, target, backend_options or {})
    rows = engine.collect_status(wiring.backends)
    _out(engine.render_status_json(rows) if fmt is Format.json else engine.render_status_text(rows))
    return 0 if all_healthy(rows) else DIFFERS


@app.command()
def explain(spec: SpecArg, path: Annotated[str, typer.Argument(help="e.g. services.api.replicas")],
            env: EnvOpt = None, fmt: FormatOpt = Format.text) -> None:
    """Print the merged value at PATH and the file:line of every layer that set it."""
    from hxpc.compiler.explain import explain as explain_path

    resolved = _resolve(spec, env)
    report = explain_path(resolved.stack, resolved.merged, path)
    if fmt is Format.json:
        _out(json.dumps(report, indent=2) + "\n")
        return
    _out(f"{report['path']} = {json.dumps(report['value'])}   (env {report['env']})\n")
    if report["default"]:
        _out("  not set by any layer: hxpc's default\n")
    for layer in report["layers"]:
        _out(f"  {layer['file']}:{layer['line']}:{layer['col']}  {layer['source']}\n")


@app.command()
def resources(spec: SpecArg, env: EnvOpt = None, fmt: FormatOpt = Format.text) -> None:
    """Per host: GPU devices per replica, GPU memory per device, cpu and memory, and headroom; per model replica:
    weights, KV cache and how many full-length requests it holds."""
    from hxpc.compiler.resources import resources_report

    resolved = _resolve(spec, env)
    report = resources_report(resolved.stack)
    if fmt is Format.json:
        _out(json.dumps(report, indent=2) + "\n")
        return
    from hxpc.render_resources import print_resources

    print_resources(report)
    _print_warnings(resolved.warnings, resolved.texts)


@app.command()
def graph(spec: SpecArg, env: EnvOpt = None,
          fmt: Annotated[GraphFormat, typer.Option("--format", "-f")] = GraphFormat.mermaid) -> None:
    """The dependency graph and the apply waves."""
    from hxpc.compiler import graph as graphs

    resolved = _resolve(spec, env).stack
    render = {"mermaid": graphs.render_mermaid, "dot": graphs.render_dot, "json": graphs.render_json}[fmt.value]
    _out(render(resolved))


@app.command()
def schema(output: Annotated[Path | None, typer.Option("-o", "--output", help="write to FILE")] = None,
           overlay: Annotated[bool, typer.Option("--overlay", help="the schema of an overlay file")] = False,
           ) -> None:
    """The JSON Schema of the spec (the committed copy is schemas/hxpc.schema.json)."""
    from hxpc.compiler.spec import json_schema
    from hxpc.fsutil import write_atomic

    text = json.dumps(json_schema(overlay), indent=2, sort_keys=True) + "\n"
    if output is None:
        _out(text)
    else:
        write_atomic(output, text)


def main(argv: list[str] | None = None) -> int:
    """Run the typer app on `argv` (default: sys.argv[1:]) and return the exit code."""

    def invoke() -> int:
        try:
            result = app(args=argv, prog_name="hxpc", standalone_mode=False)
            return result if isinstance(result, int) else 0
        except typer.Exit as exc:
            return int(exc.exit_code)
        except typer.Abort:
            _err("hxpc: aborted\n")
            return INTERRUPTED
        except typer.TyperException as exc:  # click's usage errors, vendored by typer
            show = getattr(exc, "show", None)
            if callable(show):
                show()
            else:
                _err(f"hxpc: {exc}\n")
            return UsageError.exit_code

    return guarded(invoke)
