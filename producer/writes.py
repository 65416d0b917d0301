"""Where an export, report or statistics file goes, and how a failed write reads.

A file is written whole or not at all (a scratch file renamed into place, see
:func:`tasks.outputs.atomic_path`), and only over a regular file: a device (``/dev/full``), a
FIFO or a symbolic link at the path is refused, never replaced (:func:`check_target`).
``--out -`` is standard output, which gets the file once it is complete (:func:`write_out`).
An ``OSError`` while writing becomes an :class:`ExportError` naming the file and the reason.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from tasks import storage
from tasks.storage import ObjectURL, Place

# ``--out -``: standard output instead of a file.
STDOUT = "-"

_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    # mkdir of a folder whose name a file already has, or of one below such a file.
    errno.EEXIST: "a file stands where a folder should be",
    errno.ENOTDIR: "a file stands where a folder should be",
    errno.EISDIR: "a folder stands where the file should be",
    errno.EPIPE: "the reading end was closed",
}

# What stands at an output path that is not a regular file, by its file type.
_NOT_REGULAR = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


class ExportError(Exception):
    """An export, report or statistics file could not be written; nothing was left behind.

    Attributes:
        path: the file that was to be written.
    """

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


@contextmanager
def writing(what: str, path: Path) -> Iterator[None]:
    """Turn an OSError raised while writing ``path`` into an :class:`ExportError`.

    Args:
        what: the file's kind for the message, such as ``the export``.
        path: the file being written.

    Raises:
        ExportError: ``cannot write <what> to <path>: <reason>``, from the OSError.
    """
    try:
        yield
    except OSError as error:
        reason = _REASONS.get(error.errno) or error.strerror or str(error) or type(error).__name__
        message = f"cannot write {what} to {_shown(path)}: {reason}"
        raise ExportError(message, storage.place(path)) from error


def _shown(path: Place | str) -> str:
    return "standard output" if path == STDOUT else str(path)


def check_target(path: Place | str, what: str) -> None:
    """Refuse to write over anything at ``path`` but a regular file.

    A file is written by renaming a finished scratch file onto its path, which would replace
    a device (``/dev/full``), a FIFO or a symbolic link (leaving its target alone) with a
    regular file. Only a missing path or a regular file may be written; an object in a store
    always may.

    Args:
        path: the file to be written.
        what: the file's kind for the message, such as ``the export``.

    Raises:
        ExportError: ``cannot write <what> to <path>: it is a <kind>, not a regular file``;
            a folder there reads as :func:`writing` words it.
    """
    place = storage.place(path)
    if isinstance(place, ObjectURL):
        return
    try:
        mode = os.lstat(place).st_mode
    except OSError:  # nothing there, or a folder on the way that the write itself reports
        return
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        reason = _REASONS[errno.EISDIR]
    else:
        kind = next((kind for test, kind in _NOT_REGULAR if test(mode)), "a special file")
        reason = (
            f"it is {kind}, not a regular file; give the path of a regular file "
            f"(or {STDOUT} for standard output)"
        )
    raise ExportError(f"cannot write {what} to {place}: {reason}", place)


def write_out(scratch: Path, stream: BinaryIO, what: str) -> None:
    """Copy a finished scratch file to ``stream`` (standard output), then flush it.

    Args:
        scratch: the complete file; nothing reaches ``stream`` before it is.
        stream: a binary stream.
        what: the file's kind for the message.

    Raises:
        ExportError: the stream could not be written (``cannot write <what> to standard
            output: <reason>``); after a closed pipe the stream is pointed at the null device,
            so the interpreter's own flush at exit stays quiet.
    """
    with writing(what, STDOUT):
        try:
            with open(scratch, "rb") as source:
                shutil.copyfileobj(source, stream)
            stream.flush()
        except BrokenPipeError:
            _quiet(stream)
            raise


def _quiet(stream: BinaryIO) -> None:
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):  # not a real file (a test's buffer)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)
