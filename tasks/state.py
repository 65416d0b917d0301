"""What one worker process holds for its whole life: its database sessions, its models and
the images it has just written."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, session_factory
from tasks.exceptions import RuntimeNotLoaded
from tasks.handoff import RecentImages

if TYPE_CHECKING:
    from workers.loader import Runtimes

_runtimes: Runtimes | None = None


@lru_cache(maxsize=4)
def sessions(database_url: str) -> sessionmaker[Session]:
    """The process's session factory for a database, created on first use.

    Args:
        database_url: the farm's database URL.

    Returns:
        A sessionmaker bound to one engine per URL and process.
    """
    return session_factory(make_engine(database_url))


@lru_cache(maxsize=1)
def recent_images() -> RecentImages:
    """The images this process has just written, for its score stage (:mod:`tasks.handoff`).

    Returns:
        One :class:`RecentImages` per process, created on first use.
    """
    return RecentImages()


def install_runtimes(runtimes: Runtimes) -> None:
    """Keep the loaded models of this process for the stage tasks.

    Args:
        runtimes: models loaded by :func:`workers.loader.load_runtimes`.
    """
    global _runtimes
    _runtimes = runtimes


def drop_runtimes() -> None:
    """Forget this process's models (they are freed once nothing else holds them)."""
    global _runtimes
    _runtimes = None


def has_runtimes() -> bool:
    """Whether this process has loaded its models already."""
    return _runtimes is not None


def runtime(stage: str):
    """The loaded model runtime a stage needs.

    Args:
        stage: ``translate``, ``extract``, ``render`` or ``score``.

    Returns:
        The runtime object. Raises :class:`RuntimeNotLoaded` when this process has none.
    """
    loaded = getattr(_runtimes, stage, None) if _runtimes is not None else None
    if loaded is None:
        raise RuntimeNotLoaded(f"this worker has no model loaded for the {stage} stage")
    return loaded


def profile():
    """The model profile this process loaded.

    Returns:
        The :class:`workers.profiles.Profile` of the installed runtimes.
    """
    if _runtimes is None:
        raise RuntimeNotLoaded("this worker has loaded no models")
    return _runtimes.profile
