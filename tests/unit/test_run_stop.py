"""Ctrl-C in ``farm run``: the model executor ends its callers' waits as no error of theirs,
a stage so stopped leaves its article claimed for ``free_interrupted`` (no retry, no
failure, no attempt charged), and stopping a worker process waits for its threads."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from db.models import Article, ArticleStatus, StageRun
from producer.local_run import LOCAL_NODE, Freed, free_interrupted
from tasks import boot, context, pipeline
from tasks.reaper import Periodic
from tests.unit.test_stage_task import article_id, run, runtimes, settings  # noqa: F401
from workers.executor import ExecutorStopped, ModelExecutor

WAIT = 10


class Gate:
    """A model call that holds the model thread until opened."""

    def __init__(self) -> None:
        self.entered, self.opened = threading.Event(), threading.Event()

    def __call__(self, inputs: list) -> list:
        self.entered.set()
        assert self.opened.wait(WAIT), "the gate was never opened"
        return ["gate"] * len(inputs)


def test_a_cancelling_stop_ends_the_waits_with_no_error_of_the_inputs_and_join_waits_the_call():
    executor = ModelExecutor(max_wait=0, time_limit=60)
    gate = Gate()
    running = executor.submit("render", gate, 1)
    assert gate.entered.wait(WAIT)
    waiting = executor.submit("render", gate, 2)

    executor.stop(cancel=True)

    with pytest.raises(ExecutorStopped):
        waiting.result(WAIT)
    assert not issubclass(ExecutorStopped, Exception)  # a stage's `except Exception` lets it by
    with pytest.raises(ExecutorStopped):
        executor.submit("render", gate, 3)
    assert not executor.join(0.2)  # the call in progress still runs
    gate.opened.set()
    assert executor.join(WAIT)
    assert running.result(WAIT) == "gate"  # the call that ran hands its output over
    names = {thread.name for thread in threading.enumerate()}
    assert not names & {"farm-model", "farm-watchdog"}


def test_a_plain_stop_still_fails_the_waits_as_errors():
    executor = ModelExecutor(max_wait=0)
    gate = Gate()
    executor.submit("render", gate, 1)
    assert gate.entered.wait(WAIT)
    waiting = executor.submit("render", gate, 2)
    executor.stop()
    with pytest.raises(RuntimeError, match="the model executor stopped"):
        waiting.result(WAIT)
    gate.opened.set()
    assert executor.join(WAIT)


def test_a_stage_stopped_by_ctrl_c_leaves_its_claim_for_free_interrupted_to_give_back(
    sessions,
    article_id,  # noqa: F811
    settings,  # noqa: F811
):
    context.current().executor.stop(cancel=True)

    with pytest.raises(ExecutorStopped):
        run(pipeline.translate, article_id, worker=LOCAL_NODE)

    with sessions() as session:
        article = session.get(Article, article_id)
        (stage_run,) = session.scalars(select(StageRun)).all()
        assert article.status == ArticleStatus.pending.value and article.error is None
        assert article.lease_token is not None and article.stage_attempts == 0
        assert stage_run.outcome == "running"  # no retry recorded, nothing failed
    assert free_interrupted(sessions, "b1") == Freed(in_progress=1, mid_stage=1)
    with sessions() as session:
        article = session.get(Article, article_id)
        assert session.scalars(select(StageRun.outcome)).all() == ["interrupted"]
        assert article.status == ArticleStatus.pending.value and article.stage_attempts == 0
    line = Freed(in_progress=1, mid_stage=1).line("b1")
    assert line.startswith("stopped; 1 article in progress freed (1 was mid-stage). ")


def test_stopping_a_worker_process_waits_for_its_timers_and_its_model_thread(
    settings,  # noqa: F811
):
    turns = threading.Event()
    in_turn = threading.Event()

    def slow_turn() -> None:
        in_turn.set()
        time.sleep(0.5)
        turns.set()

    boot._timers[:] = [Periodic("test-turn", 0.01, slow_turn)]
    boot._timers[0].start()
    assert in_turn.wait(WAIT)

    assert boot.stop_process(wait=WAIT)

    assert turns.is_set()  # the turn in progress ended before the process let go
    names = {thread.name for thread in threading.enumerate()}
    assert not names & {"farm-model", "farm-watchdog", "farm-test-turn"}
    assert not context.installed()
