"""The review studio's pages over a batch of 10,000 articles, on SQLite and PostgreSQL.

Stores N finished articles (synthetic rows, one render each, scores spread over a range) in a
fresh database of each kind, then serves the studio's ASGI app in-process
(``starlette.testclient``; read-only, no user, as on 127.0.0.1) and times the pages a
merchandiser opens: the batches page, the first and the last page of the contact sheet in
catalog order, a "below a threshold" page sorted by score, and an article page. Each page is
fetched ``--repeats`` times after one warm-up; the median is printed. The last line is
``studio_page_ms: X``, the slowest median on PostgreSQL.

    python -m bench.studio [--articles N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image
from sqlalchemy import insert, select, update
from starlette.testclient import TestClient

from bench.catalog import synthetic_rows
from bench.services import fresh_database
from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus, Batch, Render
from producer.imports import import_catalog
from producer.review.app import create_app
from producer.review.sheet_query import PAGE_SIZE
from tasks.app import configure
from tasks.settings import Settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=9)
    return parser.parse_args(argv)


def fill(url: str, articles: int, folder: Path) -> str:
    """Store a finished batch of ``articles`` articles, each with one scored render.

    Returns:
        The batch id.
    """
    image = folder / "one.png"
    Image.new("RGB", (64, 64), (200, 180, 160)).save(image)
    sessions = session_factory(make_engine(url))
    with sessions() as session:
        stored = import_catalog(session, synthetic_rows(articles), "bench", {"profile": "bench"})
        batch_id = stored.batch_id
        ids = list(session.scalars(select(Article.id).where(Article.batch_id == batch_id)))
    engine = sessions.kw["bind"]
    with engine.begin() as connection:
        connection.execute(
            update(Article)
            .where(Article.batch_id == batch_id)
            .values(status=ArticleStatus.done.value, image_path=str(image),
                    clip_score=(Article.id % 97) * 0.3 + 5.0)
        )  # fmt: skip
        connection.execute(insert(Render), [_render(article_id, image) for article_id in ids])
    engine.dispose()
    return batch_id


def _render(article_id: int, image: Path) -> dict:
    return {
        "article_id": article_id, "attempt": 1, "seed": article_id, "model_id": "bench",
        "width": 64, "height": 64, "steps": 1, "image_path": str(image), "seconds": 0.0,
        "worker": "bench", "clip_score": (article_id % 97) * 0.3 + 5.0,
    }  # fmt: skip


def time_pages(url: str, batch_id: str, articles: int, repeats: int) -> dict[str, float]:
    """Median milliseconds of each page, served by the studio over ``url``."""
    settings = Settings(database_url=url, broker_url="memory://")
    sessions = session_factory(make_engine(url))
    with sessions() as session:
        article_id = session.scalar(select(Article.id).where(Article.batch_id == batch_id))
        assert session.get(Batch, batch_id) is not None
    app = create_app(settings, sessions, configure(settings), bound_to_loopback=True)
    last = -(-articles // PAGE_SIZE)
    pages = {
        "batches": "/",
        "sheet first page": f"/batches/{batch_id}",
        "sheet last page": f"/batches/{batch_id}?page={last}",
        "below 20, by score": f"/batches/{batch_id}?filter=below&below=20&sort=score&page=3",
        "article": f"/articles/{article_id}",
    }
    timings = {}
    # A request from this machine: a studio without users shows its pages to those only.
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        for name, path in pages.items():
            client.get(path).raise_for_status()
            seconds = []
            for _ in range(repeats):
                started = time.perf_counter()
                client.get(path).raise_for_status()
                seconds.append(time.perf_counter() - started)
            timings[name] = statistics.median(seconds) * 1000
    sessions.kw["bind"].dispose()
    return timings


def main(argv: list[str] | None = None) -> None:
    """Fill both databases, time the pages, print the medians."""
    args = parse_args(argv)
    slowest = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-studio-") as scratch:
        folder = Path(scratch)
        sqlite_url = f"sqlite:///{folder / 'farm.db'}"
        migrate(make_engine(sqlite_url))
        with fresh_database("farm_bench_studio") as pg_url:
            for kind, url in (("sqlite", sqlite_url), ("postgresql", pg_url)):
                batch_id = fill(url, args.articles, folder)
                timings = time_pages(url, batch_id, args.articles, args.repeats)
                for name, ms in timings.items():
                    print(f"{kind:10} {name:20} {ms:8.1f} ms")
                if kind == "postgresql":
                    slowest = max(timings.values())
    print(f"studio_page_ms: {slowest:.1f}")


if __name__ == "__main__":
    main()
