"""``farm worker``'s launcher: the processes it plans and how it supervises them.

The supervised processes here are small Python programs standing in for ``celery worker``:
what is under test is what the launcher does when one exits or dies.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tasks.exceptions import HUNG_EXIT_CODE
from tasks.launcher import WorkerProcess, plan_workers, run_workers
from tasks.settings import Settings


def program(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def dies_once(marker: Path, how: str) -> str:
    """A program that dies (``how``) on its first run and exits 0 on the next."""
    return (
        "import os, signal, sys, pathlib\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if marker.exists(): sys.exit(0)\n"
        "marker.write_text('died once')\n"
        f"{how}\n"
    )


def test_a_gpu_role_gets_one_threads_process_per_card_pinned_to_it():
    processes = plan_workers("gpu", Settings(score_batch_size=4), gpus=["0", "3"])
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in processes] == ["0", "3"]
    assert all(p.env["FARM_DEVICE"] == "cuda" for p in processes)
    for process in processes:
        argv = process.argv
        assert argv[argv.index("--pool") + 1] == "threads"
        assert argv[argv.index("--concurrency") + 1] == "6"  # render 1 + score 4 + 1
        assert argv[argv.index("--queues") + 1] == "farm.gpu"
    assert processes[0].node != processes[1].node


def test_a_text_process_listens_to_the_text_queue_with_the_concurrency_asked_for():
    (process,) = plan_workers("text", Settings(), concurrency=3)
    argv = process.argv
    assert argv[argv.index("--queues") + 1] == "farm.text"
    assert argv[argv.index("--concurrency") + 1] == "3"


def test_a_process_killed_by_a_signal_is_started_again_after_its_articles_are_freed(tmp_path):
    died = []
    killed = dies_once(tmp_path / "m", "os.kill(os.getpid(), signal.SIGKILL)")
    spec = WorkerProcess("gpu0@host", program(killed), {})

    code = run_workers([spec], on_death=died.append)

    assert code == 0
    assert died == [spec]


def test_a_process_stopped_by_its_watchdog_is_started_again(tmp_path):
    died = []
    hung = dies_once(tmp_path / "m", f"sys.exit({HUNG_EXIT_CODE})")

    assert run_workers([WorkerProcess("all@host", program(hung), {})], died.append) == 0
    assert len(died) == 1


def test_a_process_that_fails_on_its_own_stops_the_launcher_with_its_code_and_the_others():
    died = []
    failing = WorkerProcess("gpu0@host", program("import sys; sys.exit(1)"), {})
    waiting = WorkerProcess("gpu1@host", program("import time; time.sleep(60)"), {})

    code = run_workers([failing, waiting], on_death=died.append)

    assert code == 1
    assert died == []  # models missing would only fail again: nothing is started anew


def test_a_process_that_keeps_dying_is_given_up_after_the_restart_limit(tmp_path):
    died = []
    always = WorkerProcess("gpu0@host", program("import os, signal; os.kill(os.getpid(), 9)"), {})

    code = run_workers([always], on_death=died.append)

    assert code == 1
    assert len(died) == 5  # MAX_RESTARTS
