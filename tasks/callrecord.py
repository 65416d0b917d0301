"""The last model call of each worker process, recorded where its launcher can read it.

When a process dies (the kernel's OOM killer, a segfault in a CUDA kernel), its launcher
must tell the article that killed it from the ones that merely waited beside it: only the
first should have the attempt counted. Before each model call the process overwrites one
small file with the lease tokens of the call's inputs; the page cache keeps it through a
SIGKILL of the process.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def record_path(node: str) -> Path:
    """Where the process with node name ``node`` records its model calls."""
    name = hashlib.sha1(node.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "fashion-farm-calls" / f"{name}.json"


def write(node: str, tokens: list) -> None:
    """Record the lease tokens of the call about to run (replacing the previous record)."""
    path = record_path(node)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps([token for token in tokens if token]))
    os.replace(scratch, path)


def read(node: str) -> list[str]:
    """The tokens of the last call recorded for ``node``; empty when there is no record."""
    try:
        return list(json.loads(record_path(node).read_text()))
    except (OSError, ValueError):
        return []


def clear(node: str) -> None:
    """Forget the record (a process starting afresh)."""
    record_path(node).unlink(missing_ok=True)
