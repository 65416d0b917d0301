"""Article state transitions on SQLite: claims, leases, completion and failure.

``tests/integration/test_transitions_postgres.py`` runs the same tests on PostgreSQL, where
claim and completion are single statements.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus, Batch, Render, StageRun
from db.transitions import (
    STAGES,
    ClaimOutcome,
    abandon_stage,
    autocommit_reads,
    claim_stage,
    complete_stage,
    fail_article,
    is_past,
    new_lease_token,
    release_stage,
    release_token,
    status_counts,
    waiting_articles,
)


@pytest.fixture
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    migrate(engine)
    return session_factory(engine)


@pytest.fixture
def article_id(sessions):
    with sessions() as session, session.begin():
        session.add(Batch(id="b1", profile="tiny"))
        article = Article(
            batch_id="b1",
            key="A-1",
            file_stem="A-1",
            source_file="c.csv",
            source_sheet="csv",
            source_row=2,
            source_text="Rock",
        )
        session.add(article)
    return article.id


def claim(session, article_id, stage="translate", lease=60.0, max_attempts=3):
    return claim_stage(session, article_id, stage, "w1@host", lease, max_attempts)


def add_articles(sessions, *keys: str) -> list[int]:
    with sessions() as session, session.begin():
        for key in keys:
            session.add(
                Article(batch_id="b1", key=key, file_stem=key, source_file="c.csv",
                        source_sheet="csv", source_row=3, source_text="Rock")
            )  # fmt: skip
    with sessions() as session:
        return session.scalars(select(Article.id).order_by(Article.id)).all()


def held_by(sessions, ids: list[int]) -> list[str | None]:
    with sessions() as session:
        return [session.get(Article, article_id).lease_token for article_id in ids]


def test_a_claimed_stage_is_busy_for_a_second_claimer_until_completed(sessions, article_id):
    with sessions() as session:
        first = claim(session, article_id)
        second = claim(session, article_id)
        assert first.outcome is ClaimOutcome.claimed
        assert second.outcome is ClaimOutcome.busy
        assert complete_stage(session, first, article_id, "translate", {"translation": "Skirt"})
        third = claim(session, article_id)
    assert third.outcome is ClaimOutcome.already_done
    with sessions() as session:
        article = session.get(Article, article_id)
        assert article.status == ArticleStatus.translated.value
        assert article.translation == "Skirt"
        assert article.lease_token is None


def test_an_expired_lease_can_be_taken_over_and_the_old_owner_writes_nothing(sessions, article_id):
    with sessions() as session:
        stale = claim(session, article_id, lease=-1.0)
        fresh = claim(session, article_id)
        assert fresh.outcome is ClaimOutcome.claimed
        assert not complete_stage(session, stale, article_id, "translate", {"translation": "old"})
        assert complete_stage(session, fresh, article_id, "translate", {"translation": "new"})
    with sessions() as session:
        assert session.get(Article, article_id).translation == "new"


def test_an_article_that_exhausts_its_attempts_ends_failed(sessions, article_id):
    with sessions() as session:
        for _ in range(2):
            assert claim(session, article_id, lease=-1.0, max_attempts=2).outcome is (
                ClaimOutcome.claimed
            )
        assert claim(session, article_id, max_attempts=2).outcome is ClaimOutcome.exhausted
    with sessions() as session:
        article = session.get(Article, article_id)
        assert article.status == ArticleStatus.failed.value
        assert article.error_kind == "AttemptsExhausted"
        assert article.error_stage == "translate"


def test_a_released_claim_can_be_claimed_again_and_its_run_says_retry(sessions, article_id):
    with sessions() as session:
        first = claim(session, article_id)
        release_stage(session, first, article_id, "TransientStageError: disk full")
        second = claim(session, article_id)
        assert second.outcome is ClaimOutcome.claimed
        assert second.attempt == 2
        outcomes = session.scalars(select(StageRun.outcome).order_by(StageRun.id)).all()
    assert outcomes == ["retry", "running"]


def test_a_failed_article_stops_every_stage_and_keeps_its_error(sessions, article_id):
    with sessions() as session:
        held = claim(session, article_id)
        fail_article(session, article_id, "translate", "InvalidArticle", "no text", held)
        assert claim(session, article_id).outcome is ClaimOutcome.stopped
        counts = status_counts(session)
    assert counts["b1"]["failed"] == 1
    assert counts["b1"]["pending"] == 0


@pytest.mark.parametrize(
    ("status", "stage", "past"),
    [
        ("pending", "translate", False),
        ("translated", "translate", True),
        ("extracted", "render", False),
        ("rendered", "render", True),
        ("done", "score", True),
        ("needs_review", "score", True),
        ("failed", "render", False),
    ],
)
def test_is_past_knows_the_order_of_stages(status, stage, past):
    assert is_past(status, stage) is past


def test_a_claim_hands_over_the_row_and_its_run_records_worker_and_duration(sessions, article_id):
    with sessions() as session:
        taken = claim(session, article_id)
        assert taken.article.id == article_id and taken.article.source_text == "Rock"
        assert taken.article.stage_attempts == 1 and taken.article.lease_token == taken.token
        assert complete_stage(session, taken, article_id, "translate", {"translation": "Skirt"})
    with sessions() as session:
        run = session.scalars(select(StageRun)).one()
    assert (run.stage, run.attempt, run.worker, run.outcome) == ("translate", 1, "w1@host", "ok")
    assert run.seconds is not None and run.seconds >= 0


def test_a_run_whose_lease_ran_out_is_recorded_lost_when_another_copy_takes_over(
    sessions, article_id
):
    with sessions() as session:
        claim(session, article_id, lease=-1.0)
        fresh = claim(session, article_id)
        assert fresh.attempt == 2
        assert complete_stage(session, fresh, article_id, "translate", {"translation": "Skirt"})
        outcomes = session.scalars(select(StageRun.outcome).order_by(StageRun.id)).all()
    assert outcomes == ["lost", "ok"]


def test_waiting_articles_are_those_at_the_stage_input_never_tried_and_not_leased(
    sessions, article_id
):
    ids = add_articles(sessions, "A-2", "A-3", "A-4")
    with sessions() as session:
        claim(session, ids[1])  # live lease: not waiting
        claim(session, ids[2], lease=-1.0)  # tried before: left to its own message
        assert waiting_articles(session, "translate", 10, exclude=ids[0]) == [ids[3]]
        assert waiting_articles(session, "translate", 10, exclude=ids[3]) == [ids[0]]
        assert waiting_articles(session, "extract", 10, exclude=ids[0]) == []


def test_a_retry_takes_back_the_live_lease_its_failed_try_held_and_no_one_else_can(
    sessions, article_id
):
    with sessions() as session:
        first = claim_stage(session, article_id, "translate", "w1@host", 600, 3, token="t1")
        assert first.outcome is ClaimOutcome.claimed
        assert claim(session, article_id).outcome is ClaimOutcome.busy
        # A second copy of the retried message has the same earlier tokens, not this one's.
        taken = claim_stage(session, article_id, "translate", "w2", 600, 3, takeover=["t0"])
        assert taken.outcome is ClaimOutcome.busy
        again = claim_stage(
            session, article_id, "translate", "w1@host", 600, 3, token="t2", takeover=["t0", "t1"]
        )
        assert again.outcome is ClaimOutcome.claimed and again.attempt == 2
        assert not complete_stage(session, first, article_id, "translate", {"translation": "x"})
        assert complete_stage(session, again, article_id, "translate", {"translation": "Skirt"})
        outcomes = session.scalars(select(StageRun.outcome).order_by(StageRun.id)).all()
    assert outcomes == ["retry", "ok"]


def test_releasing_tokens_frees_the_batch_mates_under_them_and_nothing_else(sessions, article_id):
    ids = add_articles(sessions, "A-2", "A-3", "A-4")
    with sessions() as session:
        for article_id_ in ids[:3]:
            claim_stage(session, article_id_, "translate", "w1@host", 600, 3, token="b")
        claim_stage(session, ids[3], "translate", "w2@host", 600, 3, token="c")
        assert release_token(session, ["b"], "extract", ids[0], "wrong stage") == 0
        assert release_token(session, ["a", "b"], "translate", ids[0], "db went away") == 2
        runs = dict(session.execute(select(StageRun.article_id, StageRun.outcome)).all())
    assert held_by(sessions, ids) == ["b", None, None, "c"]
    assert [runs[article_id_] for article_id_ in ids] == ["running", "retry", "retry", "running"]
    with sessions() as session:  # a freed mate's own message now claims it at once
        assert claim(session, ids[1]).outcome is ClaimOutcome.claimed


def test_abandoning_a_timed_out_task_frees_what_its_token_held_and_nothing_else(
    sessions, article_id
):
    ids = add_articles(sessions, "A-2", "A-3")
    with sessions() as session:
        for article_id_ in ids[:2]:
            token = new_lease_token("task-1")
            claim_stage(session, article_id_, "translate", "w1@host", 600, 3, token=token)
        claim_stage(session, ids[2], "translate", "w1", 600, 3, token=new_lease_token("task-10"))
        assert abandon_stage(session, "task-1", "translate", "hard time limit") == 2
        runs = dict(session.execute(select(StageRun.article_id, StageRun.outcome)).all())
    assert held_by(sessions, ids)[:2] == [None, None] and held_by(sessions, ids)[2] is not None
    assert [runs[article_id_] for article_id_ in ids] == ["timeout", "timeout", "running"]


def test_a_stage_reading_in_autocommit_stores_its_outputs_and_fails_cleanly(sessions, article_id):
    ids = add_articles(sessions, "A-2")
    with sessions() as session:
        stored = claim(session, ids[0])
        autocommit_reads(session)  # as a stage task does once it has claimed
        assert session.get(Article, ids[0]).source_text == "Rock"
        assert complete_stage(session, stored, ids[0], "translate", {"translation": "Skirt"})
        failing = claim(session, ids[1])
        autocommit_reads(session)
        assert session.get(Article, ids[1]).key == "A-2"
        fail_article(session, ids[1], "translate", "InvalidArticle", "no text", failing)
    with sessions() as session:
        articles = [session.get(Article, article_id_) for article_id_ in ids]
        assert [a.status for a in articles] == ["translated", "failed"]
        assert articles[0].translation == "Skirt" and articles[1].lease_token is None
        assert session.scalars(select(StageRun.outcome).order_by(StageRun.id)).all() == [
            "ok",
            "error",
        ]


def test_reads_run_in_autocommit_on_postgresql_only_until_the_session_commits(sessions, article_id):
    with sessions() as session:
        autocommit_reads(session)
        session.get(Article, article_id)
        isolation = session.connection().get_execution_options().get("isolation_level")
        session.commit()
        after = session.connection().get_execution_options().get("isolation_level")
        driver = session.connection().connection.dbapi_connection
        dialect = session.get_bind().dialect.name
    assert isolation == ("AUTOCOMMIT" if dialect == "postgresql" else None)
    assert after is None  # the next transaction, and the pooled connection, as before
    assert dialect != "postgresql" or driver.autocommit is False


RENDER = {
    "attempt": 1,
    "seed": 7,
    "model_id": "flux",
    "lora": None,
    "width": 64,
    "height": 64,
    "steps": 2,
    "image_path": "/out/A-1.1.png",
    "seconds": 0.5,
    "worker": "w1@host",
}


def move_to(sessions, article_id, stage):
    with sessions() as session:
        for earlier in ("translate", "extract", "render", "score")[: STAGES.index(stage)]:
            held = claim(session, article_id, earlier)
            assert complete_stage(session, held, article_id, earlier, {})


def test_a_render_inserts_its_attempt_and_the_score_updates_that_row(sessions, article_id):
    move_to(sessions, article_id, "render")
    with sessions() as session:
        rendered = claim(session, article_id, "render")
        assert complete_stage(session, rendered, article_id, "render", {}, render=RENDER)
        scored = claim(session, article_id, "score")
        score = {"attempt": 1, "clip_score": 27.5}
        values = {"clip_score": 27.5, "image_path": "/out/A-1.png"}
        assert complete_stage(session, scored, article_id, "score", values, render=score)
    with sessions() as session:
        row = session.scalars(select(Render)).one()
        article = session.get(Article, article_id)
        runs = session.scalars(select(StageRun.outcome).where(StageRun.stage == "score")).all()
    assert (row.article_id, row.seed, row.image_path, row.clip_score) == (
        article_id, 7, "/out/A-1.1.png", 27.5
    )  # fmt: skip
    assert article.status == ArticleStatus.done.value and article.finished_at is not None
    assert (article.clip_score, article.image_path) == (27.5, "/out/A-1.png")
    assert runs == ["ok"]


def test_rendering_an_attempt_again_replaces_its_row_instead_of_adding_one(sessions, article_id):
    move_to(sessions, article_id, "render")
    with sessions() as session:
        stale = claim(session, article_id, "render", lease=-1.0)
        fresh = claim(session, article_id, "render")
        again = RENDER | {"seed": 8, "worker": "w2@host"}
        assert complete_stage(session, fresh, article_id, "render", {}, render=again)
        assert not complete_stage(session, stale, article_id, "render", {}, render=RENDER)
    with sessions() as session:
        rows = session.scalars(select(Render)).all()
        outcomes = session.scalars(
            select(StageRun.outcome).where(StageRun.stage == "render").order_by(StageRun.id)
        ).all()
    assert [(row.attempt, row.seed, row.worker) for row in rows] == [(1, 8, "w2@host")]
    assert outcomes == ["lost", "ok"]


def test_a_completion_without_the_lease_writes_no_render_row_and_leaves_the_run_open(
    sessions, article_id
):
    move_to(sessions, article_id, "render")
    with sessions() as session:
        held = claim(session, article_id, "render")
        release_stage(session, held, article_id, "TransientStageError: disk full")
        assert not complete_stage(session, held, article_id, "render", {}, render=RENDER)
        assert session.scalars(select(Render)).all() == []
        run = session.scalars(select(StageRun).where(StageRun.stage == "render")).one()
    assert run.outcome == "retry"
