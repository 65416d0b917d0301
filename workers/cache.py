"""Build-once folders for locally made models (the ``tiny`` profile).

Several worker processes may start at the same moment on one machine, so a model folder is
built in a private temporary folder under a file lock and moved into place in one rename.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

READY_MARKER = ".farm-ready"


def build_once(target: Path, builder: Callable[[Path], None]) -> Path:
    """Return ``target``, building it with ``builder`` first if it is not complete yet.

    Args:
        target: the folder the model lives in once built.
        builder: called with an empty temporary folder that it fills; it must not touch ``target``.

    Returns:
        ``target``, which then holds a complete build.
    """
    if (target / READY_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / READY_MARKER).exists():
            return target
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            builder(scratch)
            (scratch / READY_MARKER).write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)
            scratch.rename(target)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
    return target
