"""Files the farm writes: images per attempt, the final image and JSON per article, statistics.

Every file is written to a temporary name in its folder and renamed into place, so a crash
never leaves a half-written image under a name that the database points to.
"""

from __future__ import annotations

import hashlib
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

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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


def batch_dir(output_dir: Path, batch_id: str) -> Path:
    """The folder of a batch's outputs.

    Args:
        output_dir: the farm's output root.
        batch_id: the batch.

    Returns:
        ``<output_dir>/<batch_id>``.
    """
    return Path(output_dir) / batch_id


def attempt_image_path(output_dir: Path, batch_id: str, stem: str, attempt: int) -> Path:
    """Where one render attempt's image is kept.

    Returns:
        ``<output>/<batch>/attempts/<stem>.<attempt>.png``.
    """
    return batch_dir(output_dir, batch_id) / "attempts" / f"{stem}.{attempt}.png"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A scratch file beside ``path`` that replaces it in one rename when the block succeeds.

    Args:
        path: the file's final place; its folder is created when missing.

    Yields:
        The scratch path to write. On an exception it is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
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


def _atomic_write(path: Path, write) -> None:
    with atomic_path(path) as scratch, open(scratch, "wb") as stream:
        write(stream)


def save_png(image: Image.Image, path: Path) -> None:
    """Write ``image`` as PNG at ``path`` atomically.

    Args:
        image: the picture.
        path: its final place.
    """
    _atomic_write(path, lambda stream: image.save(stream, format="PNG"))


def publish_file(source: Path, target: Path) -> None:
    """Make ``target`` show ``source``'s content, atomically, without copying where possible.

    A hard link costs no copy and no second write of the image; a file system without hard
    links (or ``source`` on another one) gets a copy instead.

    Args:
        source: an existing file, already complete on disk.
        target: where it is published.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    try:
        os.link(source, scratch)
    except OSError:
        copy_file(source, target)
        return
    try:
        os.replace(scratch, target)
    finally:
        # Gone after a rename; still there when target already was this file (POSIX rename
        # of two links to one file does nothing), e.g. the same best attempt published again.
        scratch.unlink(missing_ok=True)


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically.

    Args:
        source: an existing file.
        target: where the copy goes.
    """
    with open(source, "rb") as original:
        _atomic_write(target, lambda stream: shutil.copyfileobj(original, stream))


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as pretty UTF-8 JSON at ``path`` atomically.

    Args:
        path: the file.
        data: JSON-serialisable content.
    """
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    _atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


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


def write_clip_statistics(path: Path, scores: list[float]) -> None:
    """Write ``clip_statistics.txt`` in the seed's layout.

    Args:
        path: the file.
        scores: one best score per scored article.
    """
    lines = ["CLIP Score Statistics", "====================="]
    for name, value in clip_statistics(scores).items():
        lines.append(f"{name}: {value}" if name == "Total Samples" else f"{name}: {value:.4f}")
    _atomic_write(path, lambda stream: stream.write(("\n".join(lines) + "\n").encode("utf-8")))
