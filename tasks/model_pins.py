"""The profile a process loads, from its settings: revisions per repo and the lock file.

``farm run``, ``farm worker``, ``farm doctor`` and ``farm models ...`` all build it here, so
that each of them checks and loads the same commits.
"""

from __future__ import annotations

from dataclasses import replace

from tasks.exceptions import LockFileInvalid
from tasks.settings import Settings
from workers.lock import pin, read_lock
from workers.profiles import Profile, resolve_profile


def settings_profile(settings: Settings, use_lock: bool = True) -> Profile:
    """The profile of ``settings`` with ``FARM_MODEL_REVISIONS`` and the lock file applied.

    Args:
        settings: the farm's settings (profile, overrides, revisions, lock file).
        use_lock: False leaves the lock file unread (``farm models fetch --update``).

    Returns:
        The profile; every repo the lock file names is pinned to its locked commit.

    Raises:
        LockFileInvalid: the lock file exists but cannot be used.
    """
    overrides = settings.profile_overrides()
    profile = resolve_profile(settings.profile, settings.model_cache, **overrides)
    profile = replace(profile, revisions=dict(settings.model_revisions))
    if not use_lock:
        return profile
    path = settings.lock_file()
    try:
        locked = read_lock(path)
    except ValueError as error:
        raise LockFileInvalid(str(error)) from None
    return profile if locked is None else pin(profile, locked, path)
