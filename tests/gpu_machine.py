"""The lent GPU machine's Python packages, on this machine: what ``bench.gpu`` may import there.

The machine's image lists its packages (``bench/gpu_machine_packages.txt``); the kit brings
the rest as wheels (``bench/device_wheels.txt``). :func:`machine_env` gives a subprocess an
import hook that makes every other installed distribution's modules unimportable, so a
``bench.gpu --tiny`` run here fails where the GPU run would, on a missing package.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MACHINE_PACKAGES = REPO / "bench" / "gpu_machine_packages.txt"
DEVICE_WHEELS = REPO / "bench" / "device_wheels.txt"
# Installed from the repository itself (PYTHONPATH there), not as a package.
PROJECT = "fashion-farm"

# Run first by the interpreter (site imports sitecustomize from PYTHONPATH).
SITECUSTOMIZE = """\
import os
import sys

_BLOCKED = frozenset(open(os.environ["FARM_BLOCKED_MODULES"]).read().split())


class _WithoutBlocked:
    # Every finder answers "not found" for a blocked module, as on a machine without it:
    # importlib.util.find_spec then returns None and an import raises ModuleNotFoundError.
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self._finder, attribute)


sys.meta_path[:] = [_WithoutBlocked(finder) for finder in sys.meta_path]
"""


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def listed(path: Path) -> set[str]:
    """The distribution names of a package list: one a line, ``==version`` allowed."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(normalize(re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]))
    return names


def top_level_modules(dist: importlib.metadata.Distribution) -> set[str]:
    """The importable top-level names a distribution installs."""
    text = dist.read_text("top_level.txt")
    if text:
        return {line.strip() for line in text.splitlines() if line.strip()}
    names = set()
    for file in dist.files or ():
        parts = Path(file).parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".dist-info"):
            continue
        first = parts[0]
        if len(parts) > 1:
            names.add(first)
        elif first.endswith((".py", ".so", ".pyd")):
            names.add(first.split(".", 1)[0])
    return {name for name in names if name.isidentifier()}


def with_dependencies(names: set[str]) -> set[str]:
    """``names`` and, transitively, what their versions installed here require (no extras).

    A package on the machine's image comes with its own dependencies there, which may differ
    from those of the version installed here: these stand in for them. The kit's wheels are
    installed without dependencies, so theirs are not added.
    """
    installed = {normalize(d.metadata["Name"]): d for d in importlib.metadata.distributions()}
    found, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for requirement in installed[name].requires or () if name in installed else ():
            if "extra ==" not in requirement:
                todo.append(normalize(re.split(r"[=<>!~\[; (]", requirement, maxsplit=1)[0]))
    return found


def blocked_modules() -> set[str]:
    """Top-level modules installed here whose distribution the GPU machine would not have."""
    allowed = with_dependencies(listed(MACHINE_PACKAGES)) | listed(DEVICE_WHEELS) | {PROJECT}
    blocked, kept = set(), set()
    for dist in importlib.metadata.distributions():
        modules = top_level_modules(dist)
        if normalize(dist.metadata["Name"]) in allowed:
            kept |= modules
        else:
            blocked |= modules
    return blocked - kept  # a name two distributions share (a namespace) stays


def machine_env(env: dict, folder: Path) -> dict:
    """``env`` for a subprocess that can import only what the GPU machine would have.

    Args:
        env: the environment to extend.
        folder: a scratch folder for the import hook and the list of blocked modules.
    """
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    blocked = folder / "blocked.txt"
    blocked.write_text("\n".join(sorted(blocked_modules())))
    path = [str(folder), str(REPO), env.get("PYTHONPATH", "")]
    return env | {
        "PYTHONPATH": ":".join(part for part in path if part),
        "FARM_BLOCKED_MODULES": str(blocked),
    }
