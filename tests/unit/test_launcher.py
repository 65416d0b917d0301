"""``farm worker``'s launcher: the processes it plans and how it supervises them.

The supervised processes here are small Python programs standing in for ``celery worker``:
what is under test is what the launcher does when one exits or dies, before or after it
said it was ready (the ready file ``tasks.boot`` creates in a real worker process).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from db import sends, transitions
from tasks import launcher
from tasks.context import Arrivals
from tasks.exceptions import HUNG_EXIT_CODE
from tasks.launcher import (
    MAX_RESTARTS,
    READY_FILE_ENV,
    RESTART_EXIT_CODE,
    WorkerProcess,
    plan_workers,
    recovery,
    run_workers,
)
from tasks.settings import Settings
from tests.integration.farmproc import process_ended, wait_ended
from tests.unit.test_transitions import IN_FLIGHT, add_articles, article, runs

REPO = Path(__file__).resolve().parents[2]
SAY_READY = f"import os, pathlib; pathlib.Path(os.environ[{READY_FILE_ENV!r}]).touch()"


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


def noting(died: list):
    """An ``on_death`` that notes the processes it is called with."""
    return lambda process, _arrivals_file: died.append(process)


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


def test_processes_pinned_to_cards_hold_the_text_batches_of_a_card():
    from tasks.settings import TEXT_BATCH_SIZE_CPU, TEXT_BATCH_SIZE_GPU

    (on_cpu,) = plan_workers("all", Settings(score_batch_size=4))
    on_cards = plan_workers("all", Settings(score_batch_size=4), gpus=["0", "1"])

    def held(process):
        return int(process.argv[process.argv.index("--concurrency") + 1])

    assert held(on_cpu) == 2 * TEXT_BATCH_SIZE_CPU + 1 + 4 + 1
    assert {held(process) for process in on_cards} == {2 * TEXT_BATCH_SIZE_GPU + 1 + 4 + 1}
    assert all("FARM_TEXT_BATCH_SIZE" not in process.env for process in on_cards)


def test_a_text_process_listens_to_the_text_queue_with_the_concurrency_asked_for():
    (process,) = plan_workers("text", Settings(), concurrency=3)
    argv = process.argv
    assert argv[argv.index("--queues") + 1] == "farm.text"
    assert argv[argv.index("--concurrency") + 1] == "3"


def test_two_launchers_of_one_role_on_one_host_give_their_processes_names_of_their_own():
    (first,) = plan_workers("text", Settings())
    (second,) = plan_workers("text", Settings())

    assert first.node != second.node
    for process in (first, second):
        name, host = process.node.split("@")
        assert host == socket.gethostname()
        assert name.startswith(f"text-{os.getpid()}-")  # the role, then the launcher's pid
        assert process.argv[process.argv.index("--hostname") + 1] == process.node


def test_the_processes_of_one_launcher_share_its_part_of_the_name_after_their_own():
    host = socket.gethostname()
    processes = plan_workers("gpu", Settings(), gpus=["0", "3"], instance="4711-9f3a")
    assert [p.node for p in processes] == [f"gpu0-4711-9f3a@{host}", f"gpu3-4711-9f3a@{host}"]


def test_a_process_killed_by_a_signal_is_started_again_after_its_articles_are_freed(tmp_path):
    died = []
    killed = dies_once(tmp_path / "m", "os.kill(os.getpid(), signal.SIGKILL)")
    spec = WorkerProcess("gpu0-1@host", program(killed), {})

    code = run_workers([spec], on_death=noting(died))

    assert code == 0
    assert died == [spec]


def test_a_process_stopped_by_its_watchdog_is_started_again(tmp_path):
    died = []
    hung = dies_once(tmp_path / "m", f"sys.exit({HUNG_EXIT_CODE})")

    assert run_workers([WorkerProcess("all-1@host", program(hung), {})], noting(died)) == 0
    assert len(died) == 1


def test_a_process_that_exits_with_an_error_after_it_was_ready_is_started_again(tmp_path):
    died = []
    # As kombu's "Unrecoverable error" after a lost broker: ready, serving, then exit 1.
    failing = dies_once(tmp_path / "m", f"{SAY_READY}\nsys.exit(1)")
    spec = WorkerProcess("text-1@host", program(failing), {})

    code = run_workers([spec], on_death=noting(died))

    assert code == 0
    assert died == [spec]  # its leases ended and its articles sent again first


def test_a_process_that_fails_at_boot_stops_the_launcher_with_its_code_and_the_others():
    died = []
    failing = WorkerProcess("gpu0-1@host", program("import sys; sys.exit(1)"), {})
    waiting = WorkerProcess("gpu1-1@host", program("import time; time.sleep(60)"), {})

    code = run_workers([failing, waiting], on_death=noting(died))

    assert code == 1
    assert died == []  # models missing would only fail again: nothing is started anew


def test_a_process_that_keeps_dying_is_given_up_after_the_restart_limit(tmp_path):
    died = []
    always = WorkerProcess("gpu0-1@host", program("import os, signal; os.kill(os.getpid(), 9)"), {})

    code = run_workers([always], on_death=noting(died))

    assert code == 1
    assert len(died) == MAX_RESTARTS


def test_a_warm_restart_a_process_asks_for_is_no_death_and_counts_against_no_limit(tmp_path):
    died = []
    runs = tmp_path / "runs"
    restarts = MAX_RESTARTS + 2
    asks_again = (
        "import pathlib, sys\n"
        f"runs = pathlib.Path({str(runs)!r})\n"
        "runs.open('a').write('x')\n"
        f"sys.exit({RESTART_EXIT_CODE} if len(runs.read_text()) <= {restarts} else 0)\n"
    )

    code = run_workers([WorkerProcess("text-1@host", program(asks_again), {})], noting(died))

    assert code == 0
    assert len(runs.read_text()) == restarts + 1
    assert died == []  # it stopped warmly: nothing of it to free


def test_each_process_is_told_its_own_ready_file(tmp_path):
    told = tmp_path / "told"
    notes = (
        "import os, pathlib\n"
        f"with pathlib.Path({str(told)!r}).open('a') as f:\n"
        f"    f.write(os.environ[{READY_FILE_ENV!r}] + ' ')\n"
    )
    specs = [WorkerProcess(f"gpu{n}-1@host", program(notes), {}) for n in range(2)]

    assert run_workers(specs) == 0

    paths = told.read_text().split()
    assert len(set(paths)) == 2
    assert not any(Path(path).parent.exists() for path in paths)  # removed at the end


def test_a_dead_process_has_its_leases_ended_at_once_and_the_reaper_left_to_send_them(
    engine, sessions
):
    dead, alive = add_articles(sessions, "A-1", "A-2")
    for article_id, node in ((dead, "gpu0-1@host"), (alive, "gpu1-1@host")):
        token = transitions.new_token(node)
        assert transitions.claim(engine, article_id, "translate", "pending", token, node, 600)
    sent_before = article(sessions, dead).sent_at
    # No broker to send through: the launcher does not send.
    on_death = recovery(Settings(database_url=str(engine.url), broker_url="redis://127.0.0.1:1"))

    on_death(WorkerProcess("gpu0-1@host", [], {}), Path("/nonexistent/arrivals.json"))

    with engine.connect() as connection:
        stuck = sends.stuck(connection, IN_FLIGHT, grace_seconds=30)
    assert [row.id for row in stuck] == [dead]  # the reaper's next turn sends it
    assert article(sessions, dead).sent_at == sent_before
    assert runs(sessions, dead) == [(1, "interrupted")]  # it never reached a model call
    assert runs(sessions, alive) == [(1, "running")]


def test_messages_a_dead_process_received_and_never_claimed_go_to_the_reaper(
    engine, sessions, tmp_path
):
    received, claimed_elsewhere = add_articles(sessions, "A-1", "A-2")  # both sent, pending
    token = transitions.new_token("gpu1-1@host")
    assert transitions.claim(engine, claimed_elsewhere, "translate", "pending", token, "w", 600)
    record = Arrivals(tmp_path / "arrivals.json")  # as the dead process kept it
    record.received("t-1", received, "translate")
    record.received("t-2", claimed_elsewhere, "translate")
    on_death = recovery(Settings(database_url=str(engine.url), broker_url="redis://127.0.0.1:1"))

    on_death(WorkerProcess("gpu0-1@host", [], {}), tmp_path / "arrivals.json")

    assert article(sessions, received).sent_at is None  # never sent, as far as the reaper knows
    assert article(sessions, claimed_elsewhere).lease_token == token
    with engine.connect() as connection:
        stuck = sends.stuck(connection, IN_FLIGHT, grace_seconds=0)
    assert [row.id for row in stuck] == [received]


# --- the launcher as a process of its own: signals ------------------------------------------

LAUNCHER = (
    "import sys\n"
    "from tasks.launcher import WorkerProcess, run_workers\n"
    "sys.exit(run_workers([WorkerProcess('text-1@host', sys.argv[1:], {})]))\n"
)


def serving(pids: Path) -> str:
    """A stand-in worker: notes its pid, says ready, stops warmly (exit 0) on SIGTERM."""
    return (
        "import os, signal, sys, time\n"
        f"{SAY_READY}\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        f"with open({str(pids)!r}, 'a') as f: f.write(f'{{os.getpid()}}\\n')\n"
        "time.sleep(120)\n"
    )


def noted(pids: Path) -> list[int]:
    return [int(pid) for pid in pids.read_text().split()] if pids.exists() else []


def wait_for_pids(pids: Path, count: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(noted(pids)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} processes started in {timeout}s")
        time.sleep(0.1)
    return noted(pids)


@pytest.fixture
def launched(tmp_path):
    """Start a launcher of one stand-in worker; every process it ran is ended after the test."""
    pids = tmp_path / "pids"
    log = (tmp_path / "launcher.log").open("w")
    started = []

    def start() -> subprocess.Popen:
        process = subprocess.Popen(
            [*program(LAUNCHER), *program(serving(pids))], cwd=REPO, stdout=log, stderr=log
        )
        started.append(process)
        return process

    yield start, pids
    for pid in [process.pid for process in started] + noted(pids):
        if not process_ended(pid):
            os.kill(pid, signal.SIGKILL)
    log.close()


def test_sighup_to_the_launcher_restarts_its_processes_warmly_and_it_keeps_running(launched):
    start, pids = launched
    launcher_process = start()
    (first,) = wait_for_pids(pids, 1)

    launcher_process.send_signal(signal.SIGHUP)

    assert wait_for_pids(pids, 2)[1] != first
    assert launcher_process.poll() is None
    launcher_process.send_signal(signal.SIGTERM)
    assert launcher_process.wait(30) == 0  # each stopped warmly both times


def test_a_killed_launchers_processes_end_with_it(launched):
    start, pids = launched
    launcher_process = start()
    (child,) = wait_for_pids(pids, 1)

    launcher_process.kill()

    assert wait_ended(child, timeout=10)


def test_a_process_whose_launcher_is_gone_before_it_is_bound_exits_at_once():
    sleeper = program("import time; time.sleep(60)")
    gone = launcher._bind_to_launcher(os.getppid())  # not the parent of the child
    assert subprocess.run(sleeper, preexec_fn=gone, timeout=30).returncode == 1

    exits = program("import sys; sys.exit(7)")
    bound = launcher._bind_to_launcher(os.getpid())
    assert subprocess.run(exits, preexec_fn=bound, timeout=30).returncode == 7


def test_a_text_worker_on_the_cpu_measures_and_logs_its_rate_before_it_serves(model_cache, caplog):
    from tasks import boot
    from tasks.settings import Settings

    settings = Settings(
        profile="tiny", model_cache=model_cache, device="cpu", worker_role="text",
        text_batch_size=2,
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="farm.boot"):
        runtimes = boot.load_for_role(settings)

    assert runtimes.extract is not None and runtimes.render is None
    said = [r.getMessage() for r in caplog.records if "text stages on the CPU" in r.getMessage()]
    assert len(said) == 1
    assert "2 articles translated and extracted in " in said[0]
    assert "articles/hour per process" in said[0]


def test_a_worker_gives_its_extractor_the_text_batch_and_no_static_cache_on_the_cpu(model_cache):
    from tasks import boot
    from tasks.settings import Settings

    settings = Settings(
        profile="tiny", model_cache=model_cache, device="cpu", worker_role="all",
        text_batch_size=3,
    )  # fmt: skip
    runtimes = boot.load_for_role(settings)

    assert runtimes.extract.max_batch == 3 and runtimes.extract.static_cache is False


def test_a_worker_says_its_device_and_database_with_the_password_masked(caplog):
    from tasks import boot
    from tasks.settings import Settings

    settings = Settings(
        device="cpu", worker_role="text",
        database_url="postgresql+psycopg://farm:hunter22@db.example:5432/farm",
    )  # fmt: skip
    with caplog.at_level("INFO", logger="farm.boot"):
        boot.say_where(settings)

    (said,) = [record.getMessage() for record in caplog.records]
    assert said == (
        "text worker on cpu (FARM_DEVICE=cpu), database "
        "postgresql+psycopg://farm:***@db.example:5432/farm"
    )


def test_a_gpu_worker_that_finds_no_card_says_so_loudly(caplog, monkeypatch):
    from tasks import boot
    from tasks.settings import Settings

    monkeypatch.setattr(boot, "resolve_device", lambda name: "cpu")
    with caplog.at_level("INFO", logger="farm.boot"):
        boot.say_where(Settings(device="auto", worker_role="gpu"))
        boot.say_where(Settings(device="cpu", worker_role="gpu"))

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("gpu worker on the CPU")
