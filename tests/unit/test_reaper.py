"""The reaper's turn: send stuck articles once, wait after an outage, see a broker reset."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from db import timers
from db.models import Article, Batch, utcnow
from tasks import reaper
from tasks.app import configure
from tasks.context import WorkerContext
from tasks.settings import Settings


@pytest.fixture
def app(engine, tmp_path):
    return configure(
        Settings(database_url=str(engine.url), broker_url="memory://", output_dir=tmp_path)
    )


@pytest.fixture
def stuck_id(sessions):
    """An article stored a minute ago whose next message was never sent."""
    with sessions() as session, session.begin():
        session.add(Batch(id="b1", profile="tiny"))
        article = Article(batch_id="b1", key="SKU-1", file_stem="SKU-1", source_file="c.csv",
                          source_sheet="csv", source_row=2, source_text="Rock",
                          updated_at=utcnow() - timedelta(seconds=60))  # fmt: skip
        session.add(article)
        session.flush()
        return article.id


def sent_at(sessions, article_id):
    with sessions() as session:
        return session.scalar(select(Article.sent_at).where(Article.id == article_id))


def test_a_stuck_article_is_sent_once_and_not_again_while_its_message_waits(
    app, engine, sessions, stuck_id
):
    assert reaper.reap(app, engine) == 1
    assert sent_at(sessions, stuck_id) is not None
    assert reaper.reap(app, engine) == 0


def test_after_a_failed_turn_the_reaper_waits_for_the_living_workers_to_renew(
    app, engine, sessions, stuck_id, monkeypatch
):
    clock = [1000.0]
    monkeypatch.setattr(reaper.time, "monotonic", lambda: clock[0])
    settings = app.settings.model_copy(update={"reaper_seconds": 0.001})
    process = WorkerContext(settings, engine, SimpleNamespace(profile=None), executor=None)
    turn = reaper.reaper_turn(app, process)
    real_take_turn = timers.take_turn

    def database_away(*args):
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    monkeypatch.setattr(timers, "take_turn", database_away)
    with pytest.raises(OperationalError):
        turn()
    monkeypatch.setattr(timers, "take_turn", real_take_turn)

    clock[0] += 29  # two renewals of a 45 s lease take 30 s
    assert turn() == 0 and sent_at(sessions, stuck_id) is None
    clock[0] += 2
    assert turn() == 1 and sent_at(sessions, stuck_id) is not None


def broker_epochs(engine, monkeypatch, *epochs: str) -> None:
    """The stuck article's message waits in the queue; the broker reports these epochs."""
    with engine.begin() as connection:  # sent a moment ago
        connection.execute(update(Article).values(sent_at=utcnow(), updated_at=utcnow()))
    told = iter(epochs)
    monkeypatch.setattr(reaper, "_broker_epoch", lambda _app: next(told))


def test_a_new_broker_epoch_sends_every_unleased_article_in_flight(
    app, engine, sessions, stuck_id, monkeypatch
):
    broker_epochs(engine, monkeypatch, "first", "first", "second")

    assert reaper.reap(app, engine) == 0  # the epoch is new to the farm: nothing was lost
    assert reaper.reap(app, engine) == 0
    assert reaper.reap(app, engine) == 1  # the broker came back empty


def test_a_broker_emptied_before_the_reapers_first_turn_is_noticed_by_the_epoch_kept_at_boot(
    app, engine, sessions, stuck_id, monkeypatch
):
    broker_epochs(engine, monkeypatch, "at-boot", "at-submit", "after-restart")

    reaper.note_broker_epoch(app, engine)  # a worker boots
    reaper.note_broker_epoch(app, engine)  # a submit keeps the epoch kept first
    assert reaper.reap(app, engine) == 1  # the reaper's first turn, after Redis lost it all


def test_keeping_the_epoch_with_the_broker_away_costs_a_warning_not_the_caller(
    app, engine, monkeypatch, caplog
):
    def broker_away(_app):
        raise ConnectionRefusedError("Error 111 connecting to 127.0.0.1:6379")

    monkeypatch.setattr(reaper, "_broker_epoch", broker_away)
    reaper.note_broker_epoch(app, engine)  # a worker booting or a submit goes on
    assert "could not keep the broker's epoch" in caplog.text
