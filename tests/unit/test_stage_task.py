"""StageTask, the base of the four stage tasks: claim, run, store, publish, retry, fail.

The tasks run as a worker thread runs them (``run_stage`` under a pushed request), on the
tiny models, the process's real model executor and a migrated SQLite database; no broker
is needed until a retry is sent, and that goes to kombu's in-memory transport.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest
from celery.exceptions import Retry
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from db import transitions
from db.clock import server_time
from db.models import Article, ArticleStatus, Batch, Render, StageRun
from tasks import base, boot, context, pipeline
from tasks.app import configure
from tasks.context import Arrivals, WorkerContext
from tasks.queues import URGENT_PRIORITY
from tasks.registry import STAGES
from tasks.settings import Settings
from workers.executor import ModelExecutor
from workers.loader import load_runtimes

ARTICLES = Article.__table__


@pytest.fixture(scope="module")
def runtimes(tiny_profile):
    return load_runtimes(("translate", "extract", "render", "score"), tiny_profile, "cpu")


@pytest.fixture
def settings(engine, tmp_path, runtimes, model_cache):
    settings = Settings(
        database_url=str(engine.url), broker_url="memory://", output_dir=tmp_path / "out",
        profile="tiny", model_cache=model_cache, retry_backoff_seconds=2.0,
        max_stage_attempts=3,
    )  # fmt: skip
    configure(settings)
    context.install(WorkerContext(settings, engine, runtimes, ModelExecutor(max_wait=0)))
    yield settings
    context.drop()


@pytest.fixture
def article_id(sessions, settings):
    with sessions() as session, session.begin():
        session.add(Batch(id="b1", profile="tiny"))
        article = Article(batch_id="b1", key="SKU-1", file_stem="SKU-1", source_file="c.csv",
                          source_sheet="csv", source_row=2,
                          source_text="Roter Rock aus Wolle")  # fmt: skip
        session.add(article)
        session.flush()
        return article.id


def run(task, article_id: int, worker: str = "w1@host", retries: int = 0):
    """Run one message of ``task`` as a worker thread does; return its request after."""
    task.push_request(id=f"{task.name}-{article_id}", hostname=worker, retries=retries,
                      args=[article_id], kwargs={"key": "SKU-1"},
                      chain=[{"task": "next"}], delivery_info={},
                      called_directly=False)  # fmt: skip
    try:
        task.run_stage(article_id)
        return task.request
    finally:
        task.pop_request()


def stored(sessions, article_id: int) -> Article:
    with sessions() as session:
        return session.get(Article, article_id)


def next_sent() -> tuple[int, str] | None:
    """The next stage the last message of this thread noted as sent, for its on_success."""
    worker = context.current()
    noted = worker.take_next_sent()
    if noted is not None:
        worker.note_next_sent(*noted)
    return noted


def through_render(article_id: int) -> None:
    for task in (pipeline.translate, pipeline.extract, pipeline.render):
        run(task, article_id)


def test_each_stage_stores_its_output_and_hands_the_chain_on(sessions, article_id):
    request = run(pipeline.translate, article_id)
    assert request.chain == [{"task": "next"}] and next_sent() == (article_id, "translated")
    article = stored(sessions, article_id)
    assert article.status == "translated" and article.translation and article.lease_token is None

    for task in (pipeline.extract, pipeline.render, pipeline.score):
        run(task, article_id)
    article = stored(sessions, article_id)
    assert article.status == ArticleStatus.done.value and article.best_attempt == 1


def test_the_score_stage_publishes_the_stored_best_once_stored(sessions, article_id, settings):
    through_render(article_id)
    run(pipeline.score, article_id)

    article = stored(sessions, article_id)
    assert article.published_attempt == article.best_attempt == 1
    folder = settings.output_dir / "b1"
    record = json.loads((folder / "SKU-1.json").read_text())
    assert record["attempt"] == 1 and record["clip_score"] == pytest.approx(article.clip_score)
    attempt = folder / "attempts" / "SKU-1.1.png"
    assert (folder / "SKU-1.png").read_bytes() == attempt.read_bytes()


def test_a_score_that_lost_its_lease_during_its_model_call_stores_and_publishes_nothing(
    sessions, article_id, settings, engine, monkeypatch
):
    through_render(article_id)
    executor = context.current().executor
    submit = executor.submit

    def taken_meanwhile(stage, call, item, size, label=None):
        # The worker is paused past its lease; another one claims the article meanwhile.
        with engine.begin() as connection:
            connection.execute(update(ARTICLES).values(lease_expires_at=server_time(-1)))
        token = transitions.new_token("w2@host")
        assert transitions.claim(engine, article_id, "score", "rendered", token, "w2", 45)
        return submit(stage, call, item, size, label)

    monkeypatch.setattr(executor, "submit", taken_meanwhile)
    request = run(pipeline.score, article_id)

    assert request.chain is None  # no next stage for a result nobody stored
    article = stored(sessions, article_id)
    assert article.status == "rendered" and article.best_attempt is None
    assert not (settings.output_dir / "b1" / "SKU-1.png").exists()


def test_a_score_below_the_threshold_sends_its_regeneration_as_the_chains_next_stage(
    sessions, article_id, engine
):
    with engine.begin() as connection:
        connection.execute(update(Batch.__table__).values(min_clip_score=1e9))
    through_render(article_id)

    request = run(pipeline.score, article_id)

    steps = list(reversed(request.chain))
    assert [step["task"] for step in steps] == ["farm.render", "farm.score"]
    assert steps[0]["args"] == [article_id] or steps[0]["args"] == (article_id,)
    assert steps[0]["options"]["priority"] == URGENT_PRIORITY
    assert next_sent() == (article_id, "extracted")
    article = stored(sessions, article_id)
    assert article.status == "extracted" and article.render_attempt == 2
    assert article.published_attempt == 1  # the best so far, published meanwhile


def test_a_failing_model_call_is_retried_after_a_jittered_backoff_then_fails_at_the_limit(
    sessions, article_id, monkeypatch
):
    def broken(texts):
        raise RuntimeError("the translator broke")

    monkeypatch.setattr(pipeline.translate, "_run", lambda *args: broken([]))
    for attempt in (1, 2):
        with pytest.raises(Retry) as retried:
            run(pipeline.translate, article_id)
        ceiling = 2.0 * 2 ** (attempt - 1)
        assert ceiling / 2 <= retried.value.when <= ceiling
        with sessions() as session, session.begin():  # the backoff has passed
            session.execute(update(Article).values(lease_expires_at=None, lease_token=None))
    run(pipeline.translate, article_id)  # the third and last attempt fails the article

    article = stored(sessions, article_id)
    assert article.status == "failed" and article.error_kind == "RuntimeError"
    assert "the translator broke" in article.error
    with sessions() as session:
        outcomes = session.scalars(select(StageRun.outcome).order_by(StageRun.id)).all()
    assert outcomes == ["retry", "retry", "error"]


def test_a_claim_past_the_attempt_limit_fails_the_article_without_a_model_call(
    sessions, article_id, engine, monkeypatch
):
    with engine.begin() as connection:
        connection.execute(update(ARTICLES).values(stage_attempts=3))
    monkeypatch.setattr(pipeline.translate, "_run", lambda *args: pytest.fail("it ran"))
    run(pipeline.translate, article_id)
    article = stored(sessions, article_id)
    assert article.status == "failed" and article.error_kind == "AttemptsExhausted"


def add_article(sessions, key: str) -> int:
    with sessions() as session, session.begin():
        article = Article(batch_id="b1", key=key, file_stem=key, source_file="c.csv",
                          source_sheet="csv", source_row=3, source_text="Blauer Rock")  # fmt: skip
        session.add(article)
        session.flush()
        return article.id


def counting_calls(engine, monkeypatch) -> None:
    """Have the process's executor count attempts at each model call, as a worker's does."""
    monkeypatch.setattr(context.current().executor, "on_call", boot.AttemptCounter(engine))


def test_a_process_that_dies_in_a_model_call_is_charged_an_attempt_only_for_that_calls_article(
    sessions, article_id, engine, monkeypatch
):
    counting_calls(engine, monkeypatch)
    entered, opened = threading.Event(), threading.Event()
    stage = STAGES["translate"]

    def held_up(runtime, inputs):
        entered.set()
        assert opened.wait(30), "the call was never let go"
        return stage.call(runtime, inputs)

    monkeypatch.setitem(STAGES, "translate", replace(stage, call=held_up))
    # A second message of the process has claimed its article and not reached its call.
    waiting = add_article(sessions, "SKU-2")
    token = transitions.new_token("w1@host")
    assert transitions.claim(engine, waiting, "translate", "pending", token, "w1", 60)
    worker = threading.Thread(target=run, args=(pipeline.translate, article_id))
    worker.start()
    try:
        assert entered.wait(30), "the model call never started"
        assert stored(sessions, article_id).stage_attempts == 1
        assert stored(sessions, waiting).stage_attempts == 0
        # The process dies in that call: its launcher ends its leases.
        prefix = transitions.owner_prefix("w1@host")
        assert transitions.expire(engine, "worker died", "lost", prefix=prefix) == 2
        again = [transitions.claim(engine, a, "translate", "pending",
                                   transitions.new_token("w2@host"), "w2", 60)
                 for a in (article_id, waiting)]  # fmt: skip
    finally:
        opened.set()
        worker.join(30)
    assert [held.attempt for held in again] == [2, 1]
    with sessions() as session:
        query = select(StageRun.article_id, StageRun.outcome).where(StageRun.worker != "w2")
        closed = dict(session.execute(query).all())
    assert closed == {article_id: "lost", waiting: "interrupted"}


def claimed_tokens(engine, *article_ids: int) -> list[transitions.Claim]:
    """Claim each article's translate stage for one process, as its messages would."""
    claims = []
    for article in article_ids:
        token = transitions.new_token("w1@host")
        claims.append(transitions.claim(engine, article, "translate", "pending", token, "w1", 60))
    assert all(claims)
    return claims


def attempts(sessions, *article_ids: int) -> list[int]:
    return [stored(sessions, article).stage_attempts for article in article_ids]


def test_only_the_articles_of_the_call_running_have_an_attempt_counted_each_once(
    sessions, article_id, engine
):
    other = add_article(sessions, "SKU-2")
    first, second = (held.token for held in claimed_tokens(engine, article_id, other))
    counter = boot.AttemptCounter(engine)

    counter("translate", [first, second])  # a batch call, which fails
    assert attempts(sessions, article_id, other) == [1, 1]
    counter("translate", [first])  # then made again for each article alone
    assert attempts(sessions, article_id, other) == [1, 0]
    counter("translate", [second])
    assert attempts(sessions, article_id, other) == [0, 1]


def test_an_article_whose_call_returned_is_not_charged_for_a_death_in_the_next_call(
    sessions, article_id, engine
):
    beside = add_article(sessions, "SKU-2")
    returned, poison = claimed_tokens(engine, beside, article_id)
    counter = boot.AttemptCounter(engine)
    counter("render", [returned.token])  # its call returned; its thread is storing the result
    counter("render", [poison.token])  # the next call kills the process

    prefix = transitions.owner_prefix("w1@host")
    assert transitions.expire(engine, "worker died", "lost", prefix=prefix) == 2

    assert attempts(sessions, beside, article_id) == [0, 1]
    with sessions() as session:
        closed = dict(session.execute(select(StageRun.article_id, StageRun.outcome)).all())
    assert closed == {beside: "interrupted", article_id: "lost"}


@pytest.mark.parametrize("given_back_first", [True, False])
def test_an_error_after_a_call_that_returned_counts_whenever_the_next_call_starts(
    sessions, article_id, engine, given_back_first
):
    other = add_article(sessions, "SKU-2")
    erring, next_one = claimed_tokens(engine, article_id, other)
    counter = boot.AttemptCounter(engine)
    counter("render", [erring.token])  # its call returns; writing the picture then fails
    if given_back_first:
        counter("render", [next_one.token])
    transitions.release(engine, erring, "OSError: disk full", backoff_seconds=0)
    if not given_back_first:
        counter("render", [next_one.token])

    assert attempts(sessions, article_id, other) == [1, 1]


def test_a_model_call_whose_attempt_cannot_be_counted_runs_all_the_same(
    sessions, article_id, engine, monkeypatch, caplog
):
    counting_calls(engine, monkeypatch)

    def database_away(*_args):
        raise OperationalError("UPDATE articles", {}, ConnectionRefusedError("gone"))

    monkeypatch.setattr(transitions, "count_attempts", database_away)
    run(pipeline.translate, article_id)

    assert stored(sessions, article_id).status == "translated"
    assert "attempt not counted" in caplog.text


def test_a_model_call_waits_for_the_claims_of_the_messages_received_before_it(engine):
    arrivals = Arrivals()
    counter = boot.AttemptCounter(engine, arrivals)
    arrivals.received("render-of-the-article-beside")
    called = threading.Event()
    caller = threading.Thread(target=lambda: (counter("render", []), called.set()))
    caller.start()

    assert not called.wait(0.5)  # a death in the call would leave that message unclaimed
    arrivals.received("render-received-after")  # not waited for: the call began before it
    arrivals.claimed("render-of-the-article-beside")

    assert called.wait(5)
    caller.join(5)


def test_a_message_never_claimed_holds_back_one_call_only_and_for_the_wait_at_most(
    engine, monkeypatch
):
    monkeypatch.setattr(boot, "CLAIM_WAIT_SECONDS", 0.2)
    arrivals = Arrivals()
    counter = boot.AttemptCounter(engine, arrivals)
    arrivals.received("revoked-before-it-ran")
    durations = []
    for _ in range(2):
        started = time.monotonic()
        counter("render", [])
        durations.append(time.monotonic() - started)
    assert 0.2 <= durations[0] < 2 and durations[1] < 0.1


def test_a_stage_message_is_noted_at_receipt_and_forgotten_at_its_claim(article_id, monkeypatch):
    arrivals = context.current().arrivals
    message = SimpleNamespace(name="farm.translate", id=f"farm.translate-{article_id}", eta=None,
                              args=[article_id])  # fmt: skip
    retry = SimpleNamespace(name="farm.translate", id="a-retry", eta="2030-01-01T00:00:00",
                            args=[article_id])  # fmt: skip
    boot._note_received(request=message)
    boot._note_received(request=retry)  # run after its backoff; its lease stands for it
    boot._note_received(request=SimpleNamespace(name="celery.ping", id="ping", eta=None, args=[]))
    assert arrivals.wait(0) == [message.id]
    boot._note_received(request=message)

    run(pipeline.translate, article_id)  # the request id run() gives it

    assert arrivals.wait(0) == []


@pytest.mark.parametrize("attempt", [1, 2, 3, 6, 10])
def test_the_backoff_doubles_up_to_a_minute_and_is_drawn_from_its_upper_half(attempt):
    ceiling = min(base.MAX_BACKOFF_SECONDS, 2.0 * 2 ** (attempt - 1))
    drawn = {base.backoff_seconds(2.0, attempt) for _ in range(50)}
    assert all(ceiling / 2 <= value <= ceiling for value in drawn)
    assert len(drawn) > 1  # jittered


def test_the_next_stage_sent_is_recorded_on_success_and_forgotten_after_any_end(
    sessions, article_id
):
    request = run(pipeline.translate, article_id)
    assert stored(sessions, article_id).sent_at is None
    pipeline.translate.on_success(article_id, request.id, (article_id,), {})
    pipeline.translate.after_return("SUCCESS", article_id, request.id, (article_id,), {}, None)

    assert stored(sessions, article_id).sent_at is not None
    assert context.current().take_next_sent() is None


def test_the_messages_not_yet_claimed_are_kept_in_the_launchers_file_until_their_claim(
    tmp_path,
):
    from tasks.context import read_arrivals

    path = tmp_path / "arrivals.json"
    arrivals = Arrivals(path)
    arrivals.received("render-1", 7, "render")
    arrivals.received("score-2", 8, "score")
    assert read_arrivals(path) == [(7, "render"), (8, "score")]
    assert arrivals.wait(0) == ["render-1", "score-2"]  # given up on: kept in the file
    assert read_arrivals(path) == [(7, "render"), (8, "score")]
    arrivals.claimed("render-1")
    assert read_arrivals(path) == [(8, "score")]
    assert read_arrivals(tmp_path / "no-such-file.json") == []


def test_an_arrivals_file_that_cannot_be_written_costs_a_warning_not_the_message(tmp_path, caplog):
    arrivals = Arrivals(tmp_path / "no-such-folder" / "arrivals.json")
    arrivals.received("render-1", 7, "render")
    arrivals.claimed("render-1")
    assert "arrivals file" in caplog.text and arrivals.wait(0) == []


def test_a_copy_of_a_message_in_another_thread_does_not_take_the_first_copys_next_stage(
    article_id,
):
    worker = context.current()
    worker.note_next_sent(article_id, "translated")  # the first copy stored its stage
    beside = []
    copy = threading.Thread(target=lambda: beside.append(worker.take_next_sent()))
    copy.start()
    copy.join(5)

    assert beside == [None]  # the copy found the article held and noted nothing
    assert worker.take_next_sent() == (article_id, "translated")


def test_renders_are_kept_per_attempt(sessions, article_id):
    through_render(article_id)
    with sessions() as session:
        assert session.scalars(select(Render.attempt)).all() == [1]


def test_the_published_json_names_the_repo_and_commit_of_every_model_that_made_it(
    sessions, article_id, settings, runtimes
):
    through_render(article_id)
    run(pipeline.score, article_id)

    record = json.loads((settings.output_dir / "b1" / "SKU-1.json").read_text())
    models = {role: entry for role, entry in record["models"].items() if role != "profile"}
    # The tiny profile loads local folders: each is named, its commit "local".
    assert models == runtimes.model_commits
    assert set(models) == {"translator", "extractor", "renderer", "lora", "scorer"}
    assert all(entry["commit"] == "local" for entry in models.values())
    assert models["renderer"]["repo"] == runtimes.profile.renderer


def test_a_message_for_an_article_the_database_lacks_is_an_error_naming_the_database(
    engine, settings, caplog
):
    with caplog.at_level("INFO", logger="farm.tasks"):
        request = run(pipeline.translate, 999_999)
    assert request.chain is None  # acknowledged: nothing goes on from here
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "article 999999: no such article in the database" in message
    assert engine.url.database in message
    assert "FARM_DATABASE_URL" in message
