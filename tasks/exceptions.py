"""Error kinds of the farm. The kind decides what happens to an article after an error."""

from __future__ import annotations

# The exit code of a worker process whose model call hung (its watchdog stopped it).
HUNG_EXIT_CODE = 75


class FarmError(Exception):
    """Base of the farm's own errors."""


class TransientStageError(FarmError):
    """A passing fault (out of memory, a full disk, a lost connection): retry the stage."""


class InvalidArticle(FarmError):
    """The article itself cannot go through this stage: fail it now, retrying cannot help."""


class RuntimeNotLoaded(FarmError):
    """A stage arrived at a worker that did not load the model it needs (a routing mistake)."""


class ModelsMissing(FarmError):
    """A model the worker needs is not in the cache: the worker stops before taking work."""


class LockFileInvalid(FarmError):
    """The models' lock file cannot be read or is not one: nothing is loaded unpinned."""

    exit_code = 1


class UserError(FarmError):
    """Something a user asked for cannot be done as asked; the CLI prints it and exits."""

    exit_code = 2


class SelectionError(UserError):
    """A command named a batch or articles that do not exist, or a requeue a stage they cannot
    start at."""

    @classmethod
    def unknown_batch(cls, batch: str) -> SelectionError:
        """The error for a batch that the database does not hold, saying where names are."""
        return cls(f"no batch {batch!r}; `farm status` lists the batches")


class ReviewRefused(UserError):
    """A review studio action cannot be done: the article is busy, the user may not, the
    input is wrong, or the broker is away (nothing was changed)."""


class ReviewForbidden(ReviewRefused):
    """The user's role does not allow the action (a reviewer asking for a bulk action)."""


class StorageUnavailable(FarmError, OSError):
    """The object store of ``FARM_OUTPUT_DIR`` refused or could not be reached: an unknown
    scheme, no such bucket, bad credentials, the endpoint away, a failed put.

    An ``OSError``, so a stage retries it as it retries a full disk; the CLI exits with the
    code of an output that cannot be written.
    """

    exit_code = 6

    def __init__(self, message: str, where: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return self.message
