"""A batch's contact sheet: one self-contained HTML file with a thumbnail card per article.

A catalog row rendered in several views is one article, and one card, per view; each card
names its product (the catalog's name cell), its key and its view.

Thumbnails are embedded as data URIs and the filter and sort controls are inline JavaScript,
so the file can be mailed or archived on its own and opened without network access. A
thumbnail is a small WebP (128 px, at most :data:`THUMB_BYTES`), so a card stays under about
4.5 KB and the sheet of a 10,000-article catalog under 50 MB.
"""

from __future__ import annotations

import base64
import io
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import BinaryIO

from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Article, ArticleStatus, Batch, Render
from producer.writes import STDOUT, check_target, write_out, writing
from tasks import outputs, storage
from tasks.finish import STATISTICS_FILE
from tasks.storage import Place

REPORT_FILE = "report.html"

# A thumbnail's longest side, in pixels, and its most bytes before base64: a WebP is made
# again at a lower quality, then smaller, until it fits.
THUMB_PX = 128
THUMB_BYTES = 2600
_QUALITIES = (75, 60, 45, 30)
# A card shows this much of an article's name and error at most (the export has them whole).
NAME_CHARS = 120
ERROR_CHARS = 400

_STYLE = """
:root { --thumb: 128px; color-scheme: light; font-family: system-ui, sans-serif; }
body { margin: 0; background: #f4f4f2; color: #222; }
header { background: #fff; padding: 16px 24px; border-bottom: 1px solid #ddd; }
h1 { font-size: 20px; margin: 0 0 6px; }
.meta { color: #666; margin: 0 0 10px; font-size: 13px; }
.counts { display: flex; flex-wrap: wrap; gap: 6px; list-style: none; padding: 0; margin: 0; }
.counts li { padding: 2px 8px; border-radius: 10px; font-size: 13px; background: #eee; }
table.stats { border-collapse: collapse; margin: 12px 0; font-size: 13px; }
table.stats th, table.stats td { border: 1px solid #ddd; padding: 3px 10px; text-align: right; }
table.stats th { background: #fafafa; font-weight: 600; }
.controls { display: flex; flex-wrap: wrap; gap: 16px; align-items: center; font-size: 13px; }
.controls input { width: 6em; }
#grid { display: grid; gap: 12px; padding: 16px 24px;
  grid-template-columns: repeat(auto-fill, minmax(calc(var(--thumb) + 24px), 1fr)); }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 12px;
  display: flex; flex-direction: column; gap: 6px; font-size: 13px; }
[hidden] { display: none !important; }
.frame { width: var(--thumb); height: var(--thumb); align-self: center; display: flex;
  align-items: center; justify-content: center; background: #fafafa; }
.frame img { max-width: 100%; max-height: 100%; }
.placeholder { width: 100%; height: 100%; border: 2px dashed #ccc; box-sizing: border-box;
  display: flex; align-items: center; justify-content: center; color: #999; }
.name { font-weight: 600; overflow-wrap: anywhere; margin: 0; font-size: 14px; }
.key { overflow-wrap: anywhere; margin: 0; color: #555; font-family: ui-monospace, monospace;
  font-size: 12px; }
.facts { display: flex; flex-wrap: wrap; gap: 4px 10px; color: #555; }
.status, .view { padding: 0 6px; border-radius: 8px; background: #eee; }
.view { background: #e4ecf7; }
.status-done { background: #dcf2dc; } .status-needs_review { background: #fbeccb; }
.status-failed { background: #f8d4d4; }
.card.below .score { color: #b00; font-weight: 600; }
.error { color: #a00; margin: 0; max-height: 6em; overflow: auto; overflow-wrap: anywhere;
  font-family: ui-monospace, monospace; font-size: 12px; }
"""

_SCRIPT = """
(() => {
  const grid = document.getElementById("grid");
  const cards = Array.from(grid.querySelectorAll(".card"));
  const filter = document.getElementById("filter");
  const threshold = document.getElementById("threshold");
  const sort = document.getElementById("sort");
  const shown = document.getElementById("shown");
  const score = (card) => (card.dataset.score === "" ? null : Number(card.dataset.score));
  const limit = () => (threshold.value === "" ? NaN : Number(threshold.value));
  const below = (card) => score(card) !== null && score(card) < limit();
  function keep(card) {
    if (filter.value === "failed") return card.dataset.status === "failed";
    if (filter.value === "below") return below(card);
    return true;
  }
  function compare(a, b) {
    if (sort.value === "catalog") return a.dataset.index - b.dataset.index;
    if (sort.value === "key") return a.dataset.key.localeCompare(b.dataset.key, undefined,
      { numeric: true });
    const sa = score(a), sb = score(b);
    if (sa === null || sb === null) return (sa === null) - (sb === null);  // unscored last
    return sort.value === "score-asc" ? sa - sb : sb - sa;
  }
  function update() {
    let count = 0;
    for (const card of cards.sort(compare)) {
      card.hidden = !keep(card);
      card.classList.toggle("below", below(card));
      count += card.hidden ? 0 : 1;
      grid.appendChild(card);
    }
    shown.textContent = `${count} of ${cards.length} shown`;
  }
  for (const control of [filter, threshold, sort]) control.addEventListener("input", update);
  update();
  window.addEventListener("load", () => {
    const thumbs = Array.from(document.querySelectorAll("img.thumb"));
    const decoded = thumbs.filter((img) => img.complete && img.naturalWidth > 0);
    document.body.dataset.thumbsLoaded = String(decoded.length);
  });
})();
"""


def write_report(
    session: Session,
    batch_id: str,
    output_dir: Path | str,
    path: Path | None = None,
    thumb_px: int = THUMB_PX,
    stream: BinaryIO | None = None,
) -> Place | str:
    """Write a batch's HTML contact sheet and (re)write its ``clip_statistics.txt``.

    Removed articles (their row left the catalog) are in neither, nor in the counts.

    Args:
        session: any session.
        batch_id: the batch.
        output_dir: the farm's output root (a folder or an object store's URL); images that
            moved with it are found there.
        path: where the report goes; ``<output_dir>/<batch>/report.html`` when None.
        thumb_px: the longest side of a thumbnail, in pixels.
        stream: write the report to this binary stream (standard output) instead of a file,
            once it is complete; ``path`` is then ignored.

    Returns:
        The report's path, or :data:`producer.writes.STDOUT` for a stream.

    Raises:
        LookupError: no batch ``batch_id``.
        ExportError: the statistics or the report could not be written (see
            :func:`producer.writes.writing`), or something other than a regular file stands
            where one goes (:func:`producer.writes.check_target`); the file that failed is
            not left behind.
    """
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise LookupError(f"no batch {batch_id!r}")
    kept = (Article.batch_id == batch_id, Article.removed_at.is_(None))
    articles = session.scalars(select(Article).where(*kept).order_by(Article.id)).all()
    attempts = dict(
        session.execute(
            select(Render.article_id, func.count())
            .join(Article, Render.article_id == Article.id)
            .where(*kept)
            .group_by(Render.article_id)
        ).all()
    )
    folder = outputs.batch_dir(output_dir, batch_id)
    # From the articles kept, not tasks.finish.batch_scores, which counts removed ones too.
    scores = [a.clip_score for a in articles if a.clip_score is not None]
    statistics = folder / STATISTICS_FILE
    target = Path(path) if path is not None else folder / REPORT_FILE
    check_target(statistics, "the CLIP statistics")
    if stream is None:
        check_target(target, "the report")
    with writing("the CLIP statistics", statistics):
        outputs.write_clip_statistics(statistics, scores)
    cards = (
        _card(index, a, attempts.get(a.id, 0), _thumbnail(_image_file(a, folder), thumb_px))
        for index, a in enumerate(articles)
    )
    document = _document(batch, articles, scores, thumb_px, cards)
    if stream is not None:
        _write_stream(stream, document)
        return STDOUT
    with writing("the report", target):
        _write_atomically(target, document)
    return target


def _document(
    batch: Batch, articles: list[Article], scores: list[float], thumb_px: int, cards: Iterable[str]
) -> Iterator[str]:
    title = escape(f"fashion-farm report: batch {batch.id}")
    yield (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_STYLE}:root {{ --thumb: {int(thumb_px)}px; }}</style>"
        f"</head><body>\n"
    )
    yield _header(batch, articles, scores)
    yield '<main id="grid">\n'
    yield from cards
    yield f"</main>\n<script>{_SCRIPT}</script>\n</body></html>\n"


def _header(batch: Batch, articles: list[Article], scores: list[float]) -> str:
    counts = {status.value: 0 for status in ArticleStatus}
    for article in articles:
        counts[article.status] = counts.get(article.status, 0) + 1
    badges = "".join(
        f'<li class="status-{escape(status)}">{escape(status)} <b>{count}</b></li>'
        for status, count in counts.items()
        if count
    )
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    threshold = "" if batch.min_clip_score is None else f"{batch.min_clip_score:g}"
    meta = (
        f"{len(articles)} articles · profile {escape(batch.profile)} · "
        f"created {batch.created_at:%Y-%m-%d %H:%M} · report generated {generated}"
    )
    return (
        f"<header><h1>Batch <code>{escape(batch.id)}</code></h1>"
        f'<p class="meta">{meta}</p><ul class="counts">{badges}</ul>'
        f"{_statistics_table(scores)}"
        '<div class="controls">'
        '<label>Show <select id="filter"><option value="all">all</option>'
        '<option value="failed">failed</option>'
        '<option value="below">below threshold</option></select></label>'
        f'<label>Threshold <input id="threshold" type="number" step="0.01" '
        f'value="{threshold}" placeholder="none"></label>'
        '<label>Sort <select id="sort"><option value="catalog">catalog order</option>'
        '<option value="key">key</option><option value="score-desc">score, high first</option>'
        '<option value="score-asc">score, low first</option></select></label>'
        '<span id="shown"></span></div></header>\n'
    )


def _statistics_table(scores: list[float]) -> str:
    if not scores:
        return '<p class="meta">No scored articles yet.</p>'
    stats = outputs.clip_statistics(scores)
    heads = "".join(f"<th>{escape(name)}</th>" for name in stats)
    cells = "".join(
        f"<td>{value}</td>" if name == "Total Samples" else f"<td>{value:.4f}</td>"
        for name, value in stats.items()
    )
    return (
        f'<table class="stats"><tr><th></th>{heads}</tr><tr><th>CLIP score</th>{cells}</tr></table>'
    )


def product_name(article: Article) -> str | None:
    """The article's product name as its catalog gives it, None when there is none.

    The cell under a ``name`` header; else the first cell the farm kept, which is the
    catalog's name column whatever its header (``--columns name=Titel``); else the cell under
    ``model_name``. An article stored before its cells were kept shows the first line of its
    source text, where the name comes first.

    Args:
        article: the article.
    """
    cells = article.source_columns
    if cells is None:
        lines = (article.source_text or "").strip().splitlines()
        return lines[0].strip() if lines else None
    by_header = {str(header).strip().lower(): value for header, value in cells.items()}
    first = next(iter(cells.values()), None)
    for value in (by_header.get("name"), first, by_header.get("model_name")):
        if value not in (None, "") and str(value).strip():
            return str(value).strip()
    return None


def _cut(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _card(index: int, article: Article, attempts: int, thumb: str | None) -> str:
    key = escape(article.key)
    view = escape(article.view)
    status = escape(article.status)
    name = product_name(article)
    title = escape(_cut(name, NAME_CHARS)) if name else key
    score = "" if article.clip_score is None else repr(article.clip_score)
    if thumb is not None:
        picture = f'<img class="thumb" src="{thumb}" alt="{title} ({view})">'
    else:
        missing = "image missing" if article.image_path else "no image"
        picture = f'<div class="placeholder">{missing}</div>'
    shown_score = "–" if article.clip_score is None else f"{article.clip_score:.4f}"
    error = ""
    if article.error or article.error_kind:
        kind = escape(article.error_kind or "error")
        stage = f" in {escape(article.error_stage)}" if article.error_stage else ""
        text = escape(_cut(article.error or "", ERROR_CHARS))
        error = f'<p class="error"><b>{kind}{stage}:</b> {text}</p>'
    return (
        f'<article class="card" data-index="{index}" data-status="{status}" '
        f'data-score="{score}" data-key="{key}" data-view="{view}">'
        f'<div class="frame">{picture}</div><p class="name">{title}</p>'
        f'<p class="key">{key}</p>'
        f'<div class="facts"><span class="view">{view}</span>'
        f'<span class="score">score {shown_score}</span>'
        f'<span class="status status-{status}">{status}</span>'
        f"<span>attempts {attempts}</span></div>{error}</article>\n"
    )


def _image_file(article: Article, folder: Place) -> Place | None:
    if not article.image_path:
        return None
    # A relative path in the database is relative to the worker's folder; the published image
    # also always lies in the batch folder, which is where to look when the first is gone.
    # An unreadable folder or store counts as missing: a placeholder, not a failed report.
    published = folder / f"{outputs.view_stem(article.file_stem, article.view)}.png"
    for candidate in (storage.place(article.image_path), published):
        if storage.is_file(candidate):
            return candidate
    return None


def _thumbnail(path: Place | None, thumb_px: int) -> str | None:
    if path is None:
        return None
    try:
        with storage.open_read(path) as stream, Image.open(stream) as image:
            image.thumbnail((thumb_px, thumb_px))
            data = _webp(image)
    except (OSError, Image.DecompressionBombError):  # the card shows a placeholder instead
        return None
    return "data:image/webp;base64," + base64.b64encode(data).decode("ascii")


def _webp(image: Image.Image) -> bytes:
    """``image`` as a WebP of at most :data:`THUMB_BYTES`: lower qualities, then smaller."""
    clear = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if clear else "RGB")
    while True:
        for quality in _QUALITIES:
            buffer = io.BytesIO()
            image.save(buffer, format="WEBP", quality=quality, method=2)
            if buffer.tell() <= THUMB_BYTES:
                return buffer.getvalue()
        if max(image.size) <= 16:  # noise this small still fits; never loops for ever
            return buffer.getvalue()
        image = image.resize((max(1, image.width * 3 // 4), max(1, image.height * 3 // 4)))


def _write_stream(stream: BinaryIO, chunks: Iterable[str]) -> None:
    # Made whole in a scratch file first: a failure halfway leaves nothing on the stream.
    with writing("the report", STDOUT), tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir) / REPORT_FILE
        with open(scratch, "w", encoding="utf-8") as out:
            out.writelines(chunks)
        write_out(scratch, stream, "the report")


def _write_atomically(path: Place, chunks: Iterable[str]) -> None:
    with outputs.atomic_path(path) as scratch, open(scratch, "w", encoding="utf-8") as stream:
        stream.writelines(chunks)
