"""``farm status`` for people: counts from a real SQLite database (removed articles left out),
an exponentially weighted rate and ETA, and a layout that fits 80 columns."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from rich.console import Console
from sqlalchemy import select

from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus, Batch, utcnow
from producer.progress import (
    batch_details,
    batch_summaries,
    eta_seconds,
    ewma_rate,
    stage_progress,
    status_counts,
)
from producer.status_view import duration, render_status, share, shorten_middle

BATCH = "20261201-063321-a1b2c3"
CATALOG = "article_descriptions_1.xlsx+article_descriptions_2.xlsx"
HALF_LIFE = 180.0


# --- the rate -------------------------------------------------------------------------------


def test_a_steady_rate_after_a_slow_start_gives_an_honest_eta():
    # Five minutes of loading and filling the pipeline, then one article a second for 30 s.
    finished = [300.0 + i for i in range(30)]
    rate = ewma_rate(finished, now=330.0, half_life=HALF_LIFE)
    assert rate == pytest.approx(1.0, rel=0.1)
    assert 90 < eta_seconds(100, rate) < 115
    # What a fixed ten-minute window made of it: ten times too pessimistic.
    assert 100 / (30 / 600) == 2000


def test_recent_finishes_outweigh_old_ones():
    # An hour at one article every 10 s, then the last five minutes at one a second.
    slow = [float(t) for t in range(0, 3600, 10)]
    fast = [3600.0 + i for i in range(1, 301)]
    rate = ewma_rate(slow + fast, now=3900.0, half_life=HALF_LIFE)
    assert 0.6 < rate < 1.0


def test_a_stalled_batch_loses_its_rate():
    finished = [300.0 + i for i in range(30)]
    rates = [ewma_rate(finished, now, HALF_LIFE) for now in (330, 600, 1200, 2000)]
    assert rates == sorted(rates, reverse=True)
    assert rates[1] < rates[0] / 3
    assert rates[-1] == 0.0  # over eight half-lives without a finish: no rate at all
    assert eta_seconds(10, rates[-1]) is None


def test_the_rate_starts_again_after_a_pause():
    # A batch done yesterday, 30 articles requeued today and going at one a second.
    yesterday = [float(t) for t in range(100)]
    today = [86_400.0 + i for i in range(30)]
    rate = ewma_rate(yesterday + today, now=86_430.0, half_life=HALF_LIFE)
    assert rate == pytest.approx(1.0, rel=0.1)


def test_slow_regular_work_is_not_a_pause():
    # One article every ten minutes, longer than two half-lives, every time.
    finished = [600.0 * i for i in range(10)]
    rate = ewma_rate(finished, now=5_500.0, half_life=HALF_LIFE)
    assert 1 / 1200 < rate < 1 / 200  # noisy with spacings over the half-life, but there
    # A half-life longer than the spacing smooths it out.
    assert ewma_rate(finished, now=5_500.0, half_life=1800) == pytest.approx(1 / 600, rel=0.2)


def test_articles_ending_together_count_each():
    # Score batches of 8 articles, one batch every 8 s.
    finished = [100.0 + 8 * (i // 8) for i in range(80)]
    assert ewma_rate(finished, now=176.0, half_life=HALF_LIFE) == pytest.approx(1.0, rel=0.1)


@pytest.mark.parametrize("finished", [[], [5.0], [5.0, 5.0, 5.0]])
def test_no_rate_from_a_single_moment(finished):
    assert ewma_rate(finished, now=10.0, half_life=HALF_LIFE) == 0.0


def test_eta_of_nothing_left_is_zero():
    assert eta_seconds(0, 0.0) == 0.0
    assert eta_seconds(5, 0.5) == 10.0


# --- counts from the database ---------------------------------------------------------------


@pytest.fixture
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    migrate(engine)
    return session_factory(engine)


def _article(row: int, status: ArticleStatus, **values) -> Article:
    return Article(
        batch_id=BATCH,
        key=f"SKU-{row}",
        file_stem=f"stem{row}",
        source_file="article_descriptions_1.xlsx",
        source_sheet="Artikel",
        source_row=row,
        source_text="Bluse aus Baumwolle",
        status=status.value,
        **values,
    )


@pytest.fixture
def batch(sessions):
    """Ten current articles in every state, and two removed ones (one done, one failed)."""
    now = utcnow()
    statuses = [ArticleStatus.pending] * 2 + [ArticleStatus.translated]
    statuses += [ArticleStatus.extracted] * 2 + [ArticleStatus.rendered]
    with sessions() as session:
        session.add(Batch(id=BATCH, catalog=CATALOG, profile="tiny"))
        rows = [_article(i, status) for i, status in enumerate(statuses)]
        for i, score in enumerate((0.31, 0.27)):
            rows.append(
                _article(
                    10 + i,
                    ArticleStatus.done,
                    clip_score=score,
                    finished_at=now - timedelta(seconds=20 - 10 * i),
                )
            )
        rows.append(
            _article(
                12,
                ArticleStatus.needs_review,
                clip_score=0.12,
                finished_at=now - timedelta(seconds=5),
            )
        )
        rows.append(_failed(13, "render", "RenderError", now - timedelta(seconds=2)))
        removed = now - timedelta(minutes=1)
        rows.append(_article(20, ArticleStatus.done, clip_score=0.99, removed_at=removed))
        rows.append(_failed(21, "translate", "Removed", now, removed_at=removed))
        session.add_all(rows)
        session.commit()
    return BATCH


def _failed(row, stage, kind, finished, **values) -> Article:
    article = _article(row, ArticleStatus.failed, finished_at=finished, **values)
    article.error_stage, article.error_kind, article.error = stage, kind, "out of memory"
    return article


def test_summaries_leave_removed_articles_out_and_count_them(sessions, batch):
    with sessions() as session:
        (summary,) = batch_summaries(session)
        counts = status_counts(session)
    assert summary["catalog"] == CATALOG
    assert summary["total"] == 10 and summary["removed"] == 2
    assert summary["done"] == 2 and summary["failed"] == 1
    assert summary["failed_by_stage"] == {"render": 1}
    assert summary["percent"]["pending"] == 20.0
    assert counts[BATCH]["done"] == 2


def test_stage_progress_follows_the_registry(sessions, batch):
    with sessions() as session:
        (summary,) = batch_summaries(session)
    progress = stage_progress(summary)
    # 2 pending, 1 translated, 2 extracted, 1 rendered, 3 through, 1 failed at render.
    assert progress["translate"] == {"passed": 8, "failed": 0, "total": 10}
    assert progress["extract"] == {"passed": 7, "failed": 0, "total": 10}
    assert progress["render"] == {"passed": 4, "failed": 1, "total": 10}
    assert progress["score"] == {"passed": 3, "failed": 0, "total": 9}


def test_a_failure_without_a_stage_counts_at_the_first():
    summary = {s.value: 0 for s in ArticleStatus} | {"total": 3, "failed": 1, "done": 2}
    summary["failed_by_stage"] = {"unknown": 1}
    progress = stage_progress(summary)
    assert progress["translate"] == {"passed": 2, "failed": 1, "total": 3}
    assert progress["score"] == {"passed": 2, "failed": 0, "total": 2}


def test_details_keep_their_keys_and_leave_removed_articles_out(sessions, batch):
    with sessions() as session:
        (summary,) = batch_summaries(session)
        details = batch_details(session, summary, half_life_minutes=3.0)
    merged = summary | details
    json.dumps(merged)  # what `farm status --json` prints
    for key in ("id", "created_at", "total", "stages", "rate_per_hour", "eta_seconds"):
        assert key in merged
    assert details["failures"] == {
        "RenderError": {
            "count": 1,
            "example": {"key": "SKU-13", "stage": "render", "error": "out of memory"},
        }
    }
    assert details["scores"]["max"] == pytest.approx(0.31)
    assert details["stages"]["render"] == {
        "queued": 2, "running": 0, "passed": 4, "failed": 1, "total": 10,
    }  # fmt: skip
    # Four finishes 18 s apart in all: three after the first, over ~18 s.
    assert details["rate_per_hour"] == pytest.approx(3 / 18 * 3600, rel=0.25)
    assert details["eta_seconds"] == pytest.approx(6 / (details["rate_per_hour"] / 3600))


def _ended_batch(sessions, end) -> None:
    """Six articles, one every ten seconds over the minute before ``end``, each through a
    run of each stage; then a night's pause and one more, requeued the next morning."""
    from db.models import StageRun

    with sessions() as session:
        session.add(Batch(id=BATCH, catalog=CATALOG, profile="tiny"))
        articles = []
        for i in range(6):
            finished = end - timedelta(hours=12, seconds=50 - 10 * i)
            articles.append((_article(i, ArticleStatus.done, finished_at=finished), finished))
        articles.append((_article(6, ArticleStatus.done, finished_at=end), end))
        session.add_all([article for article, _ in articles])
        session.flush()
        for article, finished in articles:
            for step, stage in enumerate(("translate", "extract", "render", "score")):
                started = finished - timedelta(seconds=20 - 5 * step)
                session.add(StageRun(article_id=article.id, stage=stage, attempt=1,
                                     worker="local@farm", outcome="ok", started_at=started,
                                     seconds=5.0))  # fmt: skip
        session.commit()


def test_an_ended_batch_keeps_the_rate_it_had_at_its_end(sessions, monkeypatch):
    end = utcnow() - timedelta(days=2)
    _ended_batch(sessions, end)

    def details_at(moment):
        monkeypatch.setattr("producer.progress.utcnow", lambda: moment)
        with sessions() as session:
            (summary,) = batch_summaries(session)
            return summary | batch_details(session, summary, half_life_minutes=3.0)

    at_end = details_at(end)
    # Seven articles over the active time: the first 70 s (six finishes 10 s apart, the first
    # started 20 s before it) and the requeued article's 20 s, not the night between them.
    assert at_end["rate_per_hour"] == pytest.approx(7 / 90 * 3600, rel=0.01)
    for later in (timedelta(minutes=13), timedelta(days=2)):
        assert details_at(end + later)["rate_per_hour"] == at_end["rate_per_hour"]
    text = _render([at_end], 80)
    assert f"rate {at_end['rate_per_hour']:.0f} articles/hour · every article ended" in text


def test_summaries_count_review_verdicts_and_status_shows_them_with_the_views(sessions, batch):
    with sessions() as session:
        session.get(Batch, BATCH).views = ["front", "back"]
        articles = {a.source_row: a for a in session.scalars(select(Article))}
        articles[10].review_status, articles[10].reviewed_by = "approved", "mia"
        articles[11].review_status = articles[12].review_status = "rejected"
        articles[20].review_status = "approved"  # removed: counts nowhere
        session.commit()
        (summary,) = batch_summaries(session)
        details = batch_details(session, summary)
    assert summary["review"] == {"approved": 1, "rejected": 2, "unreviewed": 7}
    assert summary["views"] == ["front", "back"]
    json.dumps(summary)  # what `farm status --json` prints
    text = _render([summary | details], 80)
    assert "review: approved 1 · rejected 2 · unreviewed 7 · views: front, back" in text


def test_the_views_get_a_line_of_their_own_when_both_do_not_fit():
    review = {"approved": 123456, "rejected": 123456, "unreviewed": 123456}
    views = ["front", "back", "side", "detail"]
    lines = _render([_synthetic() | {"review": review, "views": views}], 80).splitlines()
    assert "  review: approved 123456 · rejected 123456 · unreviewed 123456" in lines
    assert "  views: front, back, side, detail" in lines


def test_a_front_only_batch_shows_no_views(sessions, batch):
    with sessions() as session:
        (summary,) = batch_summaries(session)
    assert summary["views"] == ["front"]
    text = _render([summary], 80)
    assert "review: approved 0 · rejected 0 · unreviewed 10" in text
    assert "views" not in text


def test_an_empty_batch_has_every_count(sessions):
    with sessions() as session:
        session.add(Batch(id="empty", catalog="x.csv", profile="tiny"))
        session.commit()
        (summary,) = batch_summaries(session)
        details = batch_details(session, summary)
    assert summary["total"] == 0 and summary["pending"] == 0
    assert details["eta_seconds"] == 0.0
    assert "every article ended" in _render([summary | details], 80)


# --- the layout -----------------------------------------------------------------------------


def _render(batches: list[dict], width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render_status(batches))
    return console.export_text()


def _synthetic(batch_id: str = BATCH, catalog: str = CATALOG + "+extra_sheet_three.xlsx"):
    counts = {"pending": 1234, "translated": 56, "extracted": 2100, "rendered": 310}
    counts |= {"done": 5890, "needs_review": 402, "failed": 8}
    total = sum(counts.values())
    summary = {"id": batch_id, "catalog": catalog, "created_at": utcnow().isoformat()}
    summary |= {"total": total, **counts, "removed": 3, "failed_by_stage": {"extract": 8}}
    return summary | {
        "stages": {
            name: {"queued": 10, "running": 2}
            for name in ("translate", "extract", "render", "score")
        },
        "rate_per_hour": 4210.5,
        "eta_seconds": 3 * 3600 + 12 * 60,
        "scores": {"mean": 0.28, "median": 0.29, "min": 0.12, "max": 0.35},
        "failures": {
            "InvalidArticle": {
                "count": 8,
                "example": {"key": "SKU-" + "9" * 40, "stage": "extract", "error": "x " * 200},
            }
        },
    }


@pytest.mark.parametrize("width", [80, 120])
def test_status_fits_the_terminal_and_shows_whole_batch_ids(width):
    batches = [_synthetic(), _synthetic("20261202-101010-ffee00", "short.csv")]
    text = _render(batches, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    for line_start in (BATCH, "20261202-101010-ffee00  short.csv"):
        assert any(line.startswith(line_start) for line in lines)
    assert "3 removed" in text
    assert "done 5890 (59%)" in text and "failed 8 (<1%)" in text
    assert "ETA 3h12m" in text and "4210 articles/hour" in text
    assert "pendi…" not in text


def test_a_long_catalog_name_loses_its_middle_at_80_columns_only():
    narrow = _render([_synthetic()], 80).splitlines()[0]
    wide = _render([_synthetic()], 120).splitlines()[0]
    assert narrow.startswith(BATCH + "  article_descriptions_1.xlsx") and "…" in narrow
    assert narrow.endswith("three.xlsx") and len(narrow) == 80
    assert wide == f"{BATCH}  {CATALOG}+extra_sheet_three.xlsx"


def test_a_narrow_terminal_puts_the_catalog_on_its_own_line():
    lines = _render([_synthetic()], 36).splitlines()
    assert lines[0] == BATCH
    assert lines[1].startswith("article_") and len(lines[1]) == 36


def test_unknown_eta_says_why():
    text = _render([_synthetic() | {"eta_seconds": None, "rate_per_hour": 0.0}], 80)
    assert "ETA unknown (no article ended lately)" in text


def test_catalog_names_are_not_markup():
    text = _render([_synthetic(catalog="[bold]sale[/bold].xlsx")], 80)
    assert "[bold]sale[/bold].xlsx" in text


@pytest.mark.parametrize(
    ("text", "width", "short"),
    [("abcdef", 10, "abcdef"), ("abcdefghij", 5, "ab…ij"), ("abcdefghij", 6, "abc…ij")],
)
def test_shorten_middle(text, width, short):
    assert shorten_middle(text, width) == short


@pytest.mark.parametrize(
    ("count", "total", "text"),
    [(0, 10, "0%"), (1, 1000, "<1%"), (999, 1000, ">99%"), (10, 10, "100%"), (1, 3, "33%")],
)
def test_share(count, total, text):
    assert share(count, total) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(42, "42s"), (250, "4m10s"), (3900, "1h05m"), (3 * 86400 + 4 * 3600, "3d04h")],
)
def test_duration(seconds, text):
    assert duration(seconds) == text
