"""Importing a catalog into a batch: new rows are added, changed rows redone, the rest kept.

A catalog is known by name (by default its file names). Submitting it again re-imports into
its latest batch: an article is redone only when its content hash changed, the hash covering
the model input and the settings that shape the output.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from db.models import Article, Batch
from producer.catalog import CatalogRow
from producer.requeue import reset_to_stage
from tasks.outputs import safe_stem


@dataclass
class ImportResult:
    """What an import did: the batch, counts, and the articles to start."""

    batch_id: str
    created: bool
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    to_send: list[tuple[int, str]] = field(default_factory=list)  # (article id, key)


def new_batch_id() -> str:
    """A sortable, unique batch id such as ``20261125-143000-a1b2c3``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def catalog_name(paths: Sequence[Path]) -> str:
    """The default catalog name of a set of files: their sorted names joined by ``+``.

    Args:
        paths: the submitted files.

    Returns:
        A name such as ``damen.xlsx+herren.csv``.
    """
    return "+".join(sorted(Path(p).name for p in paths))[:255]


def content_hash(row: CatalogRow, shape: Mapping[str, object]) -> str:
    """Hash of what the models see for a row and the settings that shape their output.

    Args:
        row: the catalog row.
        shape: profile name and model/shape overrides.

    Returns:
        A hex SHA-256.
    """
    payload = json.dumps({"text": row.source_text, "shape": dict(shape)}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def import_catalog(
    session: Session,
    rows: Sequence[CatalogRow],
    catalog: str,
    shape: Mapping[str, object],
    min_clip_score: float | None = None,
    new_batch: bool = False,
) -> ImportResult:
    """Store ``rows`` into the catalog's latest batch (or a new one), in one transaction.

    Args:
        session: a session with no transaction in progress.
        rows: validated catalog rows.
        catalog: the catalog's name.
        shape: settings that shape the output (``profile`` first); part of the content hash.
        min_clip_score: the batch's score threshold; kept as it is when None.
        new_batch: start a new batch even if the catalog has one.

    Returns:
        The counts and the articles whose chains must be sent.
    """
    with session.begin():
        batch = None if new_batch else _latest_batch(session, catalog)
        created = batch is None
        if created:
            batch = Batch(id=new_batch_id(), catalog=catalog, profile=str(shape["profile"]))
            session.add(batch)
        batch.sources = sorted({row.file for row in rows} | set(batch.sources or []))
        if min_clip_score is not None:
            batch.min_clip_score = min_clip_score
        result = ImportResult(batch.id, created)
        existing = {} if created else {a.key: a for a in batch.articles}
        fresh, redo = [], []
        for row in rows:
            digest = content_hash(row, shape)
            article = existing.get(row.key)
            if article is None:
                fresh.append(_new_article(batch.id, row, digest))
            elif article.content_hash == digest:
                result.unchanged += 1
            else:
                _reset(session, article, row, digest)
                redo.append((article.id, article.key))
        session.flush()
        fresh_ids = _insert_articles(session, fresh)
    result.new, result.changed = len(fresh), len(redo)
    result.to_send = [*zip(fresh_ids, (a["key"] for a in fresh), strict=True), *redo]
    return result


def _insert_articles(session: Session, articles: list[dict]) -> list[int]:
    # One bulk INSERT ... RETURNING instead of 10,000 ORM objects (about 2.5x faster on
    # PostgreSQL, bench/submit.py); the ids come back in row order.
    if not articles:
        return []
    returning = insert(Article).returning(Article.id, sort_by_parameter_order=True)
    return list(session.scalars(returning, articles))


def _latest_batch(session: Session, catalog: str) -> Batch | None:
    query = select(Batch).where(Batch.catalog == catalog).order_by(Batch.created_at.desc())
    return session.scalars(query.limit(1)).first()


def _new_article(batch_id: str, row: CatalogRow, digest: str) -> dict:
    return {
        "batch_id": batch_id,
        "key": row.key,
        "file_stem": safe_stem(row.key),
        "source_file": row.file,
        "source_sheet": row.sheet,
        "source_row": row.row,
        "source_text": row.source_text,
        "content_hash": digest,
    }


def _reset(session: Session, article: Article, row: CatalogRow, digest: str) -> None:
    article.source_file, article.source_sheet, article.source_row = row.file, row.sheet, row.row
    article.source_text = row.source_text
    article.content_hash = digest
    reset_to_stage(session, article, "translate")
