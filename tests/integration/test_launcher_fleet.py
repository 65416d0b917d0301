"""``farm worker`` launchers and their celery processes, as real processes on one host.

A process that exits with an error after it said ready (as when kombu gives up restoring
messages after a lost broker) is started again and serves; SIGHUP, to a process or to its
launcher, restarts the process warmly; two launchers of one role on one host keep their node
names, and so their leases, apart; a killed launcher takes its process with it.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import select

from db import transitions
from db.engine import make_engine, session_factory
from db.models import Article, ArticleStatus, StageRun
from tests.faults import fired, write_plan
from tests.integration import faultkit as kit
from tests.integration.farmproc import (
    farm,
    process_ended,
    ready_nodes,
    wait_ended,
    wait_ready_count,
    wait_until_ended,
)
from tests.integration.test_operations import catalog_rows, write_csv
from tests.unit.test_transitions import add_articles

pytestmark = pytest.mark.integration

# An idle worker's warm shutdown takes a second or two; a loaded 2-core machine, more.
ENDS_WITHIN_SECONDS = 15


@pytest.fixture
def leftovers():
    """Pids of worker processes to kill after the test, should their launcher have left them."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if not process_ended(pid):
            os.kill(pid, signal.SIGKILL)


def only_child(worker, leftovers: list[int]) -> int:
    (child,) = worker.children()
    leftovers.append(child)
    return child


def test_a_worker_process_that_exits_with_an_error_while_serving_is_started_again_and_serves(
    farm_env, start_worker, tmp_path, leftovers
):
    plan = write_plan(tmp_path / "plan.json", [{"stage": "translate", "action": "exit"}])
    env = kit.fault_env(farm_env, plan)
    worker = start_worker("all", env=env)
    first = only_child(worker, leftovers)
    submitted = farm(env, "submit", str(write_csv(tmp_path / "c.csv", catalog_rows(1))))
    assert submitted.returncode == 0, submitted.stderr

    wait_until_ended(env["FARM_DATABASE_URL"], timeout=180)

    assert [rule["action"] for rule in fired(plan)] == ["exit"]  # it did exit, once
    with kit.sessions(env)() as session:
        assert session.scalars(select(Article.status)).all() == [ArticleStatus.done.value]
    assert worker.process.poll() is None
    assert only_child(worker, leftovers) != first
    assert "exited with code 1 while serving; starting it again" in worker.log_path.read_text()


def test_sighup_to_a_worker_process_or_to_its_launcher_restarts_the_process_warmly(
    start_worker, leftovers
):
    worker = start_worker("text")
    first = only_child(worker, leftovers)

    os.kill(first, signal.SIGHUP)
    wait_ready_count(worker, 2)
    second = only_child(worker, leftovers)
    worker.process.send_signal(signal.SIGHUP)
    wait_ready_count(worker, 3)
    third = only_child(worker, leftovers)

    assert len({first, second, third}) == 3
    assert process_ended(first) and process_ended(second)
    log = worker.log_path.read_text()
    assert "ImportError" not in log and "Traceback" not in log
    assert log.lower().count("warm shutdown") >= 2  # each stopped warmly, not killed
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(60) == 0


def test_two_launchers_of_one_role_on_one_host_keep_their_node_names_and_leases_apart(
    start_worker, pg_url, leftovers
):
    first, second = start_worker("text"), start_worker("text")
    (first_node,), (second_node,) = ready_nodes(first.log_path), ready_nodes(second.log_path)
    engine = make_engine(pg_url)
    sessions = session_factory(engine)
    # One article held by each process, for far longer than the test.
    articles = add_articles(sessions, "HELD-1", "HELD-2")
    held = dict(zip(articles, (first_node, second_node), strict=True))
    tokens = {}
    for article_id, node in held.items():
        tokens[article_id] = transitions.new_token(node)
        claimed = transitions.claim(
            engine, article_id, "translate", "pending", tokens[article_id], node, 3600
        )
        assert claimed is not None

    os.kill(only_child(first, leftovers), signal.SIGKILL)

    first_article, second_article = held
    outcomes = wait_for_first_run_closed(sessions, first_article)
    with sessions() as session:
        other = session.get(Article, second_article)
        other_runs = session.scalars(
            select(StageRun.outcome).where(StageRun.article_id == second_article)
        ).all()
    # The killed process's lease ended at once; in none of its model calls, the article got
    # its attempt back (and went on with the other workers).
    assert outcomes[0] == "interrupted"
    assert other.lease_token == tokens[second_article] and other_runs == ["running"]
    assert first_node != second_node
    assert {first_node.split("-")[0], second_node.split("-")[0]} == {"text"}
    engine.dispose()


def wait_for_first_run_closed(sessions, article_id: int, timeout: float = 60) -> list:
    """Wait until the article's first stage run is closed; the outcomes of its runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as session:
            query = select(StageRun.outcome).where(StageRun.article_id == article_id)
            outcomes = session.scalars(query.order_by(StageRun.id)).all()
        if outcomes[0] != "running":
            return outcomes
        time.sleep(0.2)
    raise AssertionError(f"the run of article {article_id} still open after {timeout}s")


def test_a_killed_launcher_takes_its_worker_process_with_it(start_worker, leftovers):
    worker = start_worker("text")
    child = only_child(worker, leftovers)

    worker.process.kill()

    assert wait_ended(child, timeout=ENDS_WITHIN_SECONDS)
