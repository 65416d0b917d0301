"""What the command line checks before it works, and how it reports what a user can fix.

Every error a user can cause ends the command with one message (what, where, what to do) on
stderr and a documented exit code, never a traceback. The exit codes of the ``farm`` command:

====  ==========================================================================
 0    done
 1    a model (or the commit the lock file pins) is missing, the lock file is
      unusable, a worker cannot serve (no CUDA device, its models fail to
      load), or articles of ``farm run`` failed
 2    bad input or usage: catalog problems, options (click's own code for usage),
      a ``FARM_*`` setting of the wrong form
 3    the broker cannot be reached
 4    a model download failed
 5    the database cannot be used: an unsupported or malformed URL, no database
      there, the server unreachable, a file or folder that cannot be written, a
      schema newer than this version
 6    an output folder or file cannot be written: no permission, a read-only or
      full disk, a file where a folder should be, a folder where no file can be
      made (``/proc``), a device, FIFO or symbolic link at an ``--out`` path,
      standard output closed or full; the object store of ``FARM_OUTPUT_DIR``
      cannot be used (unknown scheme, no bucket, bad credentials, endpoint
      unreachable)
 75   (a worker process) a model call hung; ``farm worker`` starts it again
 130  interrupted (Ctrl-C)
====  ==========================================================================

Nothing here imports click: :func:`reported` works around any block.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker

from db.engine import ensure_schema, open_database, schema_revision, session_factory
from db.exceptions import DatabaseError
from db.urls import describe
from producer.catalog import CatalogError
from producer.submit import BrokerUnavailable
from producer.writes import ExportError, check_target
from tasks import outputs, storage
from tasks.exceptions import FarmError, StorageUnavailable
from tasks.outputs import OutputNotWritable
from tasks.settings import Settings

EXIT_MODEL_MISSING = 1
EXIT_USAGE = 2
EXIT_BROKER = 3
EXIT_FETCH_FAILED = 4
EXIT_DATABASE = 5
EXIT_OUTPUT = 6

# Errors of other layers, which know nothing of exit codes. The farm's own errors may say
# theirs in an ``exit_code`` attribute instead (tasks.launcher.DeviceUnavailable).
EXIT_CODES: dict[type[BaseException], int] = {
    CatalogError: EXIT_USAGE,
    BrokerUnavailable: EXIT_BROKER,
    DatabaseError: EXIT_DATABASE,
    OutputNotWritable: EXIT_OUTPUT,
    ExportError: EXIT_OUTPUT,
}

# soft_wrap: a message stays on one line however narrow the terminal (scripts read it).
console = Console(stderr=True, soft_wrap=True)


def database(settings: Settings, create: bool = False) -> sessionmaker[Session]:
    """Open the farm's database, check it and bring its schema to the latest revision.

    Commands that write a batch (``submit``, ``run``) pass ``create=True``: a missing SQLite
    file is created with its folder. The others pass False: a missing database is an error
    and nothing is created; an existing one of an older schema is migrated in place.

    Args:
        settings: the farm's settings (``database_url``).
        create: whether a missing SQLite database may be created.

    Returns:
        Sessions bound to the database.

    Raises:
        db.exceptions.DatabaseError: a subclass saying why the database cannot be used.
    """
    engine = open_database(settings.database_url, create=create)
    try:
        ensure_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return session_factory(engine)


def upgrade_database(settings: Settings) -> tuple[str, str | None, str | None]:
    """Bring the farm's database to the latest schema revision (``farm db upgrade``).

    A missing SQLite file is created with its folder, as ``submit`` does; several processes
    may do this at once (one migrates, the others find it done).

    Args:
        settings: the farm's settings (``database_url``).

    Returns:
        The database as messages name it, and its revision before and after (None: no schema).

    Raises:
        db.exceptions.DatabaseError: a subclass saying why the database cannot be used.
    """
    engine = open_database(settings.database_url, create=True)
    try:
        before = schema_revision(engine)
        ensure_schema(engine)
        return describe(engine.url), before, schema_revision(engine)
    finally:
        engine.dispose()


def writable_folder(path: Path | str, what: str = "output folder") -> storage.Place:
    """Create ``path`` when missing and make sure a file can be written in it.

    Args:
        path: the folder (``--output-dir``, or the folder of an ``--out`` file), or an
            object store's URL, where a probe object is written and deleted.
        what: what it is, named in the message.

    Returns:
        ``path``, as a place (:func:`tasks.storage.place`).

    Raises:
        tasks.outputs.OutputNotWritable: no permission, a read-only or full disk, a file
            where a folder should be, or a folder where no file can be made (``/proc``).
        tasks.exceptions.StorageUnavailable: the object store cannot be written.
    """
    folder = storage.place(path)
    try:
        return outputs.writable_folder(folder, what)
    except (OutputNotWritable, StorageUnavailable):
        raise
    except OSError as error:  # /proc: a folder where no file can be made (ENOENT), and such
        reason = error.strerror or type(error).__name__
        message = f"cannot write {what} {folder}: no file can be made there ({reason})"
        raise OutputNotWritable(message, error, folder) from error


def output_file(path: Path | str, what: str) -> storage.Place:
    """Check an ``--out`` file before anything is written: what stands there, and its folder.

    Args:
        path: the file (or an object store's URL).
        what: what it is, such as ``export``; the message says ``the <what>`` and
            ``<what> folder``.

    Returns:
        ``path``, as a place.

    Raises:
        producer.writes.ExportError: something other than a regular file stands at ``path``
            (a device, a FIFO, a symbolic link, a folder); it is left as it is.
        tasks.outputs.OutputNotWritable: the folder cannot be created or written.
        tasks.exceptions.StorageUnavailable: the object store cannot be written.
    """
    place = storage.place(path)
    check_target(place, f"the {what}")
    writable_folder(place.parent, f"{what} folder")
    return place


def output_store(settings: Settings) -> None:
    """Check at start that an object store named by ``FARM_OUTPUT_DIR`` can be written.

    A local folder is left alone here: the commands that write into it check it
    (:func:`writable_folder`) or create it as they write.

    Raises:
        tasks.exceptions.StorageUnavailable: the store cannot be used (exit code 6).
    """
    if storage.is_url(settings.output_dir):
        storage.check(storage.place(settings.output_dir))


def exit_code_of(error: BaseException) -> int | None:
    """The exit code for an error a user can fix, or None for any other (a bug).

    Args:
        error: the exception.

    Returns:
        Its exit code: from :data:`EXIT_CODES` by type, or the ``exit_code`` of one of the
        farm's own errors; None when it is neither.
    """
    for kind, code in EXIT_CODES.items():
        if isinstance(error, kind):
            return code
    code = getattr(error, "exit_code", None)
    if isinstance(error, FarmError) and isinstance(code, int):
        return code
    return None


def settings_problem(error: ValidationError) -> str:
    """One line naming each ``FARM_*`` variable (or flag) whose value is wrong, and why.

    Args:
        error: what reading :class:`tasks.settings.Settings` raised.

    Returns:
        The message.
    """
    problems = []
    for item in error.errors():
        name = "FARM_" + "_".join(str(part) for part in item["loc"][:1]).upper()
        problems.append(f"{name}: {item['msg'].removeprefix('Value error, ')}")
    return "bad setting: " + "; ".join(problems)


def fail(message: object, code: int) -> None:
    """Print ``message`` in red on stderr, as it is (no markup), and exit with ``code``.

    Args:
        message: the message, or an exception whose ``str()`` is one.
        code: the exit code.
    """
    console.print(str(message), style="red", markup=False, highlight=False)
    sys.exit(code)


@contextmanager
def reported() -> Iterator[None]:
    """Turn an error a user can fix, raised in the block, into its message and exit code.

    Any other exception goes on as it is. Usable as a decorator too (``@reported()``).
    """
    try:
        yield
    except Exception as error:
        code = exit_code_of(error)
        if code is None:
            raise
        fail(error, code)
