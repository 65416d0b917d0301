"""Requeue planning and catalog re-import on SQLite (no broker involved)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus, Render, StageRun
from producer import requeue
from producer.catalog import CatalogRow
from producer.imports import catalog_name, content_hash, import_catalog
from tasks.exceptions import SelectionError

SHAPE = {"profile": "tiny", "width": None}


@pytest.fixture
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    migrate(engine)
    return session_factory(engine)


def row(key: str, description: str = "Rock aus Wolle") -> CatalogRow:
    return CatalogRow("c.csv", "csv", 2, key, "Rock", description, "Rock", "rot")


def test_import_then_reimport_counts_new_changed_and_unchanged(sessions):
    with sessions() as session:
        first = import_catalog(session, [row("A"), row("B")], "c.csv", SHAPE)
    assert (first.created, first.new, first.changed, first.unchanged) == (True, 2, 0, 0)
    with sessions() as session:
        again = import_catalog(
            session, [row("A"), row("B", "Rock aus Leinen"), row("C")], "c.csv", SHAPE
        )
    assert again.batch_id == first.batch_id and not again.created
    assert (again.new, again.changed, again.unchanged) == (1, 1, 1)
    assert [key for _id, key in again.to_send] == ["C", "B"]


def test_the_content_hash_covers_the_settings_that_shape_the_output():
    assert content_hash(row("A"), SHAPE) == content_hash(row("A"), dict(SHAPE))
    assert content_hash(row("A"), SHAPE) != content_hash(row("A"), SHAPE | {"width": 512})
    assert content_hash(row("A"), SHAPE) != content_hash(row("A", "anders"), SHAPE)


def test_a_new_batch_is_started_on_request_and_catalog_names_come_from_file_names(sessions):
    with sessions() as session:
        first = import_catalog(session, [row("A")], "x", SHAPE)
        second = import_catalog(session, [row("A")], "x", SHAPE, new_batch=True)
    assert first.batch_id != second.batch_id and second.new == 1
    assert catalog_name(["/a/z.csv", "b/a.xlsx"]) == "a.xlsx+z.csv"


def finished_article(sessions, status=ArticleStatus.done, renders=1) -> int:
    with sessions() as session:
        result = import_catalog(session, [row("A")], "c", SHAPE)
    with sessions() as session, session.begin():
        article = session.get(Article, result.to_send[0][0])
        article.status = status.value
        article.error_stage = "score" if status == ArticleStatus.failed else None
        article.translation, article.clip_score = "Skirt", 20.0
        for attempt in range(1, renders + 1):
            session.add(
                Render(article_id=article.id, attempt=attempt, seed=attempt, model_id="m",
                       width=8, height=8, steps=1, image_path="x.png", seconds=0.1,
                       worker="w", clip_score=20.0)
            )  # fmt: skip
        article.render_attempt = renders
    return article.id


def test_requeue_from_render_makes_a_new_attempt_and_keeps_earlier_attempts_comparable(sessions):
    article_id = finished_article(sessions, renders=2)
    with sessions() as session:
        chosen = requeue.select_articles(session, requeue.Selection(keys=["A"]), 60)
        plans = requeue.plan(chosen)
        assert [p.from_stage for p in plans] == ["render"]
        requeue.apply(session, plans)
    with sessions() as session:
        article = session.get(Article, article_id)
        assert article.status == ArticleStatus.extracted.value
        assert (article.render_attempt, article.attempt_base) == (3, 1)
        assert article.clip_score is None and article.translation == "Skirt"
        assert article.requeues == 1


def test_requeue_from_translate_starts_a_new_attempt_base(sessions):
    article_id = finished_article(sessions, ArticleStatus.failed, renders=1)
    with sessions() as session:
        requeue.apply(session, requeue.plan([session.get(Article, article_id)], "translate"))
    with sessions() as session:
        article = session.get(Article, article_id)
        assert article.status == ArticleStatus.pending.value
        assert article.translation is None
        assert article.render_attempt == article.attempt_base == 2


def test_a_stuck_article_resumes_at_its_stage_without_losing_its_attempt(sessions):
    with sessions() as session:
        result = import_catalog(session, [row("A"), row("B")], "c", SHAPE)
    with sessions() as session, session.begin():
        stuck = session.get(Article, result.to_send[0][0])
        stuck.status = ArticleStatus.extracted.value
        stuck.updated_at = stuck.updated_at - timedelta(hours=1)
    with sessions() as session:
        chosen = requeue.select_articles(session, requeue.Selection(stuck=True), 60)
        assert [a.key for a in chosen] == ["A"]  # B is pending but recent: in flight
        requeue.apply(session, requeue.plan(chosen))
    with sessions() as session:
        article = session.scalars(select(Article).where(Article.key == "A")).one()
        assert article.status == ArticleStatus.extracted.value
        assert article.render_attempt == 1 and article.requeues == 1


def test_articles_in_flight_are_not_requeued(sessions):
    with sessions() as session:
        import_catalog(session, [row("A")], "c", SHAPE)
        assert requeue.select_articles(session, requeue.Selection(keys=["A"]), 60) == []


def test_a_requeue_closes_the_runs_left_running_by_a_worker_that_vanished(sessions):
    article_id = finished_article(sessions, ArticleStatus.failed, renders=1)
    with sessions() as session:
        session.add(StageRun(article_id=article_id, stage="score", attempt=1, worker="gone@host"))
        session.commit()
        requeue.apply(session, requeue.plan([session.get(Article, article_id)], "render"))
    with sessions() as session:
        outcomes = session.scalars(select(StageRun.outcome)).all()
    assert outcomes == ["lost"]


def scored_batch(sessions, scores: dict[str, tuple[float, str, int]]) -> None:
    """Articles with (best score, status, render attempts made) each."""
    with sessions() as session:
        import_catalog(session, [row(key) for key in scores], "c", SHAPE, min_clip_score=20.0)
    with sessions() as session, session.begin():
        for article in session.scalars(select(Article)):
            score, status, attempts = scores[article.key]
            article.clip_score, article.status, article.render_attempt = score, status, attempts


def test_a_new_threshold_on_resubmit_judges_the_scored_articles_again(sessions):
    done, review = ArticleStatus.done.value, ArticleStatus.needs_review.value
    scored_batch(sessions, {"A": (25.0, done, 1), "B": (22.0, done, 1), "C": (22.0, done, 3),
                            "D": (18.0, review, 3), "E": (29.0, done, 1)})  # fmt: skip
    with sessions() as session:
        again = import_catalog(
            session, [row(k) for k in "ABCDE"], "c", SHAPE, min_clip_score=24.0, max_attempts=3
        )
    assert (again.recheck.to_review, again.recheck.to_done) == (1, 0)
    assert again.to_send == [(again.recheck.regenerate[0][0], "B", "render")]
    with sessions() as session:
        status = {a.key: a.status for a in session.scalars(select(Article))}
    assert status == {"A": done, "B": ArticleStatus.extracted.value, "C": review,
                      "D": review, "E": done}  # fmt: skip

    with sessions() as session:
        lower = import_catalog(
            session, [row(k) for k in "ABCDE"], "c", SHAPE, min_clip_score=15.0, max_attempts=3
        )
    assert (lower.recheck.to_done, lower.recheck.regenerate) == (2, [])


def test_resubmitting_with_the_same_threshold_judges_nothing_again(sessions):
    scored_batch(sessions, {"A": (10.0, ArticleStatus.done.value, 1)})
    with sessions() as session:
        again = import_catalog(session, [row("A")], "c", SHAPE, min_clip_score=20.0)
    assert again.recheck is None and again.to_send == []


def test_a_resumed_import_sends_the_unfinished_articles_from_their_stage(sessions):
    with sessions() as session:
        first = import_catalog(session, [row("A"), row("B"), row("C")], "c", SHAPE)
    with sessions() as session, session.begin():
        a, b, c = (session.get(Article, i) for i, _key in first.to_send)
        a.status, b.status = ArticleStatus.done.value, ArticleStatus.extracted.value
    with sessions() as session:
        resumed = import_catalog(session, [row("A"), row("B"), row("C")], "c", SHAPE, resume=True)
    assert resumed.resumed == 2 and resumed.new == 0
    assert [item[1:] for item in resumed.to_send] == [("B", "render"), ("C", "translate")]


def test_requeue_refuses_unknown_batches_and_names_unknown_keys(sessions):
    with sessions() as session:
        batch = import_catalog(session, [row("A")], "c", SHAPE).batch_id
        with pytest.raises(SelectionError, match="no batch 'nope'"):
            requeue.select_articles(session, requeue.Selection(batch="nope"), 60)
        with pytest.raises(SelectionError, match="'X', 'Y'"):
            requeue.select_articles(session, requeue.Selection(batch, keys=["A", "X", "Y"]), 60)


def test_requeue_refuses_a_stage_whose_inputs_an_article_lacks_and_names_the_stage_to_use(
    sessions,
):
    with sessions() as session:
        result = import_catalog(session, [row("A")], "c", SHAPE)
    with sessions() as session, session.begin():
        article = session.get(Article, result.to_send[0][0])
        article.status, article.error_stage = ArticleStatus.failed.value, "extract"
    with sessions() as session:
        failed = [session.get(Article, result.to_send[0][0])]
        with pytest.raises(SelectionError, match="use --from-stage extract"):
            requeue.plan(failed, "render")
        assert [p.from_stage for p in requeue.plan(failed, "translate")] == ["translate"]
