"""Lose nothing: each fault scenario on real Redis, PostgreSQL and `celery worker` processes.

Faults are injected through ``tests.faults`` (a runtime factory wrapping the tiny models) or
done to the processes and services themselves. Every test ends with a tally of articles
submitted / completed / failed-with-reason / lost / duplicated.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Producer, Queue
from sqlalchemy import select

from db import transitions
from db.models import Article, ArticleStatus, Render, StageRun
from tasks.publish import PUBLISH_GRACE_SECONDS
from tasks.queues import TEXT_QUEUE
from tasks.stages import render_seed
from tests.faults import fired, write_plan
from tests.integration import faultkit as kit
from tests.integration.farmproc import farm, wait_until_ended
from tests.integration.test_operations import catalog_rows, write_csv

pytestmark = pytest.mark.integration

# README "Reliability": a broker back empty is noticed at the next reaper turn
# (FARM_REAPER_SECONDS, 10 s) after the workers reconnect.
BROKER_RESET_BOUND = 30


@pytest.fixture
def plan(tmp_path):
    return write_plan(tmp_path / "plan.json", [])


def submit(env: dict, tmp_path: Path, count: int) -> str:
    result = farm(env, "submit", str(write_csv(tmp_path / "c.csv", catalog_rows(count))))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def finish(env: dict, scenario: str, timeout: float = 120) -> dict[str, int]:
    wait_until_ended(env["FARM_DATABASE_URL"], timeout)
    # A process killed between storing an article and publishing it leaves the picture to
    # the reaper: stored that long ago and still unpublished, it publishes it on its turn.
    deadline = time.monotonic() + PUBLISH_GRACE_SECONDS + 30
    while kit.stale_published(env) and time.monotonic() < deadline:
        time.sleep(1)
    counts = kit.tally(env)
    kit.record(scenario, counts)
    assert counts["lost"] == 0 and counts["duplicated"] == 0, counts
    assert counts["stale_published"] == 0, kit.stale_published(env)
    return counts


def renders_per_article(env: dict) -> dict[str, int]:
    with kit.sessions(env)() as session:
        rows = session.execute(select(Article.key, Render.attempt).join(Render)).all()
    counts: dict[str, int] = {}
    for key, _attempt in rows:
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_a_worker_process_killed_mid_render_is_started_again_and_its_articles_complete_once(
    farm_env, start_worker, plan, tmp_path
):
    env = kit.fault_env(farm_env, plan)
    write_plan(plan, [{"stage": "render", "action": "sleep", "seconds": 4}])
    worker = start_worker("all", env=env)
    submit(env, tmp_path, 2)
    kit.wait_for_fault(plan)  # inside the render call, so its attempt is the one counted
    killed_at = time.monotonic()
    for child in worker.children():  # the celery worker under `farm worker`, as OOM kills it
        os.kill(child, signal.SIGKILL)
    kit.wait_for_run(env, "render", outcome="lost")
    kit.wait_for_run(env, "render", outcome="ok", count=2)  # sent again by the launcher
    recovered_in = time.monotonic() - killed_at

    counts = finish(env, "worker process killed mid-render")
    assert counts["completed"] == 2
    assert renders_per_article(env) == {"SKU-1": 1, "SKU-2": 1}
    assert recovered_in < 60, recovered_in  # at the shipped lease, not after it
    assert worker.process.poll() is None and worker.children()  # its launcher started it again


def test_an_article_that_kills_its_worker_every_time_fails_after_bounded_attempts(
    farm_env, start_worker, plan, tmp_path
):
    env = kit.fault_env(farm_env, plan, FARM_MAX_STAGE_ATTEMPTS="2")
    seed = str(render_seed("SKU-1", 1))
    write_plan(plan, [{"stage": "render", "action": "kill", "match": seed, "times": 99}])
    start_worker("all", env=env)
    submit(env, tmp_path, 2)

    counts = finish(env, "poison article kills its worker", timeout=150)
    with kit.sessions(env)() as session:
        poison = session.scalars(select(Article).where(Article.key == "SKU-1")).one()
    assert poison.status == ArticleStatus.failed.value
    assert poison.error_kind == "AttemptsExhausted" and poison.error_stage == "render"
    assert counts["completed"] == 1 and counts["failed_with_reason"] == 1
    assert len(fired(plan)) == 2  # the article beside it got its attempts back each time


def test_a_worker_killed_outright_is_redelivered_and_sends_the_next_stage_once(
    farm_env, start_worker, plan, tmp_path
):
    env = kit.fault_env(farm_env, plan)
    write_plan(plan, [{"stage": "render", "action": "sleep", "seconds": 3}])
    first = start_worker("all", env=env)
    submit(env, tmp_path, 1)
    kit.wait_for_run(env, "render")
    children = first.children()
    os.kill(first.process.pid, signal.SIGKILL)
    for child in children:
        os.kill(child, signal.SIGKILL)
    second = start_worker("all", env=env)

    counts = finish(env, "worker main process killed", timeout=90)
    assert counts["completed"] == 1
    assert renders_per_article(env) == {"SKU-1": 1}
    assert kit.received([first.log_path, second.log_path], "farm.score") == 1


def test_a_task_outliving_the_visibility_timeout_writes_one_output(
    farm_env, start_worker, plan, tmp_path
):
    env = kit.fault_env(
        farm_env,
        plan,
        FARM_VISIBILITY_TIMEOUT="6",
    )
    write_plan(plan, [{"stage": "render", "action": "sleep", "seconds": 14}])
    first = start_worker("all", env=env)
    second = start_worker("all", env=env)
    submit(env, tmp_path, 1)

    counts = finish(env, "task outlives the visibility timeout", timeout=150)
    assert counts["completed"] == 1
    assert renders_per_article(env) == {"SKU-1": 1}
    assert kit.ok_runs(env)[("SKU-1", "render")] == 1
    logs = [first.log_path, second.log_path]
    assert kit.received(logs, "farm.render") >= 2  # it really was delivered twice
    assert kit.received(logs, "farm.score") == 1


def test_a_hanging_render_is_stopped_by_the_watchdog_and_runs_again_in_a_new_process(
    farm_env, start_worker, plan, tmp_path
):
    # Long enough for any tiny model's call on a busy 2-core machine; the hang is forever.
    env = kit.fault_env(farm_env, plan, FARM_TASK_TIME_LIMIT="15")
    write_plan(plan, [{"stage": "render", "action": "hang"}])
    worker = start_worker("all", env=env)
    before = set(worker.children())
    submit(env, tmp_path, 1)

    counts = finish(env, "render hangs past the hard time limit", timeout=90)
    assert counts["completed"] == 1
    with kit.sessions(env)() as session:
        outcomes = list(session.scalars(select(StageRun.outcome).where(StageRun.stage == "render")))
    assert outcomes.count("timeout") == 1 and outcomes.count("ok") == 1
    assert worker.process.poll() is None
    assert set(worker.children()) - before  # the stopped process was replaced


def test_a_warm_shutdown_mid_task_finishes_the_task_and_loses_nothing(
    farm_env, start_worker, plan, tmp_path
):
    env = kit.fault_env(farm_env, plan)
    write_plan(plan, [{"stage": "render", "action": "sleep", "seconds": 3}])
    first = start_worker("all", env=env)
    submit(env, tmp_path, 3)
    kit.wait_for_run(env, "render")
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(60) == 0
    kit.wait_for_run(env, "render", outcome="ok", timeout=1)  # the running render finished
    start_worker("all", env=env)

    counts = finish(env, "warm shutdown mid-task")
    assert counts["completed"] == 3
    assert renders_per_article(env) == {"SKU-1": 1, "SKU-2": 1, "SKU-3": 1}


@pytest.fixture
def redis_restored():
    yield
    kit.redis_start()


def test_a_redis_restart_mid_batch_loses_no_article(
    farm_env, start_worker, plan, tmp_path, redis_restored
):
    env = kit.fault_env(farm_env, plan)
    write_plan(plan, [{"stage": "render", "action": "sleep", "seconds": 1, "times": 99}])
    # One message at a time: the others wait in Redis when it goes.
    worker = start_worker("all", "--concurrency", "1", env=env)
    submit(env, tmp_path, 5)
    kit.wait_for_run(env, "score", outcome="ok")
    kit.redis_stop()  # an in-memory Redis: every queued message is gone
    time.sleep(2)
    kit.redis_start()
    back = time.monotonic()

    # No operator step: the reaper sees the broker's new epoch and sends them all again.
    counts = finish(env, "redis restarted empty mid-batch", timeout=BROKER_RESET_BOUND + 60)
    assert counts["completed"] == 5
    assert time.monotonic() - back < BROKER_RESET_BOUND + 30  # the bound, plus the work
    assert "the broker came back empty" in worker.log_path.read_text()
    assert worker.process.poll() is None  # it reconnected instead of dying


def test_redis_down_at_submit_is_a_clear_error_and_the_reaper_sends_articles_never_sent(
    farm_env, start_worker, plan, tmp_path, redis_restored
):
    from producer.catalog import read_catalog
    from producer.imports import import_catalog

    env = kit.fault_env(farm_env, plan)
    kit.redis_stop()
    catalog = write_csv(tmp_path / "c.csv", catalog_rows(3))
    refused = farm(env, "submit", str(catalog))
    assert refused.returncode == 3
    assert "cannot reach the broker" in refused.stderr and "Traceback" not in refused.stderr
    assert kit.tally(env)["submitted"] == 0
    kit.redis_start()

    # A producer that died after storing and before sending: rows without messages.
    with kit.sessions(env)() as session:
        import_catalog(session, read_catalog([catalog]), "crashed", {"profile": "tiny"})
    worker = start_worker("all", env=env)

    counts = finish(env, "redis down while submitting")  # no operator step
    assert counts["completed"] == 3
    assert "reaper: 3 articles sent again" in worker.log_path.read_text()


def test_a_postgres_restart_mid_batch_is_retried_and_every_article_completes(
    farm_env, start_worker, plan, tmp_path
):
    env = kit.fault_env(farm_env, plan)
    write_plan(plan, [{"stage": "render", "action": "sleep", "seconds": 1, "times": 99}])
    start_worker("all", env=env)
    submit(env, tmp_path, 4)
    kit.wait_for_run(env, "render", outcome="ok")
    kit.postgres_restart()

    counts = finish(env, "postgres restarted mid-batch", timeout=150)
    assert counts["completed"] == 4
    assert set(renders_per_article(env).values()) == {1}


def test_a_stage_whose_database_stops_under_it_stores_its_result_once_it_is_back(
    farm_env, start_worker, plan, tmp_path
):
    env = kit.fault_env(farm_env, plan)
    write_plan(plan, [{"stage": "render", "action": "sleep", "seconds": 3}])
    worker = start_worker("all", env=env)
    submit(env, tmp_path, 2)
    kit.wait_for_run(env, "render")
    kit.postgres_stop()  # while the render sleeps: storing it fails
    try:
        kit.wait_for_log(worker.log_path, "render: database away")
    finally:
        kit.postgres_start()

    counts = finish(env, "database stopped under a running render", timeout=90)
    assert counts["completed"] == 2
    assert set(renders_per_article(env).values()) == {1}
    assert kit.ok_runs(env)[("SKU-1", "render")] == 1


def test_poison_messages_are_refused_and_a_failing_article_does_not_stop_the_others(
    farm_env, start_worker, plan, tmp_path
):
    # A second to gather: the three translations meet in one call whatever the machine.
    env = kit.fault_env(
        farm_env, plan, FARM_RETRY_BACKOFF_SECONDS="0.1", FARM_BATCH_WAIT_SECONDS="1"
    )
    write_plan(plan, [{"stage": "translate", "action": "raise", "match": "Nr. 1\n", "times": 99}])
    worker = start_worker("all", env=env)
    queue = Queue(TEXT_QUEUE, Exchange(TEXT_QUEUE), routing_key=TEXT_QUEUE)
    with Connection(env["FARM_BROKER_URL"]) as connection:
        producer = Producer(connection)
        unknown = {"id": "x1", "task": "farm.no_such_task", "args": [1], "kwargs": {}}
        producer.publish(
            json.dumps([[1], {}, {}]),
            routing_key=TEXT_QUEUE,
            declare=[queue],
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": unknown["task"], "id": unknown["id"], "lang": "py"},
        )
        producer.publish(
            {"anything": 1},
            routing_key=TEXT_QUEUE,
            declare=[queue],
            serializer="pickle",
            headers={"task": "farm.translate", "id": "x2", "lang": "py"},
        )
    submit(env, tmp_path, 3)

    counts = finish(env, "poison messages and a deterministic failure")
    assert counts["completed"] == 2 and counts["failed_with_reason"] == 1
    with kit.sessions(env)() as session:
        failed = session.scalars(select(Article).where(Article.status == "failed")).one()
    assert failed.key == "SKU-1" and failed.error_stage == "translate"
    assert failed.error_kind == "RuntimeError" and "injected failure" in failed.error
    log = worker.log_path.read_text()
    assert "farm.no_such_task" in log
    # The three were translated in one call first; it failed, so each went alone.
    assert "translate of 3 articles in one call failed" in log
    assert "ContentDisallowed" in log or "Refusing to deserialize" in log
    assert worker.process.poll() is None


def test_cuda_out_of_memory_in_render_is_retried_and_the_worker_keeps_serving(
    farm_env, start_worker, plan, tmp_path
):
    env = kit.fault_env(farm_env, plan)
    write_plan(plan, [{"stage": "render", "action": "oom"}])
    worker = start_worker("all", env=env)
    submit(env, tmp_path, 2)

    counts = finish(env, "CUDA out of memory in render")
    assert counts["completed"] == 2
    with kit.sessions(env)() as session:
        retried = session.scalars(
            select(StageRun.error).where(StageRun.stage == "render", StageRun.outcome == "retry")
        ).all()
    assert len(retried) == 1 and "OutOfMemoryError" in retried[0]
    assert worker.process.poll() is None


def test_an_unwritable_output_folder_fails_the_attempt_clearly_and_it_is_retried(
    farm_env, start_worker, plan, tmp_path
):
    blocked = tmp_path / "out"
    env = kit.fault_env(
        farm_env, plan, FARM_OUTPUT_DIR=str(blocked), FARM_RETRY_BACKOFF_SECONDS="2"
    )
    start_worker("all", env=env)  # a worker refuses to start without a writable folder
    shutil.rmtree(blocked)
    blocked.write_text("a file where the output folder should be")  # as a disk gone bad
    submit(env, tmp_path, 1)
    kit.wait_for_run(env, "render", outcome="retry")
    with kit.sessions(env)() as session:
        error = session.scalars(select(StageRun.error).where(StageRun.outcome == "retry")).first()
        assert session.scalars(select(Render)).first() is None  # no row claims a missing image
    assert "cannot write image" in error
    blocked.unlink()

    counts = finish(env, "output folder unwritable")
    assert counts["completed"] == 1
    with kit.sessions(env)() as session:
        for render in session.scalars(select(Render)):
            assert Path(render.image_path).is_file()


def test_a_message_that_finds_its_article_held_stops_and_the_reaper_sends_it_when_the_lease_ends(
    farm_env, start_worker, plan, tmp_path
):
    env = kit.fault_env(farm_env, plan)
    submit(env, tmp_path, 1)
    # Another worker holds the article's translate stage, and dies: its lease is not renewed.
    engine = kit.engine(env)
    with kit.sessions(env)() as session:
        article_id = session.scalar(select(Article.id))
    token = transitions.new_token("gone@elsewhere")
    held = transitions.claim(engine, article_id, "translate", "pending", token, "gone", 20)
    assert held is not None
    worker = start_worker("all", env=env)
    kit.wait_for_log(worker.log_path, "translate skipped")  # the copy stops quietly

    counts = finish(env, "message finds its article held by a dead worker", timeout=90)
    assert counts["completed"] == 1
    assert kit.received([worker.log_path], "farm.translate") == 2  # its own, the reaper's
    assert "reaper: 1 articles sent again" in worker.log_path.read_text()
    assert kit.ok_runs(env)[("SKU-1", "translate")] == 1
