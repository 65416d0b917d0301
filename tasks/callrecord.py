"""What each worker process is doing, recorded where its launcher can read it after a death.

When a process dies (the kernel's OOM killer, a segfault in a CUDA kernel), its launcher
must know two things the database cannot tell it:

* which articles were in the model call that killed it: only theirs should have the attempt
  counted, not those of the articles merely waiting beside them;
* which messages it had received but not yet claimed: their articles hold no lease, so the
  reaper cannot see them, and Redis would hand the messages out again only after the
  visibility timeout (an hour).

The process keeps both in one small file, replaced whole at each change; the page cache keeps
it through a SIGKILL of the process. The launcher names the file (:data:`RECORD_ENV`), one per
process in a folder of its own, so two launchers on one host never read each other's; a
process started otherwise (``farm run``, a benchmark) keeps its record in memory only.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

# The variable in which the launcher names a worker process's record file.
RECORD_ENV = "FARM_CALL_RECORD"


@dataclass
class ProcessRecord:
    """The record of one worker process: its last model call and its unclaimed messages."""

    node: str
    path: Path | None  # None: nothing written, as no launcher reads it
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
        if self.path is None:
            return
        record = {"node": self.node, "call": self.call, "waiting": list(self.waiting.values())}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(json.dumps(record))
        os.replace(scratch, self.path)


_current: ProcessRecord | None = None


def start(node: str, path: str | Path | None = None) -> ProcessRecord:
    """Start this process's record (a previous process's record at ``path`` is dropped).

    Args:
        node: the process's node name, kept in the record for whoever reads it.
        path: the record's file, named by the launcher; None keeps it in memory only.
    """
    global _current
    path = Path(path) if path else None
    if path is not None:
        path.unlink(missing_ok=True)
    _current = ProcessRecord(node, path)
    return _current


def received(task_id: str, article_id: int, stage: str, key: str) -> None:
    """Note a message this process received (nothing when it keeps no record)."""
    if _current is not None:
        _current.received(task_id, article_id, stage, key)


def claimed(task_id: str) -> None:
    """Note that a message's claim was tried (nothing when this process keeps no record)."""
    if _current is not None:
        _current.claimed(task_id)


def read(path: str | Path) -> tuple[list[str], list[list]]:
    """The last call's lease tokens and the unclaimed messages of the record at ``path``.

    Returns:
        (tokens, [[article id, stage, key], ...]); both empty when there is no record.
    """
    try:
        data = json.loads(Path(path).read_text())
        return list(data.get("call", [])), list(data.get("waiting", []))
    except (OSError, ValueError, AttributeError):
        return [], []
