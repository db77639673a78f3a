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
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hxpc.errors import SpecError, UsageError
from hxpc.guard import INTERRUPTED, guarded

if TYPE_CHECKING:
    from hxpc.compiler.pipeline import Resolved
    from hxpc.engine.plan import Plan
    from hxpc.engine.wiring import Wiring

app = typer.Typer(
    name="hxpc", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Compile an LLM serving stack spec into systemd, Compose, Kubernetes and monitoring artifacts.",
)


class Format(enum.StrEnum):
    text = "text"
    json = "json"


class GraphFormat(enum.StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    json = "json"


SpecArg = Annotated[str, typer.Argument(help="the stack spec, e.g. specs/hxp.yaml", metavar="SPEC", show_default=False)]
EnvsOpt = Annotated[list[str] | None, typer.Option("--env", "-e", help="environment (repeatable); default: all")]
EnvOpt = Annotated[str, typer.Option("--env", "-e", help="environment")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="output format")]


def _out(text: str) -> None:
    sys.stdout.write(text)


def _err(text: str) -> None:
    sys.stderr.write(text)


def _resolve(spec: str, env: str) -> Resolved:
    from hxpc.compiler.pipeline import resolve_env
    from hxpc.sources import FileSources

    return resolve_env(FileSources(spec), env)


@app.command()
def validate(spec: SpecArg, env: EnvsOpt = None, fmt: FormatOpt = Format.text) -> None:
    """Load, merge and validate SPEC for each environment; print every problem."""
    from hxpc.compiler.pipeline import environments, load_base, resolve_env
    from hxpc.diagnostics import render_json, unique_sorted
    from hxpc.sources import FileSources

    sources = FileSources(spec)
    loaded = load_base(sources)
    envs = env or environments(sources, loaded)
    problems, texts, valid = [], dict(loaded.texts), []
    for name in envs:
        try:
            resolve_env(sources, name, loaded)
            valid.append(name)
        except SpecError as exc:
            problems.extend(exc.diagnostics)
            texts.update(exc.texts)
    if problems:
        raise SpecError(unique_sorted(problems), texts)
    if fmt is Format.json:
        _out(render_json([]))
    else:
        _out(f"{spec}: valid ({', '.join(valid)})\n")


TargetsOpt = Annotated[list[str] | None, typer.Option("--target", "-t", help="target (repeatable); default: all")]


@app.command("compile")
def compile_(spec: SpecArg, env: EnvsOpt = None, target: TargetsOpt = None,
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

    return compile_command(spec, env, target, output, check, replace_unowned)


@app.command()
def diff(spec: SpecArg, env: EnvOpt,
         base: Annotated[str, typer.Option("--base", help="git revision to compare against")],
         target: TargetsOpt = None,
         detailed_exitcode: Annotated[bool, typer.Option("--detailed-exitcode", help="exit 2 when artifacts differ")]
         = False) -> int:
    """Compile SPEC at GITREV and in the work tree; print the artifact diff (no live system needed)."""
    from hxpc.artifacts import diff_bundles
    from hxpc.compiler.bundle import Bundle
    from hxpc.compiler.compile import compile_spec
    from hxpc.compiler.pipeline import environments
    from hxpc.sources import FileSources, GitSources, stable_name

    old_sources = GitSources(spec, base)
    # an environment (or the whole spec) that did not exist at the base revision diffs against nothing;
    # any other failure to read the base (git, YAML) is an error, not an empty base
    had_env = old_sources.spec_exists() and env in environments(old_sources)
    name = stable_name(spec)
    old = compile_spec(old_sources, [env], target or [], spec_name=name) if had_env else Bundle()
    new = compile_spec(FileSources(spec), [env], target or [], spec_name=name)
    text = diff_bundles(old, new)
    _out(text or f"no changes in the artifacts of {env} since {base}\n")
    return 2 if detailed_exitcode and text else 0


BackendOptions = dict[str, Any]


def with_backend_options(command: Callable[..., int]) -> Callable[..., int]:
    """Offer every backend's own options (hxpc.engine.backends) on `command`, which receives them as one
    `backend_options` mapping: typer reads the signature this gives the wrapper."""
    from hxpc.engine.backends import declared_options

    declared = declared_options()
    signature = inspect.signature(command)
    # the annotations are strings here (`from __future__ import annotations`), and typer does not resolve those
    # of a signature it is handed: without this, `--env` became a positional argument
    hints = typing.get_type_hints(command, include_extras=True)
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
              if p.name != "backend_options"]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=Annotated[str | None, typer.Option(spec.flag, envvar=spec.envvar,
                                                                               help=spec.help)])
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


def _wire(spec: str, env: str, target: list[str] | None, options: BackendOptions) -> Wiring:
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
                            spec_hash=meta.spec_hash, spec_file=spec)


@app.command()
@with_backend_options
def plan(spec: SpecArg, env: EnvOpt, target: TargetsOpt = None,
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
    return 2 if detailed_exitcode and the_plan.has_changes else 0


def _saved_plan(path: str) -> Plan | None:
    """The plan in `path` if it is a saved plan (JSON), else None (it is a spec)."""
    from hxpc.engine import load_plan

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return load_plan(text) if text.lstrip().startswith("{") else None


@app.command("apply")
@with_backend_options
def apply_(target_file: Annotated[str, typer.Argument(metavar="SPEC|PLAN", help="a spec (with --env) or a saved plan")],
           env: Annotated[str | None, typer.Option("--env", "-e", help="environment (with a spec)")] = None,
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
        if env is None:
            raise UsageError("applying a spec needs --env (or pass a plan saved with `hxpc plan -o`)")
        wiring = _wire(spec, env, target, backend_options or {})
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
def status(spec: SpecArg, env: EnvOpt, target: TargetsOpt = None, fmt: FormatOpt = Format.text,
           backend_options: BackendOptions | None = None) -> int:
    """Live health of every object, per target."""
    from hxpc import engine

    wiring = _wire(spec, env, target, backend_options or {})
    rows = engine.collect_status(wiring.backends)
    _out(engine.render_status_json(rows) if fmt is Format.json else engine.render_status_text(rows))
    return 0


@app.command()
def explain(spec: SpecArg, path: Annotated[str, typer.Argument(help="e.g. services.api.replicas")],
            env: EnvOpt, fmt: FormatOpt = Format.text) -> None:
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
def resources(spec: SpecArg, env: EnvOpt, fmt: FormatOpt = Format.text) -> None:
    """Per host: GPU devices per replica, GPU memory per device, cpu and memory, and headroom."""
    from hxpc.compiler.resources import resources_report

    report = resources_report(_resolve(spec, env).stack)
    if fmt is Format.json:
        _out(json.dumps(report, indent=2) + "\n")
        return
    from hxpc.render_resources import print_resources

    print_resources(report)


@app.command()
def graph(spec: SpecArg, env: EnvOpt,
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
