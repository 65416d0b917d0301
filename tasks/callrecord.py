"""What each worker process is doing, recorded where its launcher can read it after a death.

When a process dies (the kernel's OOM killer, a segfault in a CUDA kernel), its launcher
must know two things the database cannot tell it:

* which articles were in the model call that killed it: only theirs should have the attempt
  counted, not those of the articles merely waiting beside them;
* which messages it had received but not yet claimed: their articles hold no lease, so the
  reaper cannot see them, and Redis would hand the messages out again only after the
  visibility timeout (an hour).

The process keeps both in one small file, replaced whole at each change; the page cache keeps
it through a SIGKILL of the process.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path


def record_path(node: str) -> Path:
    """Where the process with node name ``node`` keeps its record."""
    name = hashlib.sha1(node.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "fashion-farm-calls" / f"{name}.json"


@dataclass
class ProcessRecord:
    """The record of one worker process: its last model call and its unclaimed messages."""

    node: str
    call: list[str] = field(default_factory=list)  # lease tokens of the last model call
    waiting: dict[str, list] = field(default_factory=dict)  # task id → [article, stage, key]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def calling(self, tokens: list) -> None:
        """Record the lease tokens of the model call about to run."""
        with self._lock:
            self.call = [token for token in tokens if token]
            self._write()

    def received(self, task_id: str, article_id: int, stage: str, key: str) -> None:
        """Record a message received and not claimed yet."""
        with self._lock:
            self.waiting[task_id] = [article_id, stage, key]
            self._write()

    def claimed(self, task_id: str) -> None:
        """Forget a message once its claim was tried (its lease, if any, now speaks for it)."""
        with self._lock:
            if self.waiting.pop(task_id, None) is not None:
                self._write()

    def _write(self) -> None:
        path = record_path(self.node)
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(json.dumps({"call": self.call, "waiting": list(self.waiting.values())}))
        os.replace(scratch, path)


_current: ProcessRecord | None = None


def start(node: str) -> ProcessRecord:
    """Start this process's record under ``node`` (a previous process's record is dropped)."""
    global _current
    record_path(node).unlink(missing_ok=True)
    _current = ProcessRecord(node)
    return _current


def received(task_id: str, article_id: int, stage: str, key: str) -> None:
    """Note a message this process received (nothing when it keeps no record)."""
    if _current is not None:
        _current.received(task_id, article_id, stage, key)


def claimed(task_id: str) -> None:
    """Note that a message's claim was tried (nothing when this process keeps no record)."""
    if _current is not None:
        _current.claimed(task_id)


def read(node: str) -> tuple[list[str], list[list]]:
    """The last call's lease tokens and the unclaimed messages recorded for ``node``.

    Returns:
        (tokens, [[article id, stage, key], ...]); both empty when there is no record.
    """
    try:
        data = json.loads(record_path(node).read_text())
        return list(data.get("call", [])), list(data.get("waiting", []))
    except (OSError, ValueError, AttributeError):
        return [], []
