"""A batch's results as a table: one row per article, written as xlsx, csv, jsonl or parquet.

A row locates its article (key, view, review verdict, source file, sheet and row), then
repeats the cells the farm read from the catalog under the catalog's own headers, then gives
the results. Catalog text
and model output end up in spreadsheet cells, so every text cell of the xlsx and csv files is
neutralised against formula injection; jsonl and parquet are data for programs and keep the
values as they are.

A file is written whole or not at all, and only over a regular file (see
:mod:`producer.writes`); standard output gets the file once it is complete.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Article, Batch, Render, StageRun

# The errors and checks of every file the export, the report and the statistics write; the
# names stay importable from here.
from producer.writes import STDOUT, ExportError, check_target, write_out, writing  # noqa: F401
from tasks import outputs, storage
from tasks.outputs import atomic_path
from tasks.registry import ORDER as STAGES
from tasks.storage import ObjectURL, Place

EXPORT_FORMATS = ("xlsx", "csv", "jsonl", "parquet")
# Formats that are not text: never written to a terminal.
BINARY_FORMATS = frozenset({"xlsx", "parquet"})


# Which article it is (a row rendered in several views is one article per view), the review
# studio's verdict on its picture, and where it came from; the source cells follow these.
LOCATING_COLUMNS = (
    "batch",
    "key",
    "view",
    "review_status",
    "reviewed_by",
    "source_file",
    "source_sheet",
    "source_row",
)

RESULT_COLUMNS = (
    "status",
    "translation",
    "attributes",
    "generation_prompt",
    "clip_prompt",
    "best_clip_score",
    "attempts",
    "image_path",
    "seed",
    "renderer_model",
    "lora",
    "error_kind",
    "error",
    *(f"{stage}_worker" for stage in STAGES),
    *(f"{stage}_seconds" for stage in STAGES),
)

# The export's own columns; a batch's rows hold its source columns between the two groups.
COLUMNS = LOCATING_COLUMNS + RESULT_COLUMNS

# The text the farm read, for articles stored before their source cells were kept.
SOURCE_TEXT = "source_text"

# A catalog header that would land on one of the export's own columns gets this prefix.
SOURCE_PREFIX = "source: "

_RESERVED = frozenset(COLUMNS) | {SOURCE_TEXT}

# Parquet columns hold one type each; every column not named here is text.
_FLOAT_COLUMNS = frozenset({"best_clip_score", *(f"{stage}_seconds" for stage in STAGES)})
_INT_COLUMNS = frozenset({"source_row", "attempts"})
_NULLABLE_INT_COLUMNS = frozenset({"seed"})

# OWASP's list: a spreadsheet may evaluate a cell that starts with any of these.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> object:
    """Defuse a spreadsheet cell that a spreadsheet program would run as a formula.

    Args:
        value: a cell value.

    Returns:
        ``value`` with a leading apostrophe when it is a string starting with ``=``, ``+``,
        ``-``, ``@``, a tab or a carriage return; any other value unchanged.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def source_column(header: str) -> str:
    """The export column that shows a catalog header's cells.

    Args:
        header: a header of the catalog, as written there.

    Returns:
        ``header`` itself, or ``source: <header>`` when it is one of the export's own column
        names (or already starts with that prefix, so two headers never share a column).
    """
    if header in _RESERVED or header.startswith(SOURCE_PREFIX):
        return SOURCE_PREFIX + header
    return header


def export_rows(
    session: Session, batch_id: str, output_dir: Place | str | None = None
) -> list[dict]:
    """One row per article of a batch, with its source cells, best render and latest stages.

    Removed articles (their row left the catalog) are left out. Reads each table once for
    the whole batch.

    Args:
        session: any session.
        batch_id: the batch.
        output_dir: the farm's output root, a folder or an object store's URL. An article's
            ``image_path`` is where its published picture lies there: an absolute path, or
            the object's URL. None: the stored path, made absolute when it is relative.

    Returns:
        Dicts ordered by article id, all with the same keys: :data:`LOCATING_COLUMNS`, the
        source columns of all rows (headers in first-seen order, see :func:`source_column`;
        ``source_text`` for articles without source cells), then :data:`RESULT_COLUMNS`.

    Raises:
        LookupError: no batch ``batch_id``.
    """
    if session.get(Batch, batch_id) is None:
        raise LookupError(f"no batch {batch_id!r}")
    kept = (Article.batch_id == batch_id, Article.removed_at.is_(None))
    articles = session.scalars(select(Article).where(*kept).order_by(Article.id)).all()
    renders: dict[int, list[Render]] = {}
    render_query = (
        select(Render)
        .join(Article, Render.article_id == Article.id)
        .where(*kept)
        .order_by(Render.article_id, Render.attempt)
    )
    for render in session.scalars(render_query):
        renders.setdefault(render.article_id, []).append(render)
    latest_ok = _latest_ok_runs(session, kept)
    sources = [_source_cells(a) for a in articles]
    # Sheets of one batch may have different headers: every row gets all of them.
    blank = dict.fromkeys(column for cells in sources for column in cells)
    rows = []
    for article, cells in zip(articles, sources, strict=True):
        own = _row(article, renders.get(article.id, []), latest_ok.get(article.id, {}), output_dir)
        row = {column: own[column] for column in LOCATING_COLUMNS}
        row |= blank | cells
        row |= {column: own[column] for column in RESULT_COLUMNS}
        rows.append(row)
    return rows


def image_location(article: Article, output_dir: Place | str | None = None) -> str | None:
    """Where an article's published picture lies, as a reader of the export can open it.

    Args:
        article: the article.
        output_dir: the farm's output root; None to keep to the path the worker stored.

    Returns:
        None for an article without a picture; else the object's URL in a store, or an
        absolute path: ``<output_dir>/<batch>/<stem>[@view].png`` (where the picture is
        always published, whatever folder the worker that made it ran in), or the stored
        path resolved against the current folder when ``output_dir`` is None.
    """
    if not article.image_path:
        return None
    if output_dir is None:
        where = storage.place(article.image_path)
    else:
        where = outputs.published_image_path(
            storage.place(output_dir), article.batch_id, article.file_stem, article.view
        )
    if isinstance(where, ObjectURL):
        return str(where)
    return os.path.abspath(where)


def _source_cells(article: Article) -> dict[str, object]:
    if article.source_columns is None:  # stored before the cells were kept
        return {SOURCE_TEXT: article.source_text}
    return {
        source_column(header): json.dumps(value, ensure_ascii=False)
        if isinstance(value, (dict, list))  # a cell must be a scalar in every format
        else value
        for header, value in article.source_columns.items()
    }


def _latest_ok_runs(session: Session, kept: tuple) -> dict[int, dict[str, StageRun]]:
    query = (
        select(StageRun)
        .join(Article, StageRun.article_id == Article.id)
        .where(*kept, StageRun.outcome == "ok")
        .order_by(StageRun.id)  # insertion order: immune to clock skew between workers
    )
    latest: dict[int, dict[str, StageRun]] = {}
    for run in session.scalars(query):
        latest.setdefault(run.article_id, {})[run.stage] = run  # later runs overwrite earlier
    return latest


def best_render(renders: list[Render], attempt_base: int = 1) -> Render | None:
    """The render whose image was published: the highest CLIP score, else the latest attempt.

    Args:
        renders: all renders of one article.
        attempt_base: the article's first attempt for its current text; older ones don't count.

    Returns:
        That render, or None when there is none. Ties go to the earlier attempt, as the score
        stage keeps the first best image it saw.
    """
    renders = [r for r in renders if r.attempt >= attempt_base]
    scored = [r for r in renders if r.clip_score is not None]
    if scored:
        return max(scored, key=lambda r: (r.clip_score, -r.attempt))
    return max(renders, key=lambda r: r.attempt, default=None)


def _row(
    article: Article,
    renders: list[Render],
    runs: dict[str, StageRun],
    output_dir: Place | str | None,
) -> dict:
    best = best_render(renders, article.attempt_base)
    row = {
        "batch": article.batch_id,
        "key": article.key,
        "view": article.view,
        "review_status": article.review_status,
        "reviewed_by": article.reviewed_by,
        "source_file": article.source_file,
        "source_sheet": article.source_sheet,
        "source_row": article.source_row,
        "status": article.status,
        "translation": article.translation,
        "attributes": None
        if article.attributes is None
        else json.dumps(article.attributes, ensure_ascii=False),
        "generation_prompt": article.generation_prompt,
        "clip_prompt": article.clip_prompt,
        "best_clip_score": article.clip_score,
        "attempts": len(renders),
        "image_path": image_location(article, output_dir),
        "seed": best.seed if best else None,
        "renderer_model": best.model_id if best else None,
        "lora": best.lora if best else None,
        "error_kind": article.error_kind,
        "error": article.error,
    }
    for stage in STAGES:
        row[f"{stage}_worker"] = runs[stage].worker if stage in runs else None
    for stage in STAGES:
        row[f"{stage}_seconds"] = runs[stage].seconds if stage in runs else None
    return row


def write_export(rows: list[dict], path: Path, fmt: str) -> int:
    """Write rows to ``path`` atomically (a temporary file renamed into place).

    Args:
        rows: from :func:`export_rows` (any dicts; the columns are their keys in first-seen
            order, :data:`COLUMNS` when there is no row).
        path: the file to write (or an object in the output store); its folder is created.
        fmt: one of :data:`EXPORT_FORMATS`.

    Returns:
        The number of rows written, header not counted.

    Raises:
        ValueError: an unknown ``fmt``.
        ExportError: the file could not be written (a folder without write permission, a
            file where a folder should be, a full disk), or something other than a regular
            file stands at ``path`` (a device, a FIFO, a symbolic link; see
            :func:`check_target`); no file is left behind, and what stood there is untouched.
    """
    writer = _writer(fmt)
    columns = _columns(rows)
    check_target(path, "the export")
    with writing("the export", path), atomic_path(storage.place(path)) as scratch:
        writer(rows, columns, scratch)
    return len(rows)


def write_export_stream(rows: list[dict], stream: BinaryIO, fmt: str) -> int:
    """Write rows to a binary stream (standard output), whole or not at all.

    The export is made in a temporary file first, so a failure leaves nothing on ``stream``.

    Args:
        rows: as for :func:`write_export`.
        stream: where the bytes go; text formats are UTF-8 (csv with a BOM, as in a file).
        fmt: one of :data:`EXPORT_FORMATS`.

    Returns:
        The number of rows written, header not counted.

    Raises:
        ValueError: an unknown ``fmt``.
        ExportError: the stream, or the temporary file, could not be written.
    """
    writer = _writer(fmt)
    columns = _columns(rows)
    with writing("the export", STDOUT), tempfile.TemporaryDirectory(prefix="farm-export.") as tmp:
        scratch = Path(tmp) / f"export.{fmt}"
        writer(rows, columns, scratch)
        write_out(scratch, stream, "the export")
    return len(rows)


def _writer(fmt: str):
    writers = {
        "xlsx": _write_xlsx,
        "csv": _write_csv,
        "jsonl": _write_jsonl,
        "parquet": _write_parquet,
    }
    if fmt not in writers:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    return writers[fmt]


def _columns(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(c for row in rows for c in row)) if rows else list(COLUMNS)


def _write_xlsx(rows: list[dict], columns: list[str], scratch: Path) -> None:
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("articles")
    sheet.append(columns)
    for row in rows:
        sheet.append([_xlsx_cell(row.get(c)) for c in columns])
    workbook.save(scratch)


def _xlsx_cell(value: object) -> object:
    if isinstance(value, str):
        # openpyxl refuses control characters that the XML of a workbook cannot hold.
        value = ILLEGAL_CHARACTERS_RE.sub("", value)
    return neutralise(value)


def _write_csv(rows: list[dict], columns: list[str], scratch: Path) -> None:
    # utf-8-sig: Excel reads a UTF-8 csv as a legacy code page unless it starts with a BOM.
    with open(scratch, "w", encoding="utf-8-sig", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([neutralise(row.get(c)) for c in columns])


def _write_jsonl(rows: list[dict], columns: list[str], scratch: Path) -> None:
    with open(scratch, "w", encoding="utf-8") as stream:
        for row in rows:
            stream.write(json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False) + "\n")


def _write_parquet(rows: list[dict], columns: list[str], scratch: Path) -> None:
    # Imported here: pandas takes a noticeable share of a second to load, and only this
    # format needs it, so the other commands of the CLI start without it.
    import pandas as pd

    series = {}
    for column in columns:
        dtype = _parquet_dtype(column)
        values = [row.get(column) for row in rows]
        if dtype == "string":  # a catalog cell may be a number in one row, text in the next
            values = [None if value is None else str(value) for value in values]
        series[column] = pd.Series(values, dtype=dtype)
    pd.DataFrame(series).to_parquet(scratch, engine="pyarrow", index=False)


def _parquet_dtype(column: str) -> str:
    # Fixed by the column's name, never guessed from its values: a column that is all None
    # in one batch still has the type it has in the next, and nullable ints stay ints.
    if column in _FLOAT_COLUMNS:
        return "float64"
    if column in _INT_COLUMNS:
        return "int64"
    if column in _NULLABLE_INT_COLUMNS:
        return "Int64"
    return "string"
