"""How a command ends: hxpc's errors, an interrupt or a bug become CLI.md's exit codes and one message.

Both entry paths use `guarded`: main.py's fast plain compile and cli.py's typer
app. It lives apart from both so that neither imports the other for it. A spec
error prints every diagnostic with its source line; any other HxpcError prints
its message; an exception that is not hxpc's is a bug, reported in one line
(with the traceback under HXPC_DEBUG=1).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from hxpc.errors import HxpcError, SpecError

INTERRUPTED = 130
# CLI.md's exit codes, as the reference page (docs/cli.md) shows them
EXIT_CODES: dict[int, str] = {
    0: "success; with `--detailed-exitcode` or `--check`: nothing differs",
    1: "a live system refused or failed an action, a health gate failed (and was rolled back), or an internal error",
    2: "with `--detailed-exitcode` or `--check`: there are changes; `hxpc status`: an object is missing, not in "
       "the spec, or unhealthy",
    3: "the spec or the command line is invalid (nothing was touched)",
    4: "refused before touching anything: a stale saved plan, or another apply holds the lock",
    INTERRUPTED: "interrupted; what was applied so far is reported and the lock is released",
}


def report_error(exc: HxpcError) -> int:
    """Print `exc` for a person; its exit code."""
    if isinstance(exc, SpecError):
        from hxpc.diagnostics import render_text

        sys.stderr.write(render_text(exc.diagnostics, exc.texts))
        n = sum(1 for d in exc.diagnostics if d.severity == "error")
        warned = len(exc.diagnostics) - n
        also = f" (and {warned} warning{'s' if warned != 1 else ''})" if warned else ""
        sys.stderr.write(f"hxpc: {n} problem{'s' if n != 1 else ''} found{also}; nothing was changed\n")
    else:
        sys.stderr.write(f"hxpc: {exc}\n")
    return exc.exit_code


def guarded(command: Callable[[], int]) -> int:
    """Run `command`; turn hxpc's errors, an interrupt or a bug into CLI.md's exit codes."""
    try:
        return command()
    except HxpcError as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        sys.stderr.write("hxpc: interrupted\n")
        return INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as exc:
        sys.stderr.write(f"hxpc: internal error: {type(exc).__name__}: {exc}\n"
                         "hxpc: this is a bug in hxpc; rerun with HXPC_DEBUG=1 for the traceback\n")
        if os.environ.get("HXPC_DEBUG"):
            raise
        return 1
