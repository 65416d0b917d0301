"""The files the studio hands out: a render's PNG, its JPEG thumbnail, the approved archive.

Thumbnails are made once and kept under ``<output>/.thumbs``, named after the source file's
path, size and modification time, so a picture written again gets a new thumbnail and a
database started afresh over the same output folder never shows a stale one. In an object
store (:mod:`tasks.storage`) pictures and thumbnails are objects, handed out from memory.

Only regular files that resolve inside the output folder are handed out (or objects under
the output URL when ``FARM_OUTPUT_DIR`` names a store): a picture replaced by a symlink,
or a stored path that leads elsewhere, is missing, not a way to read any file the studio's
user may read.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from db.models import Article, Batch, Render, ReviewStatus
from producer.export import export_rows, write_export
from producer.review.auth import data
from producer.review.web import in_session, path_id
from tasks import storage
from tasks.outputs import atomic_path, attempt_image_path, batch_dir, view_stem
from tasks.storage import ObjectURL, Place

THUMB_PX = 256
THUMB_DIR = ".thumbs"
JPEG_QUALITY = 85
# Renders do not change once written; a browser may keep them while the page is open.
IMAGE_CACHE = "private, max-age=3600"
CSV_NAME = "approved.csv"
IMAGE_FOLDER = "images"


def existing(candidates: tuple[str | Place | None, ...], root: Path | str) -> Place | None:
    """The first of ``candidates`` that is a readable file or object inside ``root``, else None.

    An unreadable folder or store counts as missing, and so does anything :func:`confined`
    refuses.

    Args:
        candidates: paths or URLs, the likeliest first; None and empty ones are skipped.
        root: the output folder or URL everything handed out must lie in.

    Returns:
        The place to read: for a file, its resolved path (no link left to swap meanwhile).
    """
    for candidate in candidates:
        if candidate:
            found = confined(storage.place(candidate), root)
            if found is not None:
                return found
    return None


def confined(where: Place, root: Path | str | Place) -> Place | None:
    """``where`` if it is a regular file inside ``root`` once every link is followed.

    Args:
        where: a file or an object.
        root: the output folder, or the output URL of an object store.

    Returns:
        The file's resolved path, or the object's URL; None for a link leading outside
        ``root``, a path outside it, anything but a regular file, a local path when the
        output is a store (or an object when it is a folder), or something unreadable.
    """
    top = storage.place(root)
    if isinstance(top, ObjectURL):
        if not isinstance(where, ObjectURL) or where.scheme != top.scheme:
            return None
        if not (where.key == top.key or where.key.is_relative_to(top.key)):
            return None
        return where if storage.is_file(where) else None
    if not isinstance(where, Path):
        return None
    try:
        real = where.resolve(strict=True)
        base = top.resolve(strict=True)
        facts = real.stat()
    except (OSError, RuntimeError):  # missing, unreadable, or a loop of links
        return None
    if not real.is_relative_to(base) or not stat.S_ISREG(facts.st_mode):
        return None
    return real


def render_file(session: Session, render_id: int, output_dir: Path | str) -> Place | None:
    """Where a render's PNG lies: its stored path, else its place in the output layout.

    Args:
        session: any session.
        render_id: the render.
        output_dir: the farm's output root.

    Returns:
        The file, or None when there is no such render or its image is gone.
    """
    row = session.execute(
        select(Render.image_path, Render.attempt, Article.batch_id, Article.file_stem, Article.view)
        .join(Article, Render.article_id == Article.id)
        .where(Render.id == render_id)
    ).first()
    if row is None:
        return None
    stem = view_stem(row.file_stem, row.view)
    laid_out = attempt_image_path(output_dir, row.batch_id, stem, row.attempt)
    return existing((row.image_path, laid_out), output_dir)


async def _render_path(request: Request) -> Place:
    render_id = path_id(request, "render_id", "render")
    output_dir = request.app.state.settings.output_dir
    path = await in_session(request, render_file, render_id, output_dir)
    if path is None:
        raise HTTPException(404, f"no image for render {render_id}")
    return path


@data
async def render_image(request: Request) -> Response:
    """GET /renders/{id}/image: the attempt's full PNG."""
    path = await _render_path(request)
    headers = {"Cache-Control": IMAGE_CACHE}
    if isinstance(path, ObjectURL):
        try:
            content = await run_in_threadpool(storage.read_bytes, path)
        except OSError as error:
            raise HTTPException(404, "the image cannot be read") from error
        return Response(content, media_type="image/png", headers=headers)
    return FileResponse(path, media_type="image/png", headers=headers)


@data
async def render_thumb(request: Request) -> Response:
    """GET /renders/{id}/thumb: a JPEG at most 256 pixels on its longer side."""
    path = await _render_path(request)
    cache = storage.place(request.app.state.settings.output_dir) / THUMB_DIR
    made = await run_in_threadpool(thumbnail, path, cache)
    headers = {"Cache-Control": IMAGE_CACHE}
    if made is None:
        raise HTTPException(404, "the image cannot be read")
    if isinstance(made, Path):
        return FileResponse(made, media_type="image/jpeg", headers=headers)
    return Response(made, media_type="image/jpeg", headers=headers)


def thumbnail(source: Place, cache: Place, size: int = THUMB_PX) -> Path | bytes | None:
    """A JPEG thumbnail of ``source``, kept in ``cache`` for the next time.

    Args:
        source: a picture (a file or an object).
        cache: the folder thumbnails are kept in; created when missing.
        size: the longest side, in pixels.

    Returns:
        The cached file; the JPEG bytes when the cache cannot be written or is in an object
        store; None when the picture cannot be read.
    """
    try:
        version = _version(source)
    except OSError:
        return None
    name = hashlib.sha256(f"{version}|{size}".encode())
    target = cache / f"{name.hexdigest()[:32]}.jpg"
    kept = confined(target, cache) if isinstance(target, Path) else target
    if kept is not None and storage.is_file(kept):
        try:
            return kept if isinstance(kept, Path) else storage.read_bytes(kept)
        except OSError:  # gone meanwhile: made again below
            pass
    encoded = _jpeg(source, size)
    if encoded is None:
        return None
    try:
        with atomic_path(target) as scratch:
            scratch.write_bytes(encoded)
    except OSError:  # a read-only output folder still gets its thumbnails, uncached
        return encoded
    return target if isinstance(target, Path) else encoded


def _version(source: Place) -> str:
    """The source's place, size and modification time (an object's tag): a new version,
    a new name."""
    if isinstance(source, ObjectURL):
        return f"{source}|{storage.signature(source)}"
    facts = source.stat()
    return f"{source.resolve()}|{facts.st_size}|{facts.st_mtime_ns}"


def _jpeg(source: Place, size: int) -> bytes | None:
    try:
        with storage.open_read(source) as stream, Image.open(stream) as image:
            image.thumbnail((size, size))
            flat = image.convert("RGBA")
    except (OSError, Image.DecompressionBombError, ValueError):
        return None
    # JPEG has no transparency: a cut-out product goes on white, as on a catalog page.
    canvas = Image.new("RGB", flat.size, (255, 255, 255))
    canvas.paste(flat, mask=flat.getchannel("A"))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


@dataclass(frozen=True)
class Approved:
    """An approved article's export row and where its published image may lie."""

    row: dict
    candidates: tuple[str | Place | None, ...]
    file_stem: str  # of the article's view: <stem>@back for a back view


def approved_articles(
    session: Session, batch_id: str, output_dir: Path | str
) -> list[Approved] | None:
    """The export rows of a batch's approved articles, with where their images lie.

    Everything is read here, so the session can be closed before the archive is written.

    Args:
        session: any session.
        batch_id: the batch.
        output_dir: the farm's output root.

    Returns:
        One entry per approved article in catalog order; None when there is no such batch.
    """
    if session.get(Batch, batch_id) is None:
        return None
    # A batch's article is named by its key and view: pairing rows with articles by that
    # rather than by position stays right whatever order or filter either query has.
    rows = {(row["key"], row["view"]): row for row in export_rows(session, batch_id, output_dir)}
    articles = session.scalars(
        select(Article)
        .where(
            Article.batch_id == batch_id,
            Article.removed_at.is_(None),
            Article.review_status == ReviewStatus.approved.value,
        )
        .order_by(Article.id)
    ).all()
    folder = batch_dir(output_dir, batch_id)
    approved = []
    for article in articles:
        row = rows.get((article.key, article.view))
        # Read after the export rows, the articles may have moved on meanwhile (a new one,
        # a verdict just given): the archive keeps to what its sheet says.
        if row is None or row["review_status"] != ReviewStatus.approved.value:
            continue
        # The export rows name the view and the reviewer already; the archive adds when.
        extra = {"reviewed_at": None if article.reviewed_at is None else str(article.reviewed_at)}
        stem = view_stem(article.file_stem, article.view)  # the views of a row share file_stem
        candidates = (article.image_path, folder / f"{stem}.png")
        approved.append(Approved(row | extra, candidates, stem))
    return approved


def write_archive(approved: list[Approved], folder: Path, name: str, root: Path | str) -> Path:
    """Write the zip of approved pictures and their export sheet.

    Args:
        approved: from :func:`approved_articles`.
        folder: a scratch folder the archive goes in.
        name: the archive's file name.
        root: the output folder (or URL): a picture outside it counts as gone.

    Returns:
        The archive: ``images/<stem>.png`` per article whose picture exists, and
        ``approved.csv`` with one row per approved article; its ``archive_image`` column
        names the picture in the archive, empty when the picture is gone.
    """
    archive = folder / name
    rows, taken = [], set()
    with zipfile.ZipFile(archive, "w") as bundle:
        for entry in approved:
            picture = existing(entry.candidates, root)
            inside = f"{IMAGE_FOLDER}/{entry.file_stem}{picture.suffix if picture else '.png'}"
            if picture is None or inside in taken:
                rows.append(entry.row | {"archive_image": None})
                continue
            taken.add(inside)
            _pack(bundle, picture, inside)
            rows.append(entry.row | {"archive_image": inside})
        sheet = folder / CSV_NAME
        write_export(rows, sheet, "csv")
        bundle.write(sheet, CSV_NAME, compress_type=zipfile.ZIP_DEFLATED)
    return archive


def _pack(bundle: zipfile.ZipFile, picture: Place, inside: str) -> None:
    """Add one picture, stored: PNGs are compressed already and cost no CPU to pack."""
    if isinstance(picture, Path):
        bundle.write(picture, inside, compress_type=zipfile.ZIP_STORED)
        return
    entry = zipfile.ZipInfo(inside, date_time=time.localtime()[:6])
    entry.compress_type = zipfile.ZIP_STORED
    with storage.open_read(picture) as source, bundle.open(entry, "w", force_zip64=True) as out:
        shutil.copyfileobj(source, out)


def _scratch_folder(output_dir: Path | str) -> Path:
    # Beside the images when possible: an archive of a large batch can be gigabytes, more
    # than a small /tmp holds. An object store has no folder to write it in.
    if storage.is_url(output_dir):
        return Path(tempfile.mkdtemp(prefix="review-zip-"))
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".review-zip-", dir=output_dir))
    except OSError:
        return Path(tempfile.mkdtemp(prefix="review-zip-"))


def _archive(approved: list[Approved], batch_id: str, output_dir: Path | str) -> Path:
    folder = _scratch_folder(output_dir)
    try:
        return write_archive(approved, folder, f"{batch_id}-approved.zip", output_dir)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


@data
async def approved_zip(request: Request) -> Response:
    """GET /batches/{id}/approved.zip: the approved pictures and their export sheet."""
    batch_id = request.path_params["batch_id"]
    output_dir = request.app.state.settings.output_dir
    approved = await in_session(request, approved_articles, batch_id, output_dir)
    if approved is None:
        raise HTTPException(404, f"no batch {batch_id}")
    # The session is closed by now: writing gigabytes must not hold a transaction open (a
    # SQLite writer waiting on it, a PostgreSQL snapshot kept alive).
    archive = await run_in_threadpool(_archive, approved, batch_id, output_dir)
    cleanup = BackgroundTask(shutil.rmtree, archive.parent, ignore_errors=True)
    return FileResponse(
        archive, media_type="application/zip", filename=archive.name, background=cleanup
    )
