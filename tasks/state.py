"""What one worker process holds for its whole life: its database engine, its models, its
model executor, the leases its messages hold and the images it has just written."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from db.engine import make_engine
from tasks.exceptions import RuntimeNotLoaded
from tasks.handoff import RecentImages

if TYPE_CHECKING:
    from workers.executor import ModelExecutor
    from workers.loader import Runtimes

_runtimes: Runtimes | None = None
_executor: ModelExecutor | None = None


@lru_cache(maxsize=4)
def engine(database_url: str) -> Engine:
    """The process's engine for a database, created on first use."""
    return make_engine(database_url)


@lru_cache(maxsize=1)
def recent_images() -> RecentImages:
    """The images this process has just written, for its score stage (:mod:`tasks.handoff`)."""
    return RecentImages()


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


@lru_cache(maxsize=1)
def held_leases() -> HeldLeases:
    """This process's :class:`HeldLeases`."""
    return HeldLeases()


def install_runtimes(runtimes: Runtimes, executor: ModelExecutor) -> None:
    """Keep the loaded models of this process and the executor that calls them.

    Args:
        runtimes: models loaded by :func:`workers.loader.load_runtimes`.
        executor: the process's model executor.
    """
    global _runtimes, _executor
    _runtimes, _executor = runtimes, executor


def drop_runtimes() -> None:
    """Stop the executor and forget the models (freed once nothing else holds them)."""
    global _runtimes, _executor
    if _executor is not None:
        _executor.stop()
    _runtimes = _executor = None


def has_runtimes() -> bool:
    """Whether this process has loaded its models already."""
    return _runtimes is not None


def runtime(stage: str):
    """The loaded model runtime a stage needs; :class:`RuntimeNotLoaded` when there is none."""
    loaded = getattr(_runtimes, stage, None) if _runtimes is not None else None
    if loaded is None:
        raise RuntimeNotLoaded(f"this worker has no model loaded for the {stage} stage")
    return loaded


def executor() -> ModelExecutor:
    """The process's model executor."""
    if _executor is None:
        raise RuntimeNotLoaded("this worker has loaded no models")
    return _executor


def profile():
    """The :class:`workers.profiles.Profile` of the installed runtimes."""
    if _runtimes is None:
        raise RuntimeNotLoaded("this worker has loaded no models")
    return _runtimes.profile
