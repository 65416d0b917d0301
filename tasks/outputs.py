"""Files the farm writes: images per attempt, the final image and JSON per article, statistics.

Every file is written to a temporary name in its folder and renamed into place, so a crash
never leaves a half-written image under a name that the database points to; in an object
store (:mod:`tasks.storage`) each file is one put of its whole content, which does the same.
A write that fails because of where it goes (no permission, a read-only or full disk, a file
where a folder should be) raises :class:`OutputNotWritable`, which says so and names the
place.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import statistics
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from db.models import DEFAULT_VIEW
from tasks import storage
from tasks.storage import ObjectURL, Place

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# The errors that come from where a file goes rather than from what is written to it.
_PLACE_ERRNOS = {
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
    errno.ENOTDIR, errno.EEXIST, errno.EISDIR,
}  # fmt: skip


class OutputNotWritable(OSError):
    """An output file or folder cannot be written there: permissions, a read-only or full disk,
    or a file where a folder should be.

    An ``OSError`` with the original ``errno`` and ``strerror``, so code that handles
    ``OSError`` (a stage retries on a full disk) keeps doing so; ``str()`` is one message
    naming the place and the reason.
    """

    def __init__(self, message: str, error: OSError, path: Path) -> None:
        super().__init__(error.errno, error.strerror, str(path))
        self.message = message

    def __str__(self) -> str:
        return self.message


def not_writable(error: OSError, path: Path, what: str = "") -> OSError:
    """The :class:`OutputNotWritable` an ``OSError`` on writing ``path`` means.

    Args:
        error: what the system raised.
        path: the file or folder being written.
        what: what it is, for the message (``export``, ``output folder``); may be empty.

    Returns:
        An :class:`OutputNotWritable`, or ``error`` itself when its cause is not the place
        (an I/O error, say) or it already is one.
    """
    if isinstance(error, OutputNotWritable) or error.errno not in _PLACE_ERRNOS:
        return error
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    code = error.errno
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        reason = "the disk is full"
    elif code in (errno.EACCES, errno.EPERM):
        reason = f"permission denied in {_existing(path)}"
    elif code == errno.EROFS:
        reason = f"{_existing(path)} is on a read-only file system"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        reason = f"{_in_the_way(path)} is a file, not a folder"
    else:
        reason = f"{_in_the_way(path)} is a folder, not a file"
    return OutputNotWritable(f"cannot write {name}: {reason}", error, path)


def writable_folder(folder: Place | str, what: str = "output folder") -> Place:
    """Create ``folder`` when missing and prove that a file can be written in it.

    The probe writes and syncs one byte, so a full disk shows here and not halfway through
    a batch's files; it is removed again. In an object store the probe is one object.

    Args:
        folder: the folder, or an object store's URL.
        what: what it is, for the message.

    Returns:
        ``folder``, as a place.

    Raises:
        OutputNotWritable: it cannot be created or written.
        StorageUnavailable: the object store cannot be written (:func:`tasks.storage.check`).
    """
    folder = storage.place(folder)
    if isinstance(folder, ObjectURL):
        return storage.check(folder)
    with _place_errors(folder, what):
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".farm-write-check.", dir=folder)
        try:
            os.write(handle, b"\0")
            os.fsync(handle)
        finally:
            os.close(handle)
            os.unlink(probe)
    return folder


def _existing(path: Path) -> Path:
    """The nearest existing folder of ``path`` and its parents (where permission is missing)."""
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
    return path.parent


def _in_the_way(path: Path) -> Path:
    """The nearest of ``path`` and its parents that exists and is not what it should be."""
    for candidate in (*reversed(path.parents), path):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return path


def safe_stem(key: str) -> str:
    """A file-name-safe, unique stem for an article key.

    Args:
        key: the article key, any text (``../../etc/passwd`` included).

    Returns:
        The key itself when it is already safe; otherwise a slug plus a short hash of the key,
        so two different keys never share a file.
    """
    if _SAFE.fullmatch(key) and not key.endswith("."):
        return key
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._-")[:80] or "article"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}"


def batch_dir(output_dir: Place | str, batch_id: str) -> Place:
    """The folder of a batch's outputs.

    Args:
        output_dir: the farm's output root: a folder or an object store's URL.
        batch_id: the batch.

    Returns:
        ``<output_dir>/<batch_id>``.
    """
    return storage.place(output_dir) / batch_id


def view_stem(stem: str, view: str) -> str:
    """The file name stem of one view of a row: the row's own stem for the front view
    (so a catalog's front images keep the names they always had), ``<stem>@<view>`` for the
    others. ``@`` never occurs in a stem (:func:`safe_stem`), so SKU ``A`` seen from the back
    and SKU ``A-back`` from the front never share a file.

    Args:
        stem: the row's stem (``Article.file_stem``).
        view: the article's view.
    """
    return stem if view == DEFAULT_VIEW else f"{stem}@{view}"


def published_image_path(output_dir: Place, batch_id: str, stem: str, view: str) -> Place:
    """Where an article's published picture lives.

    Returns:
        ``<output>/<batch>/<stem>[@view].png``.
    """
    return batch_dir(output_dir, batch_id) / f"{view_stem(stem, view)}.png"


def attempt_image_path(output_dir: Place, batch_id: str, stem: str, attempt: int) -> Place:
    """Where one render attempt's image is kept.

    Returns:
        ``<output>/<batch>/attempts/<stem>.<attempt>.png``.
    """
    return batch_dir(output_dir, batch_id) / "attempts" / f"{stem}.{attempt}.png"


@contextmanager
def atomic_path(path: Place | str) -> Iterator[Path]:
    """A scratch file beside ``path`` that replaces it in one rename when the block succeeds.

    Args:
        path: the file's final place; its folder is created when missing. For an object,
            the scratch file is a local temporary one, uploaded whole when the block succeeds.

    Yields:
        The scratch path to write. On an exception it is removed and ``path`` is untouched.

    Raises:
        OutputNotWritable: the folder or the file cannot be written there (also for such an
            error raised by the block while it writes the scratch file).
        StorageUnavailable: the object could not be written.
    """
    path = storage.place(path)
    if isinstance(path, ObjectURL):
        with _uploaded(path) as scratch:
            yield scratch
        return
    with _place_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    with _place_errors(path):
        try:
            yield Path(scratch)
            with open(scratch, "rb") as written:
                os.fsync(written.fileno())
            # mkstemp makes the file private; outputs are meant to be read by other services.
            os.chmod(scratch, 0o644)
            os.replace(scratch, path)
        except BaseException:
            Path(scratch).unlink(missing_ok=True)
            raise


@contextmanager
def _uploaded(url: ObjectURL) -> Iterator[Path]:
    """A local scratch file uploaded as the object ``url`` in one put when the block succeeds."""
    handle, scratch = tempfile.mkstemp(prefix=f".{url.name}.")
    os.close(handle)
    try:
        yield Path(scratch)
        storage.put_file(Path(scratch), url)
    finally:
        Path(scratch).unlink(missing_ok=True)


@contextmanager
def _place_errors(path: Path, what: str = "") -> Iterator[None]:
    """Raise an ``OSError`` caused by where ``path`` goes as :class:`OutputNotWritable`."""
    try:
        yield
    except OSError as error:
        converted = not_writable(error, path, what)
        if converted is error:
            raise
        raise converted from error


def _atomic_write(path: Place, write) -> None:
    if isinstance(path, ObjectURL):  # small files: made in memory, then one put
        buffer = io.BytesIO()
        write(buffer)
        storage.put_bytes(path, buffer.getvalue())
        return
    with atomic_path(path) as scratch, open(scratch, "wb") as stream:
        write(stream)


def save_png(image: Image.Image, path: Place) -> None:
    """Write ``image`` as PNG at ``path`` atomically.

    Args:
        image: the picture.
        path: its final place.
    """
    _atomic_write(storage.place(path), lambda stream: image.save(stream, format="PNG"))


def publish_file(source: Place | str, target: Place | str) -> None:
    """Make ``target`` show ``source``'s content, atomically, without copying where possible.

    A hard link costs no copy and no second write of the image; a file system without hard
    links (or ``source`` on another one) gets a copy instead, and an object store a copy
    made by the store itself.

    Args:
        source: an existing file, already complete on disk, or an object.
        target: where it is published.
    """
    source, target = storage.place(source), storage.place(target)
    if isinstance(source, ObjectURL) and isinstance(target, ObjectURL):
        storage.copy(source, target)
        return
    if isinstance(source, ObjectURL) or isinstance(target, ObjectURL):
        copy_file(source, target)
        return
    with _place_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    try:
        os.link(source, scratch)
    except OSError:
        copy_file(source, target)
        return
    try:
        with _place_errors(target):
            os.replace(scratch, target)
    finally:
        # Gone after a rename; still there when target already was this file (POSIX rename
        # of two links to one file does nothing), e.g. the same best attempt published again.
        scratch.unlink(missing_ok=True)


def copy_file(source: Place | str, target: Place | str) -> None:
    """Copy ``source`` to ``target`` atomically.

    Args:
        source: an existing file or object.
        target: where the copy goes.
    """
    with storage.open_read(storage.place(source)) as original:
        _atomic_write(storage.place(target), lambda stream: shutil.copyfileobj(original, stream))


def write_json(path: Place, data: dict) -> None:
    """Write ``data`` as pretty UTF-8 JSON at ``path`` atomically.

    Args:
        path: the file.
        data: JSON-serialisable content.
    """
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    _atomic_write(storage.place(path), lambda stream: stream.write(text.encode("utf-8")))


def clip_statistics(scores: list[float]) -> dict[str, float]:
    """The seed's CLIP statistics over a batch.

    Args:
        scores: one best score per article.

    Returns:
        Total Samples, Mean, Median, Std Dev, Min and Max (Std Dev 0 for one sample).
    """
    if not scores:
        return {"Total Samples": 0}
    return {
        "Total Samples": len(scores),
        "Mean": statistics.fmean(scores),
        "Median": statistics.median(scores),
        "Std Dev": statistics.pstdev(scores),
        "Min": min(scores),
        "Max": max(scores),
    }


def write_clip_statistics(path: Place, scores: list[float]) -> None:
    """Write ``clip_statistics.txt`` in the seed's layout.

    Args:
        path: the file.
        scores: one best score per scored article.
    """
    lines = ["CLIP Score Statistics", "====================="]
    for name, value in clip_statistics(scores).items():
        lines.append(f"{name}: {value}" if name == "Total Samples" else f"{name}: {value:.4f}")
    text = "\n".join(lines) + "\n"
    _atomic_write(storage.place(path), lambda stream: stream.write(text.encode("utf-8")))
