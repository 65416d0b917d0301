"""The lock file: the commit of every hub repo the farm loads, the same on every machine.

``farm models fetch`` writes it once the models are in the cache; copied to every machine of
a farm, it makes them all load the same weights, whatever a branch of the hub points at by
then. Workers load exactly the commits it names and refuse to start when one is not in the
cache. It is JSON::

    {
      "version": 1,
      "repos": {
        "black-forest-labs/FLUX.1-schnell": {
          "revision": "main",
          "commit": "<40 hex digits>",
          "files": {"model_index.json": 536, ...}
        }
      }
    }

``revision`` (what was asked for when it was resolved) and ``files`` (name → bytes) are for
people; ``commit`` is what pins.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from workers.hub import COMMIT_ID
from workers.profiles import Profile

LOCK_VERSION = 1


@dataclass(frozen=True)
class LockedRepo:
    """One repo's entry in the lock file.

    Attributes:
        commit: the commit the farm loads (40 hex digits).
        revision: the branch, tag or commit that was resolved to it.
        files: file name → size in bytes of the files the farm loads of it.
    """

    commit: str
    revision: str | None = None
    files: Mapping[str, int] = field(default_factory=dict)


def _invalid(path: Path, why: str) -> ValueError:
    return ValueError(
        f"the lock file {path} is unusable: {why}. Copy a good one there, or delete it and run "
        "farm models fetch to write it again"
    )


def read_lock(path: Path) -> dict[str, LockedRepo] | None:
    """Read a lock file.

    Args:
        path: the lock file.

    Returns:
        Repo id → its entry; ``None`` when there is no file.

    Raises:
        ValueError: the file cannot be read or is not a lock file; the message names it.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _invalid(path, error.strerror or str(error)) from None
    except ValueError as error:  # JSON and UTF-8 errors alike
        raise _invalid(path, f"not JSON ({error})") from None
    if not isinstance(data, dict) or data.get("version") != LOCK_VERSION:
        raise _invalid(path, f'not a version {LOCK_VERSION} lock file (no "version": 1)')
    repos = data.get("repos")
    if not isinstance(repos, dict):
        raise _invalid(path, 'no "repos" object')
    return {repo_id: _entry(path, repo_id, entry) for repo_id, entry in repos.items()}


def _entry(path: Path, repo_id: str, entry: object) -> LockedRepo:
    commit = entry.get("commit") if isinstance(entry, dict) else None
    if not isinstance(commit, str) or not COMMIT_ID.fullmatch(commit):
        raise _invalid(path, f"{repo_id} has no commit of 40 hex digits")
    files = entry.get("files") or {}
    if not isinstance(files, dict):
        raise _invalid(path, f'the "files" of {repo_id} are not an object')
    return LockedRepo(commit, entry.get("revision"), dict(files))


def write_lock(path: Path, repos: Mapping[str, LockedRepo]) -> None:
    """Write a lock file atomically: a reader sees the old file or the new one, never half.

    Args:
        path: the lock file; its folder is created when missing.
        repos: repo id → its entry.

    Raises:
        OSError: the file cannot be written there.
    """
    path = Path(path)
    data = {
        "version": LOCK_VERSION,
        "repos": {
            repo_id: {"revision": entry.revision, "commit": entry.commit,
                      "files": dict(sorted(entry.files.items()))}
            for repo_id, entry in sorted(repos.items())
        },
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(data, indent=2) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(scratch, 0o644)  # mkstemp makes it private; every worker's user reads it
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def pin(profile: Profile, repos: Mapping[str, LockedRepo], path: Path) -> Profile:
    """The profile with every repo the lock names pinned to its locked commit.

    Args:
        profile: the profile.
        repos: the lock file's entries.
        path: the lock file (named in messages).

    Returns:
        A copy whose :meth:`~workers.profiles.Profile.revision_for` gives the locked commits.
    """
    locked = {repo_id: entry.commit for repo_id, entry in repos.items()}
    return replace(profile, locked=locked, lock_file=str(path))
