"""Messages a cut-off worker received and holds unclaimed, seen in Redis and taken back by
the reaper (tasks.stranded)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from db.models import Article, ArticleStatus, Batch, as_utc, utcnow
from tasks import reaper, stranded
from tasks.app import configure
from tasks.chains import send_chains
from tasks.queues import GPU_QUEUE
from tasks.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def app(engine, redis_url, tmp_path):
    return configure(
        Settings(database_url=str(engine.url), broker_url=redis_url, output_dir=tmp_path)
    )


@pytest.fixture
def extracted(sessions):
    """Two articles extracted a minute ago, their render messages sent since."""
    with sessions() as session, session.begin():
        session.add(Batch(id="b1", profile="tiny"))
        articles = [
            Article(batch_id="b1", key=f"SKU-{n}", file_stem=f"SKU-{n}", source_file="c.csv",
                    source_sheet="csv", source_row=n, source_text="Rock",
                    status=ArticleStatus.extracted.value, sent_at=utcnow(),
                    claimed_at=utcnow() - timedelta(seconds=70),
                    updated_at=utcnow() - timedelta(seconds=60))
            for n in (1, 2)
        ]  # fmt: skip
        session.add_all(articles)
        session.flush()
        return [article.id for article in articles]


@pytest.fixture
def cut_off_worker(app):
    """A consumer that takes messages from the GPU queue and holds them unacknowledged, its
    connection left open (closing it would give them back), as a cut-off worker does."""
    connection = app.connection_for_read()
    channel = connection.default_channel

    def receive(count: int) -> None:
        for _ in range(count):
            deadline = time.monotonic() + 10
            while channel.basic_get(GPU_QUEUE, no_ack=False) is None:
                assert time.monotonic() < deadline, "no message came"
                time.sleep(0.05)

    yield receive
    connection.release()


def test_messages_held_unclaimed_past_the_bound_are_taken_back_and_sent_again(
    app, engine, sessions, extracted, cut_off_worker, monkeypatch
):
    monkeypatch.setattr(stranded, "CLOCK_TOLERANCE_SECONDS", 0.0)
    send_chains(app, [(article_id, "k", "render") for article_id in extracted])
    cut_off_worker(2)

    assert stranded.look(app, held_seconds=30).held_long == []  # delivered just now
    time.sleep(1.1)
    held = sorted(stranded.look(app, held_seconds=1).held_long)
    assert held == [(article_id, "extracted") for article_id in extracted]

    # One article was claimed meanwhile by a worker that reached the database: left alone.
    with sessions() as session, session.begin():
        session.execute(update(Article).where(Article.id == extracted[1])
                        .values(claimed_at=utcnow() + timedelta(seconds=1)))  # fmt: skip
    monkeypatch.setattr(app.settings, "lease_seconds", 1)
    before = datetime.now(UTC)
    assert reaper.reap(app, engine) == 1
    with sessions() as session:
        sent = session.scalar(select(Article.sent_at).where(Article.id == extracted[0]))
    assert sent.replace(tzinfo=sent.tzinfo or UTC) >= before - timedelta(seconds=1)


def test_a_retry_waiting_out_its_delay_is_not_taken_for_stranded(
    app, extracted, cut_off_worker, monkeypatch
):
    monkeypatch.setattr(stranded, "CLOCK_TOLERANCE_SECONDS", 0.0)
    from tasks.pipeline import render

    render.apply_async((extracted[0],), countdown=60, queue=GPU_QUEUE)
    cut_off_worker(1)
    time.sleep(1.1)

    assert stranded.look(app, held_seconds=1).held_long == []


def test_a_message_that_vanished_on_its_way_is_sent_again_once_its_queue_is_empty(
    app, engine, sessions, extracted, cut_off_worker, monkeypatch
):
    monkeypatch.setattr(stranded, "CLOCK_TOLERANCE_SECONDS", 0.0)
    monkeypatch.setattr(app.settings, "lease_seconds", 30)
    with sessions() as session, session.begin():  # both sent a minute ago
        minute_ago = utcnow() - timedelta(seconds=60)
        session.execute(update(Article).values(sent_at=minute_ago, updated_at=minute_ago))
    # The first article's message is gone (popped, never recorded); the second's is queued.
    send_chains(app, [(extracted[1], "k", "render")])

    assert reaper.reap(app, engine) == 0  # a message still waits in the queue: no verdict

    cut_off_worker(1)  # a worker takes the second's message: the queue is empty now
    assert reaper.reap(app, engine) == 1
    with sessions() as session:
        rows = session.execute(select(Article.id, Article.sent_at)).all()
    sent = {article_id: as_utc(at) for article_id, at in rows}
    assert sent[extracted[0]] > utcnow() - timedelta(seconds=5)  # sent again
    assert sent[extracted[1]] < utcnow() - timedelta(seconds=30)  # held: left alone
