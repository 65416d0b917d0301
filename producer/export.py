"""A batch's results as a table: one row per article, written as xlsx, csv or jsonl.

Catalog text and model output end up in spreadsheet cells, so every text cell of the xlsx and
csv files is neutralised against formula injection; jsonl is data for programs and keeps the
values as they are.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Article, Batch, Render, StageRun
from tasks.outputs import atomic_path
from tasks.registry import ORDER as STAGES

EXPORT_FORMATS = ("xlsx", "csv", "jsonl")

COLUMNS = (
    "batch",
    "key",
    "source_file",
    "source_sheet",
    "source_row",
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


def export_rows(session: Session, batch_id: str) -> list[dict]:
    """One row per article of a batch, with its best render and its latest successful stages.

    Reads each table once for the whole batch.

    Args:
        session: any session.
        batch_id: the batch.

    Returns:
        Dicts with the keys of :data:`COLUMNS`, ordered by article id.

    Raises:
        LookupError: no batch ``batch_id``.
    """
    if session.get(Batch, batch_id) is None:
        raise LookupError(f"no batch {batch_id!r}")
    articles = session.scalars(
        select(Article).where(Article.batch_id == batch_id).order_by(Article.id)
    ).all()
    renders: dict[int, list[Render]] = {}
    render_query = (
        select(Render)
        .join(Article, Render.article_id == Article.id)
        .where(Article.batch_id == batch_id)
        .order_by(Render.article_id, Render.attempt)
    )
    for render in session.scalars(render_query):
        renders.setdefault(render.article_id, []).append(render)
    latest_ok = _latest_ok_runs(session, batch_id)
    return [_row(a, renders.get(a.id, []), latest_ok.get(a.id, {})) for a in articles]


def _latest_ok_runs(session: Session, batch_id: str) -> dict[int, dict[str, StageRun]]:
    query = (
        select(StageRun)
        .join(Article, StageRun.article_id == Article.id)
        .where(Article.batch_id == batch_id, StageRun.outcome == "ok")
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


def _row(article: Article, renders: list[Render], runs: dict[str, StageRun]) -> dict:
    best = best_render(renders, article.attempt_base)
    row = {
        "batch": article.batch_id,
        "key": article.key,
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
        "image_path": article.image_path,
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
        rows: from :func:`export_rows` (any dicts sharing the first row's keys).
        path: the file to write; its folder is created.
        fmt: one of :data:`EXPORT_FORMATS`.

    Returns:
        The number of rows written, header not counted.

    Raises:
        ValueError: an unknown ``fmt``.
    """
    writers = {"xlsx": _write_xlsx, "csv": _write_csv, "jsonl": _write_jsonl}
    if fmt not in writers:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    columns = list(rows[0]) if rows else list(COLUMNS)
    with atomic_path(Path(path)) as scratch:
        writers[fmt](rows, columns, scratch)
    return len(rows)


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
