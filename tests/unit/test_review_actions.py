"""Review actions over a real SQLite database and the farm's own chains on kombu's memory
broker: verdicts, regeneration, edits, bulk actions, roles and the stored history."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus, Batch, Render, ReviewAction
from producer.review.actions import (
    Reviewer,
    ReviewRefused,
    approve,
    approve_above,
    edit_attributes,
    edit_prompt,
    regenerate_below,
    reject_and_regenerate,
)
from tasks.app import configure
from tasks.queues import GPU_QUEUE
from tasks.settings import Settings
from workers.prompts import clip_prompt, generation_prompt

RITA = Reviewer("rita", "reviewer")
ADA = Reviewer("ada", "admin")
ATTRIBUTES = {
    "product_type": "blouse",
    "key_visual_features": "ruffled collar",
    "color_material_details": "white cotton",
    "design_aspects": "long sleeves",
}


@pytest.fixture
def app():
    farm = configure(Settings(broker_url="memory://"))
    with farm.connection_for_write() as connection:
        connection.SimpleQueue(GPU_QUEUE).clear()
    return farm


def queued(app) -> int:
    """Messages waiting in the GPU queue of the memory broker."""
    with app.connection_for_write() as connection:
        return connection.SimpleQueue(GPU_QUEUE).qsize()


@pytest.fixture
def sessions(tmp_path):
    """Batch b1: four finished articles scoring 0.1 to 0.4, one still extracting, one that
    failed before it had a prompt."""
    engine = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    migrate(engine)
    factory = session_factory(engine)
    with factory() as session:
        session.add(Batch(id="b1", profile="tiny"))
        for number, score in enumerate((0.1, 0.2, 0.3, 0.4), start=1):
            image = tmp_path / f"A{number}.png"
            image.write_bytes(b"png")
            article = _article(f"A{number}", ArticleStatus.done, score=score, image=str(image))
            session.add(article)
            session.flush()
            session.add(
                Render(
                    article_id=article.id, attempt=1, seed=1, model_id="m", width=8, height=8,
                    steps=1, image_path=str(image), seconds=0.1, worker="w", clip_score=score,
                )
            )  # fmt: skip
        session.add(_article("BUSY", ArticleStatus.translated))
        failed = _article("EARLY", ArticleStatus.failed)
        failed.error_stage, failed.generation_prompt = "extract", None
        session.add(failed)
        session.commit()
    return factory


def _article(key, status, score=None, image=None) -> Article:
    return Article(
        batch_id="b1", key=key, file_stem=key, source_file="c.csv", source_sheet="csv",
        source_row=2, source_text="Bluse", status=status.value, clip_score=score,
        image_path=image, attributes=dict(ATTRIBUTES),
        generation_prompt=generation_prompt(ATTRIBUTES), clip_prompt=clip_prompt(ATTRIBUTES),
    )  # fmt: skip


def by_key(session, key: str) -> Article:
    return session.scalar(select(Article).where(Article.key == key))


def history(session, key: str) -> list[tuple[str, str]]:
    article = by_key(session, key)
    query = select(ReviewAction).where(ReviewAction.article_id == article.id)
    return [(a.user, a.action) for a in session.scalars(query.order_by(ReviewAction.id))]


def test_approving_records_the_verdict_who_and_the_history(sessions):
    with sessions() as session:
        ids = [by_key(session, "A1").id, by_key(session, "A2").id]
        assert approve(session, ids, RITA) == 2
        assert approve(session, ids, RITA) == 0  # approved already: nothing more recorded
        article = by_key(session, "A1")
        assert (article.review_status, article.reviewed_by) == ("approved", "rita")
        assert article.reviewed_at is not None
        assert history(session, "A1") == [("rita", "approved")]


def test_approving_an_article_without_a_finished_picture_is_refused(sessions):
    with sessions() as session, pytest.raises(ReviewRefused, match="nothing to approve"):
        approve(session, [by_key(session, "BUSY").id], RITA)


def test_rejecting_sends_a_new_render_attempt_and_leaves_earlier_attempts_out(sessions, app):
    with sessions() as session:
        article_id = by_key(session, "A2").id
        reject_and_regenerate(session, app, article_id, RITA)
    with sessions() as session:
        article = session.get(Article, article_id)
        assert article.status == ArticleStatus.extracted.value
        assert (article.render_attempt, article.attempt_base) == (2, 2)
        assert article.review_status == "rejected"
        assert article.image_path is None and article.clip_score is None
        assert article.sent_at is not None
        assert history(session, "A2") == [("rita", "rejected")]
    assert queued(app) == 1


def test_an_article_still_in_flight_cannot_be_regenerated(sessions, app):
    with sessions() as session:
        busy = by_key(session, "BUSY").id
        with pytest.raises(ReviewRefused, match="still being worked on"):
            reject_and_regenerate(session, app, busy, RITA)
        with pytest.raises(ReviewRefused, match="no prompt"):
            reject_and_regenerate(session, app, by_key(session, "EARLY").id, RITA)
    assert queued(app) == 0


def test_editing_attributes_rebuilds_both_prompts_and_stores_before_and_after(sessions, app):
    edited = ATTRIBUTES | {"product_type": "tunic", "key_visual_features": "embroidered hem"}
    with sessions() as session:
        article_id = by_key(session, "A3").id
        edit_attributes(session, app, article_id, edited, RITA)
    with sessions() as session:
        article = session.get(Article, article_id)
        assert article.attributes == edited
        assert article.generation_prompt == generation_prompt(edited)
        assert article.clip_prompt == clip_prompt(edited)
        assert article.status == ArticleStatus.extracted.value
        (action,) = session.scalars(select(ReviewAction)).all()
        assert action.action == "edit_attributes"
        assert action.before["attributes"] == ATTRIBUTES
        assert action.after["generation_prompt"] == generation_prompt(edited)
    assert queued(app) == 1


def test_editing_the_prompt_renders_again_from_the_new_prompt(sessions, app):
    with sessions() as session:
        article_id = by_key(session, "A4").id
        with pytest.raises(ReviewRefused, match="empty"):
            edit_prompt(session, app, article_id, "   ", RITA)
        edit_prompt(session, app, article_id, "  a white   blouse, studio light ", RITA)
    with sessions() as session:
        article = session.get(Article, article_id)
        assert article.generation_prompt == "a white blouse, studio light"
        assert history(session, "A4") == [("rita", "edit_prompt")]
    assert queued(app) == 1


def test_only_an_admin_acts_on_a_whole_batch(sessions, app):
    with sessions() as session:
        with pytest.raises(ReviewRefused, match="only an admin"):
            regenerate_below(session, app, "b1", 0.35, RITA)
        with pytest.raises(ReviewRefused, match="only an admin"):
            approve_above(session, "b1", 0.0, RITA)
        assert session.scalars(select(ReviewAction)).all() == []
    assert queued(app) == 0


def test_regenerating_below_a_threshold_leaves_approved_and_higher_articles_alone(sessions, app):
    with sessions() as session:
        approve(session, [by_key(session, "A1").id], RITA)
        assert regenerate_below(session, app, "b1", 0.35, ADA) == 2  # A2 and A3, not A1 or A4
    with sessions() as session:
        attempts = {key: by_key(session, key).render_attempt for key in ("A1", "A2", "A3", "A4")}
        assert attempts == {"A1": 1, "A2": 2, "A3": 2, "A4": 1}
    assert queued(app) == 2


def test_approving_above_a_threshold_approves_only_finished_pictures_at_or_over_it(sessions):
    with sessions() as session:
        assert approve_above(session, "b1", 0.3, ADA) == 2
        approved = session.scalars(
            select(Article.key).where(Article.review_status == "approved").order_by(Article.key)
        ).all()
        assert approved == ["A3", "A4"]


def test_a_regeneration_with_the_broker_away_changes_nothing(sessions):
    away = configure(Settings(broker_url="redis://127.0.0.1:1/0"))
    with sessions() as session:
        article_id = by_key(session, "A2").id
        with pytest.raises(ReviewRefused, match="nothing was changed"):
            reject_and_regenerate(session, away, article_id, RITA)
    with sessions() as session:
        article = session.get(Article, article_id)
        assert (article.status, article.review_status) == (ArticleStatus.done.value, None)
        assert session.scalars(select(ReviewAction)).all() == []


def test_a_new_picture_clears_the_verdict_on_the_old_one(sessions, app):
    with sessions() as session:
        article_id = by_key(session, "A1").id
        approve(session, [article_id], RITA)
        edit_prompt(session, app, article_id, "a white blouse on a hanger", RITA)
    with sessions() as session:
        article = session.get(Article, article_id)
        assert (article.review_status, article.reviewed_by, article.reviewed_at) == (None,) * 3
        assert history(session, "A1") == [("rita", "approved"), ("rita", "edit_prompt")]


def test_a_second_reject_of_the_same_picture_is_refused_and_sends_nothing(sessions, app):
    with sessions() as session:
        article_id = by_key(session, "A2").id
        reject_and_regenerate(session, app, article_id, RITA, seen_attempt=1)
    with sessions() as session, pytest.raises(ReviewRefused, match="still being worked on"):
        reject_and_regenerate(session, app, article_id, ADA, seen_attempt=1)
    with sessions() as session:
        session.execute(
            Article.__table__.update()
            .where(Article.id == article_id)
            .values(status=ArticleStatus.done.value, render_attempt=2)
        )  # the new attempt landed: the old page still says attempt 1
        session.commit()
        with pytest.raises(ReviewRefused, match="changed meanwhile .*attempt 2.*reload"):
            reject_and_regenerate(session, app, article_id, ADA, seen_attempt=1)
        with pytest.raises(ReviewRefused, match="changed meanwhile"):
            approve(session, [article_id], ADA, seen={article_id: 1})
        assert history(session, "A2") == [("rita", "rejected")]
    assert queued(app) == 1


def test_an_article_a_worker_holds_is_left_alone(sessions, app):
    with sessions() as session:
        article = by_key(session, "A3")
        article.lease_token = "someone.else"
        session.commit()
        with pytest.raises(ReviewRefused, match="still being worked on"):
            edit_prompt(session, app, article.id, "a blouse", RITA)
        with pytest.raises(ReviewRefused, match="nothing to approve"):
            approve(session, [article.id], RITA)
        assert regenerate_below(session, app, "b1", 1.0, ADA) == 3  # A1, A2, A4: not A3
    assert queued(app) == 3


def test_editing_some_attributes_keeps_the_others_and_refuses_unknown_names(sessions, app):
    with sessions() as session:
        article_id = by_key(session, "A4").id
        with pytest.raises(ReviewRefused, match="no attribute colour"):
            edit_attributes(session, app, article_id, {"colour": "red"}, RITA)
        edit_attributes(session, app, article_id, {"product_type": "tunic"}, RITA)
    with sessions() as session:
        assert session.get(Article, article_id).attributes == ATTRIBUTES | {"product_type": "tunic"}
    assert queued(app) == 1


@pytest.mark.parametrize("action", ["edit_prompt", "edit_attributes", "regenerate_below"])
def test_any_regeneration_with_the_broker_away_changes_nothing(sessions, action):
    away = configure(Settings(broker_url="redis://127.0.0.1:1/0"))
    with sessions() as session:
        article_id = by_key(session, "A1").id
        calls = {
            "edit_prompt": lambda: edit_prompt(session, away, article_id, "a blouse", RITA),
            "edit_attributes": lambda: edit_attributes(
                session, away, article_id, {"product_type": "tunic"}, RITA
            ),
            "regenerate_below": lambda: regenerate_below(session, away, "b1", 1.0, ADA),
        }
        with pytest.raises(ReviewRefused, match="nothing was changed"):
            calls[action]()
    with sessions() as session:
        assert [a.render_attempt for a in session.scalars(select(Article))] == [1] * 6
        assert session.scalars(select(ReviewAction)).all() == []


def test_a_send_that_fails_after_the_commit_leaves_the_article_to_the_reaper(
    sessions, app, monkeypatch
):
    def broker_gone(*args, **kwargs):
        raise ConnectionError("the broker went away")

    monkeypatch.setattr("producer.review.actions.send_and_mark", broker_gone)
    with sessions() as session:
        article_id = by_key(session, "A2").id
        reject_and_regenerate(session, app, article_id, RITA)
    with sessions() as session:
        article = session.get(Article, article_id)
        assert (article.status, article.sent_at) == (ArticleStatus.extracted.value, None)


def test_a_bulk_action_leaves_alone_what_was_judged_after_its_list_was_read(
    sessions, app, monkeypatch
):
    with sessions() as session:
        listed = [by_key(session, key).id for key in ("A1", "A2")]
        approve(session, [listed[0]], RITA)  # approved after the bulk action read its list
    monkeypatch.setattr("producer.review.actions._batch_ids", lambda *args: listed)
    with sessions() as session:
        assert regenerate_below(session, app, "b1", 0.35, ADA) == 1  # A2 only
        assert by_key(session, "A1").review_status == "approved"
        assert approve_above(session, "b1", 0.0, ADA) == 0  # A1 approved, A2 rendering
        assert history(session, "A1") == [("rita", "approved")]
    assert queued(app) == 1
