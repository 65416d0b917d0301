"""The HTML contact sheet of a batch, from a real SQLite database and real PNG files."""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus, Batch, Render
from producer.export import ExportError
from producer.report import write_report
from tasks.finish import STATISTICS_FILE

HOSTILE_KEY = "<script>alert('key')</script>"


@dataclass
class ReportBatch:
    """A batch stored in SQLite with its images on disk."""

    sessions: sessionmaker[Session]
    output_dir: Path
    batch_id: str
    keys: list[str]
    with_image: int  # articles whose image exists on disk


def make_report_batch(tmp_path: Path) -> ReportBatch:
    """Batch ``b1``: three scored articles with images (one with a hostile key), one whose
    image file is gone and one failed article without any image.

    Args:
        tmp_path: the test's folder; the database and the output root go there.

    Returns:
        The batch and how to reach it.
    """
    engine = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    output = tmp_path / "output"
    articles = [
        ("SKU-1", 0.31, (200, 40, 40), (320, 480)),
        ("SKU-2", 0.18, (40, 160, 40), (64, 64)),
        (HOSTILE_KEY, 0.27, (40, 40, 200), (256, 128)),
        ("SKU-4", 0.22, None, None),
    ]
    with sessions() as session:
        session.add(Batch(id="b1", profile="tiny", min_clip_score=0.25))
        for row, (key, score, colour, size) in enumerate(articles, start=2):
            stem = f"stem{row}"
            image = output / "b1" / f"{stem}.png"
            if colour is not None:
                image.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", size, colour).save(image)
            article = _article(key, stem, row, ArticleStatus.done.value, score=score, image=image)
            session.add(article)
            session.flush()
            session.add(_render(article.id, 1, image, score))
        failed = _article("SKU-5", "stem7", 7, ArticleStatus.failed.value)
        failed.error_kind, failed.error_stage = "InvalidArticle", "extract"
        failed.error = "the translation is <empty>"
        session.add(failed)
        session.commit()
    keys = [a[0] for a in articles] + ["SKU-5"]
    return ReportBatch(sessions, output, "b1", keys, with_image=3)


def _article(key, stem, row, status, score=None, image=None) -> Article:
    return Article(
        batch_id="b1",
        key=key,
        file_stem=stem,
        source_file="catalog.csv",
        source_sheet="csv",
        source_row=row,
        source_text="Bluse",
        status=status,
        clip_score=score,
        image_path=None if image is None else str(image),
    )


def _render(article_id: int, attempt: int, image: Path, score: float) -> Render:
    return Render(
        article_id=article_id,
        attempt=attempt,
        seed=attempt,
        model_id="tiny-sd",
        width=64,
        height=64,
        steps=2,
        image_path=str(image),
        seconds=0.1,
        worker="gpu@host",
        clip_score=score,
    )


class Elements(HTMLParser):
    """Every start tag of a document with its attributes, in document order."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, css_class: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag and css_class in a.get("class", "").split()]


@pytest.fixture
def batch(tmp_path) -> ReportBatch:
    return make_report_batch(tmp_path)


def report(batch: ReportBatch, **options) -> tuple[Path, str]:
    with batch.sessions() as session:
        path = write_report(session, batch.batch_id, batch.output_dir, **options)
    return path, path.read_text(encoding="utf-8")


def test_the_report_is_one_self_contained_file_with_a_card_per_article(batch):
    path, text = report(batch)
    assert path == batch.output_dir / "b1" / "report.html"
    elements = Elements(text)
    cards = elements.find("article", "card")
    assert [c["data-key"] for c in cards] == batch.keys
    assert [c["data-status"] for c in cards] == ["done"] * 4 + ["failed"]
    assert [c["data-score"] for c in cards] == ["0.31", "0.18", "0.27", "0.22", ""]
    sources = [a.get("src") or a.get("href") or "" for _, a in elements.tags]
    assert not [s for s in sources if s and not s.startswith("data:")]
    assert "http://" not in text and "https://" not in text
    assert [t for t, _ in elements.tags if t in ("link", "iframe")] == []


def test_thumbnails_are_png_data_uris_no_larger_than_thumb_px(batch):
    _, text = report(batch, thumb_px=48)
    thumbs = Elements(text).find("img", "thumb")
    assert len(thumbs) == batch.with_image
    sizes = []
    for thumb in thumbs:
        prefix, data = thumb["src"].split(",", 1)
        assert prefix == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            assert image.format == "PNG"
            sizes.append(image.size)
    assert sizes == [(32, 48), (48, 48), (48, 24)]


def test_articles_without_a_readable_image_get_a_placeholder(batch):
    _, text = report(batch)
    assert text.count('class="placeholder"') == 2
    assert "image missing" in text and "no image" in text


def test_a_hostile_key_and_error_are_escaped(batch):
    _, text = report(batch)
    assert "<script>alert" not in text
    assert text.count("<script>") == 1  # the report's own filter and sort script
    assert "&lt;script&gt;alert(&#x27;key&#x27;)&lt;/script&gt;" in text
    assert "the translation is &lt;empty&gt;" in text


def test_the_header_shows_counts_statistics_and_the_batch_threshold(batch):
    _, text = report(batch)
    assert "done <b>4</b>" in text and "failed <b>1</b>" in text
    assert "<td>4</td>" in text and "<td>0.2450</td>" in text  # the mean of four scores
    (threshold,) = [a for t, a in Elements(text).tags if a.get("id") == "threshold"]
    assert threshold["value"] == "0.25"


def test_the_statistics_file_is_rewritten_with_the_report(batch):
    statistics = batch.output_dir / "b1" / STATISTICS_FILE
    statistics.parent.mkdir(parents=True, exist_ok=True)
    statistics.write_text("stale\n")
    report(batch)
    lines = statistics.read_text().splitlines()
    assert lines[2:4] == ["Total Samples: 4", "Mean: 0.2450"]


def test_the_report_goes_to_an_explicit_path_without_leftovers(batch, tmp_path):
    target = tmp_path / "reports" / "sheet.html"
    path, _ = report(batch, path=target)
    assert path == target
    assert [p.name for p in target.parent.iterdir()] == ["sheet.html"]


def test_an_unknown_batch_is_a_lookup_error(batch):
    with batch.sessions() as session, pytest.raises(LookupError, match="no batch 'nope'"):
        write_report(session, "nope", batch.output_dir)


def test_removed_articles_are_left_out_of_the_cards_counts_and_statistics(batch):
    with batch.sessions() as session:
        gone = session.scalar(select(Article).where(Article.key == "SKU-2"))
        gone.removed_at = datetime(2024, 5, 1, tzinfo=timezone.utc)
        session.commit()
    _, text = report(batch)
    cards = Elements(text).find("article", "card")
    assert [c["data-key"] for c in cards] == [k for k in batch.keys if k != "SKU-2"]
    assert [c["data-index"] for c in cards] == ["0", "1", "2", "3"]
    assert "done <b>3</b>" in text and "4 articles" in text
    assert "<td>3</td>" in text and "<td>0.2667</td>" in text  # the mean of 0.31, 0.27, 0.22
    statistics = (batch.output_dir / "b1" / STATISTICS_FILE).read_text().splitlines()
    assert statistics[2:4] == ["Total Samples: 3", "Mean: 0.2667"]


def test_each_card_shows_its_view_and_finds_the_views_published_image(batch):
    with batch.sessions() as session:
        back = _article("SKU-1", "stem2", 2, ArticleStatus.done.value, score=0.3)
        back.view = "back"
        back.image_path = "/elsewhere/stem2@back.png"  # moved: found in the batch folder
        session.add(back)
        session.commit()
    image = batch.output_dir / "b1" / "stem2@back.png"
    Image.new("RGB", (32, 32), (10, 10, 10)).save(image)
    _, text = report(batch)
    cards = Elements(text).find("article", "card")
    assert [c["data-view"] for c in cards] == ["front"] * 5 + ["back"]
    assert text.count('<span class="view">front</span>') == 5
    assert text.count('<span class="view">back</span>') == 1
    assert len(Elements(text).find("img", "thumb")) == batch.with_image + 1


def test_a_file_where_the_report_folder_should_be_is_an_export_error(batch, tmp_path):
    blocker = tmp_path / "reports"
    blocker.write_text("not a folder")
    target = blocker / "sheet.html"
    with pytest.raises(ExportError) as raised:
        report(batch, path=target)
    assert str(raised.value) == (
        f"cannot write the report to {target}: a file stands where a folder should be"
    )
    assert raised.value.path == target
    assert blocker.read_text() == "not a folder"


def test_a_file_where_the_batch_folder_should_be_is_an_export_error(batch):
    folder = batch.output_dir / "b1"
    for image in folder.iterdir():
        image.unlink()
    folder.rmdir()
    folder.write_text("not a folder")
    with pytest.raises(ExportError, match="^cannot write the CLIP statistics to .*b1/clip_"):
        report(batch)
    assert folder.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_report_folder_without_write_permission_is_an_export_error(batch, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    target = folder / "sheet.html"
    try:
        with pytest.raises(ExportError) as raised:
            report(batch, path=target)
        assert str(raised.value) == f"cannot write the report to {target}: permission denied"
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)
