"""The HTML contact sheet of a batch, from a real SQLite database and real PNG files."""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus, Batch, Render
from producer.export import STDOUT, ExportError
from producer.report import THUMB_BYTES, THUMB_PX, _thumbnail, product_name, write_report
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


def test_thumbnails_are_webp_data_uris_no_larger_than_thumb_px(batch):
    _, text = report(batch, thumb_px=48)
    thumbs = Elements(text).find("img", "thumb")
    assert len(thumbs) == batch.with_image
    sizes = []
    for thumb in thumbs:
        prefix, data = thumb["src"].split(",", 1)
        assert prefix == "data:image/webp;base64"
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            assert image.format == "WEBP"
            sizes.append(image.size)
    assert sizes == [(32, 48), (48, 48), (48, 24)]


def test_thumbnails_are_128_px_by_default(batch):
    _, text = report(batch)
    sizes = []
    for thumb in Elements(text).find("img", "thumb"):
        data = base64.b64decode(thumb["src"].split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as image:
            sizes.append(image.size)
    assert sizes == [(85, 128), (64, 64), (128, 64)]  # never enlarged


def test_a_thumbnail_that_compresses_badly_still_fits_its_byte_budget(tmp_path):
    noise = Image.frombytes("RGB", (1024, 1024), os.urandom(1024 * 1024 * 3))
    path = tmp_path / "noise.png"
    noise.save(path)
    uri = _thumbnail(path, THUMB_PX)
    data = base64.b64decode(uri.split(",", 1)[1])
    assert len(data) <= THUMB_BYTES
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP" and max(image.size) <= THUMB_PX


def test_a_transparent_picture_keeps_its_transparency(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (300, 200), (200, 0, 0, 0)).save(path)
    data = base64.b64decode(_thumbnail(path, THUMB_PX).split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGBA" and image.getpixel((5, 5))[3] == 0


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


# --- names ------------------------------------------------------------------------------


def test_each_card_names_its_product_above_its_key(batch):
    names = {
        "SKU-1": {"Titel": "Sommerbluse aus Leinen", "Beschreibung": "leicht", "SKU": "SKU-1"},
        "SKU-2": {"Beschreibung": "kurz", "name": "Chelsea-Boots"},
        HOSTILE_KEY: {"Titel": "<b>Weste</b> & Co", "Beschreibung": "x"},
        "SKU-4": {"Titel": "", "Beschreibung": "", "model_name": "Jeans Slim"},
    }
    with batch.sessions() as session:
        for article in session.scalars(select(Article)):
            article.source_columns = names.get(article.key)
        session.commit()
    _, text = report(batch)
    shown = [line.split("</p>")[0] for line in text.split('<p class="name">')[1:]]
    assert shown == [
        "Sommerbluse aus Leinen",
        "Chelsea-Boots",
        "&lt;b&gt;Weste&lt;/b&gt; &amp; Co",
        "Jeans Slim",
        "Bluse",  # stored before its cells were kept: the first line of its source text
    ]
    keys = [line.split("</p>")[0] for line in text.split('<p class="key">')[1:]]
    assert (
        keys[:2] == ["SKU-1", "SKU-2"]
        and keys[2] == "&lt;script&gt;alert(&#x27;key&#x27;)&lt;/script&gt;"
    )
    (thumb, *_) = Elements(text).find("img", "thumb")
    assert thumb["alt"] == "Sommerbluse aus Leinen (front)"


def test_a_product_without_any_name_shows_its_key_alone():
    article = Article(key="SKU-9", source_columns={"Titel": " ", "Beschreibung": "lang"})
    assert product_name(article) is None
    article.source_columns, article.source_text = None, ""
    assert product_name(article) is None


def test_a_long_name_and_error_are_cut_on_the_card(batch):
    with batch.sessions() as session:
        first = session.scalar(select(Article).where(Article.key == "SKU-1"))
        first.source_columns = {"name": "Bluse " * 100}
        failed = session.scalar(select(Article).where(Article.key == "SKU-5"))
        failed.error = "Traceback line\n" * 1000
        session.commit()
    _, text = report(batch)
    (name,) = [line.split("</p>")[0] for line in text.split('<p class="name">')[1:2]]
    assert len(name) == 120 and name.endswith("…")
    error = text.split('<p class="error">')[1].split("</p>")[0]
    assert len(error) < 500 and error.endswith("…")


# --- size -------------------------------------------------------------------------------

CATALOG_ARTICLES = 10_000
MAX_REPORT_BYTES = 50 * 1000 * 1000
MAX_CARD_BYTES = 4_500


def _garment(seed: int, size: tuple[int, int] = (160, 240)) -> Image.Image:
    """A product-like picture: a coloured garment with fabric noise on a light background."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("RGB", size, (245, 245, 242))
    colour = tuple(int(c) for c in rng.integers(30, 220, 3))
    outline = [(0.3, 0.1), (0.7, 0.1), (0.85, 0.9), (0.15, 0.9)]
    ImageDraw.Draw(image).polygon([(x * width, y * height) for x, y in outline], fill=colour)
    fabric = rng.normal(0, 10, (height, width, 3))
    pixels = np.asarray(image, dtype=np.float64) + fabric
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def test_the_report_of_a_10000_article_catalog_stays_under_50_mb(tmp_path):
    articles = 2_000
    engine = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    output = tmp_path / "output"
    (output / "b1").mkdir(parents=True)
    pictures = []
    for seed in range(16):
        pictures.append(output / "b1" / f"picture{seed}.png")
        _garment(seed).save(pictures[-1])
    with sessions() as session:
        session.add(Batch(id="b1", profile="tiny", min_clip_score=0.25))
        session.flush()
        rows = [
            {
                "batch_id": "b1",
                "key": f"SKU-{index:05d}",
                "file_stem": f"SKU-{index:05d}",
                "source_file": "katalog.xlsx",
                "source_sheet": "Damen",
                "source_row": index + 2,
                "source_text": "Bluse",
                "source_columns": {"Titel": f"Sommerbluse Modell {index}", "Beschreibung": "x"},
                "status": ArticleStatus.done.value,
                "clip_score": 0.2 + index / 10_000,
                "image_path": str(pictures[index % len(pictures)]),
            }
            for index in range(articles)
        ]
        session.execute(insert(Article), rows)
        session.commit()
    with sessions() as session:
        path = write_report(session, "b1", output)
    engine.dispose()
    text = path.read_text(encoding="utf-8")
    cards = [c for c in text.split("\n") if c.startswith('<article class="card"')]
    assert len(cards) == articles
    assert (
        sum('<img class="thumb" src="data:image/webp;base64,' in card for card in cards) == articles
    )
    sizes = [len(card.encode("utf-8")) for card in cards]
    assert max(sizes) <= MAX_CARD_BYTES
    frame = path.stat().st_size - sum(sizes)  # header, style and script: once per report
    assert frame + CATALOG_ARTICLES * sum(sizes) / articles < MAX_REPORT_BYTES
    assert "Sommerbluse Modell 0<" in text and f"Sommerbluse Modell {articles - 1}<" in text


# --- where the report goes --------------------------------------------------------------


def test_the_report_can_go_to_a_stream_whole_and_without_a_file(batch):
    stream = io.BytesIO()
    with batch.sessions() as session:
        where = write_report(session, "b1", batch.output_dir, stream=stream)
    assert where == STDOUT
    text = stream.getvalue().decode("utf-8")
    assert text.startswith("<!doctype html>") and text.endswith("</body></html>\n")
    assert len(Elements(text).find("article", "card")) == len(batch.keys)
    assert not (batch.output_dir / "b1" / "report.html").exists()
    assert (batch.output_dir / "b1" / STATISTICS_FILE).exists()


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_report_path_that_is_not_a_regular_file_is_refused_untouched(batch, tmp_path, kind):
    path = tmp_path / "sheet.html"
    target = tmp_path / "target.html"
    if kind == "symlink":
        target.write_text("")
        path.symlink_to(target)
    else:
        os.mkfifo(path)
    with pytest.raises(ExportError, match=f"^cannot write the report to {path}: it is a "):
        report(batch, path=path)
    assert path.is_symlink() if kind == "symlink" else path.exists()
    assert not target.exists() or target.read_text() == ""
    assert not (batch.output_dir / "b1" / STATISTICS_FILE).exists()  # refused before writing
