"""Faults of a fleet, at the shipped delivery settings: a paused scorer, clocks a minute off,
a database away for longer than a lease.

Like ``test_faults.py``, each scenario runs real Redis, PostgreSQL and ``farm worker``
processes, ends with the tally of articles submitted / completed / failed with a reason /
lost / duplicated, and checks that every published picture is its article's stored best.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults import SKEW_ENV, write_plan
from tests.integration import faultkit as kit
from tests.integration.test_faults import finish, submit

pytestmark = [pytest.mark.integration, pytest.mark.fleet]


@pytest.fixture
def plan(tmp_path):
    return write_plan(tmp_path / "plan.json", [])


def signal_children(worker, signum: int) -> None:
    for child in worker.children():
        os.kill(child, signum)


def test_a_scorer_paused_past_its_leases_publishes_nothing_over_the_stored_best(
    farm_env, start_worker, plan, tmp_path
):
    # Every article renders three attempts (no score passes), so a late scorer of attempt 1
    # would publish an attempt that is not the best the database names.
    env = kit.fault_env(farm_env, plan, FARM_MIN_CLIP_SCORE="1000", FARM_MAX_ATTEMPTS="3")
    write_plan(plan, [{"stage": "score", "action": "sleep", "seconds": 3}])
    paused = start_worker("all", env=env)
    submit(env, tmp_path, 5)
    kit.wait_for_fault(plan)  # inside a score call: it holds score leases
    signal_children(paused, signal.SIGSTOP)
    try:
        start_worker("all", env=env)  # finishes them once the paused worker's leases run out
        counts = finish(env, "scorer paused past its leases", timeout=240)
    finally:
        signal_children(paused, signal.SIGCONT)
    kit.wait_for_log(paused.log_path, "lost its lease; result dropped", timeout=60)
    time.sleep(2)  # what the resumed worker does next, it does now

    assert counts["stale_published"] == 0, kit.stale_published(env)
    assert set(kit.render_attempts(env).values()) == {3}
    assert counts["lost"] == 0 and counts["duplicated"] == 0, counts


def test_workers_whose_clocks_are_a_minute_apart_neither_steal_nor_strand_articles(
    farm_env, start_worker, plan, tmp_path
):
    env = kit.fault_env(farm_env, plan)
    write_plan(plan, [{"stage": "render", "action": "sleep", "seconds": 1, "times": 99}])
    start_worker("all", env=env | {SKEW_ENV: "60"})
    start_worker("all", env=env | {SKEW_ENV: "-60"})
    started = time.monotonic()
    submit(env, tmp_path, 10)

    counts = finish(env, "worker clocks a minute apart", timeout=180)
    assert counts["completed"] == 10, counts
    # Each stage of each article was claimed once: no lease was taken from its holder.
    assert set(kit.runs_per_stage(env).values()) == {1}, kit.runs_per_stage(env)
    assert time.monotonic() - started < 120


def test_a_database_away_longer_than_a_lease_keeps_the_results_in_flight(
    farm_env, start_worker, plan, tmp_path
):
    env = kit.fault_env(farm_env, plan)
    write_plan(plan, [{"stage": "extract", "action": "sleep", "seconds": 4}])
    worker = start_worker("all", env=env)
    submit(env, tmp_path, 8)
    kit.wait_for_fault(plan)  # an extraction batch is inside its model call
    kit.postgres_stop()
    try:
        time.sleep(75)  # past the 45 s lease: every lease of the worker runs out
    finally:
        kit.postgres_start()

    counts = finish(env, "database away for 75 s", timeout=180)
    assert counts["completed"] == 8, counts
    # Nothing finished during the outage was thrown away and done again.
    assert set(kit.runs_per_stage(env).values()) == {1}, kit.runs_per_stage(env)
    assert worker.process.poll() is None
