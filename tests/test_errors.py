"""The exception tree drawn in hxpc/errors.py is the tree HxpcError's subclasses form, exit codes included."""

from __future__ import annotations

import importlib
import pkgutil
import re

import hxpc
from hxpc.errors import HxpcError

_LINE = re.compile(r"^(?P<indent>[\s│├└─]*?)(?P<name>[A-Z][A-Za-z]+) \(exit (?P<code>\d+)\)\s*"
                   r"(?:\[(?P<module>[\w.]+)\])?")


def _drawn() -> dict[str, tuple[str | None, int, str]]:
    """name -> (parent, exit code, module) as errors.py's docstring draws them."""
    tree: dict[str, tuple[str | None, int, str]] = {}
    stack: list[tuple[int, str]] = []
    for line in (hxpc.errors.__doc__ or "").splitlines():
        m = _LINE.match(line) if "(exit " in line else None
        if m is None:
            continue
        depth = len(m.group("indent"))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        tree[m.group("name")] = (stack[-1][1] if stack else None, int(m.group("code")),
                                 m.group("module") or "hxpc.errors")
        stack.append((depth, m.group("name")))
    return tree


def _actual() -> dict[str, tuple[str | None, int, str]]:
    for module in pkgutil.walk_packages(hxpc.__path__, "hxpc."):
        if module.name != "hxpc.__main__":
            importlib.import_module(module.name)
    found: dict[str, tuple[str | None, int, str]] = {"HxpcError": (None, HxpcError.exit_code, "hxpc.errors")}
    todo = [HxpcError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found[sub.__name__] = (cls.__name__, sub.exit_code, sub.__module__)
            todo.append(sub)
    return found


def test_the_drawn_tree_is_the_class_tree() -> None:
    drawn = _drawn()
    assert len(drawn) > 5, "the tree in errors.py could not be read"
    assert drawn == _actual()
