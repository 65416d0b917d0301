"""The worker context: what one worker process holds for its whole life, built as it starts.

Its settings, its database engine, its models and the executor that calls them, the leases
its messages hold, the messages it has received and not yet claimed, the next stages its
messages sent and have yet to record, and the images it has just written.
:func:`tasks.boot.start_process` builds it before the worker takes work and installs it; the
stage tasks, the reaper and the watchdog read it with :func:`current`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from tasks.exceptions import RuntimeNotLoaded
from tasks.handoff import RecentImages
from tasks.settings import Settings

logger = logging.getLogger("farm.worker")

# The variable in which the launcher names a worker process's arrivals file.
ARRIVALS_FILE_ENV = "FARM_ARRIVALS_FILE"

if TYPE_CHECKING:
    from workers.executor import ModelExecutor
    from workers.loader import Runtimes
    from workers.profiles import Profile


class HeldLeases:
    """The lease tokens this process's messages hold right now (the renewer extends them)."""

    def __init__(self) -> None:
        self._tokens: set[str] = set()
        self._lock = threading.Lock()

    def add(self, token: str) -> None:
        """Start renewing ``token``."""
        with self._lock:
            self._tokens.add(token)

    def discard(self, token: str) -> None:
        """Stop renewing ``token``."""
        with self._lock:
            self._tokens.discard(token)

    def tokens(self) -> list[str]:
        """The tokens held now."""
        with self._lock:
            return list(self._tokens)


class Arrivals:
    """The stage messages this process has received and not yet tried to claim.

    A model call waits for the claims of the messages received before it
    (:class:`tasks.boot.AttemptCounter`): a call that kills its process then leaves each of
    them under a lease, which the launcher ends and the reaper sends again. A message
    received during the call that killed it, before its claim, holds no lease: its article is
    kept in a file the launcher names (:data:`ARRIVALS_FILE_ENV`), replaced whole at each
    change (the page cache keeps it through a SIGKILL), and the launcher marks it unsent for
    the reaper (:func:`read_arrivals`, :func:`db.sends.unmark_unclaimed`). Without a
    file (``farm run``, a benchmark) nothing is written.

    Args:
        path: the file, or None.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self._waiting: dict[str, tuple[int, str]] = {}  # task id → (article id, stage)
        self._late: set[str] = set()  # waited for once in vain: not waited for again
        self._changed = threading.Condition()
        self._path = Path(path) if path else None
        if self._path is not None:
            self._path.unlink(missing_ok=True)  # a previous process's, dealt with already

    def received(self, task_id: str, article_id: int = 0, stage: str = "") -> None:
        """Note a message the worker received (its consumer thread, before a thread runs it)."""
        with self._changed:
            self._waiting[task_id] = (article_id, stage)
            self._write()

    def claimed(self, task_id: str) -> None:
        """Note that a message's claim was tried, whatever came of it."""
        with self._changed:
            self._late.discard(task_id)
            if self._waiting.pop(task_id, None) is not None:
                self._write()
            self._changed.notify_all()

    def wait(self, timeout: float) -> list[str]:
        """Wait until the messages received so far were claimed, at most ``timeout`` seconds.

        Returns:
            The messages still unclaimed after it; no longer waited for (a claim is made at
            once, so they will not hold a call back again), still kept in the file.
        """
        with self._changed:
            before = set(self._waiting) - self._late
            self._changed.wait_for(lambda: not before & self._waiting.keys(), timeout)
            late = before & self._waiting.keys()
            self._late |= late
            return sorted(late)

    def _write(self) -> None:
        if self._path is None:
            return
        scratch = self._path.with_suffix(f".{os.getpid()}.tmp")
        try:
            scratch.write_text(json.dumps(sorted(self._waiting.values())))
            os.replace(scratch, self._path)
        except OSError as error:  # a full disk: such messages wait for the visibility timeout
            logger.warning("arrivals file %s not written: %s", self._path, error)


def read_arrivals(path: str | Path) -> list[tuple[int, str]]:
    """The (article id, stage) pairs a dead process had received and not claimed."""
    try:
        return [(int(article), str(stage)) for article, stage in json.loads(Path(path).read_text())]
    except (OSError, ValueError, TypeError):
        return []


@dataclass
class WorkerContext:
    """One worker process's settings, database, models and bookkeeping (see the module)."""

    settings: Settings
    engine: Engine
    runtimes: Runtimes
    executor: ModelExecutor
    leases: HeldLeases = field(default_factory=HeldLeases)
    arrivals: Arrivals = field(default_factory=Arrivals)
    images: RecentImages = field(default_factory=RecentImages)
    # Per worker thread: the (article id, status) whose next stage Celery sends after the
    # message's stage stored it, recorded on success. Per thread, not per task id: two
    # copies of one message may run at once, in two threads.
    _next: threading.local = field(default_factory=threading.local, repr=False)

    def note_next_sent(self, article_id: int, status: str) -> None:
        """Note, in this thread, the article whose next stage Celery is about to send."""
        self._next.value = (article_id, status)

    def take_next_sent(self) -> tuple[int, str] | None:
        """The article noted in this thread, if any; forgotten as it is taken."""
        noted, self._next.value = getattr(self._next, "value", None), None
        return noted

    @property
    def profile(self) -> Profile:
        """The :class:`workers.profiles.Profile` of the loaded models."""
        return self.runtimes.profile

    def runtime(self, stage: str):
        """The loaded model runtime a stage needs; :class:`RuntimeNotLoaded` when there is none."""
        loaded = getattr(self.runtimes, stage, None)
        if loaded is None:
            raise RuntimeNotLoaded(f"this worker has no model loaded for the {stage} stage")
        return loaded


_current: WorkerContext | None = None


def install(context: WorkerContext) -> None:
    """Make ``context`` this process's, before the worker takes work."""
    global _current
    _current = context


def current() -> WorkerContext:
    """This process's context; :class:`RuntimeNotLoaded` before the worker started."""
    if _current is None:
        raise RuntimeNotLoaded("this worker has loaded no models")
    return _current


def installed() -> bool:
    """Whether this process has a context (its models loaded) now."""
    return _current is not None


def drop() -> None:
    """Stop the context's executor, forget its models and close its database connections."""
    global _current
    context, _current = _current, None
    if context is not None:
        context.executor.stop()
        context.engine.dispose()
