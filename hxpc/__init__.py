"""hxpc: a declarative GitOps compiler for LLM model servers and the services around them."""

from __future__ import annotations


def version() -> str:
    """The installed distribution's version (what `hxpc --version` and the JSON plan report)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("hxpc")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
