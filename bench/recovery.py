"""How long an article waits after its worker process dies mid-render, at shipped settings.

A real ``farm worker all`` (the launcher and the celery worker it starts) runs with
``bench.fake_runtimes:fixed_render``, whose renderer sleeps ``--render-seconds`` (4 s) per
image, on a fresh PostgreSQL database and a Redis database of its own. Every delivery
setting is left as shipped (lease, reaper interval, visibility timeout, time limit: any
``FARM_*`` variable for them in the caller's environment is dropped). Each round submits
``--articles`` articles, waits until a render is under way, lets it run ``--kill-after``
seconds and SIGKILLs the celery worker process (the launcher's child), as the kernel's OOM
killer would. Recovery time is from that kill until every render the dead process held
runs again: a new stage run of the article's render stage, running or done. The launcher's
part (it ends the dead process's leases, sends their articles again and starts the process
anew) and the new process's start-up are both inside it; the time until the new process
said ``ready`` is printed beside it. Every article must then end ``done``.

The last line is ``recovery_seconds: X``, the mean over the rounds.

    python -m bench.recovery [--rounds R] [--articles N] [--render-seconds S] [--kill-after S]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from bench.catalog import synthetic_rows
from bench.farm import farm_env, producer_side, submit_rows, wait_batch_ended
from bench.processes import READY_MARKER, WorkerProcess, running
from bench.services import fresh_database, interrupt_on_sigterm, redis_database
from db.models import Article, StageRun, as_utc
from tasks.launcher import MAX_RESTARTS
from tasks.settings import Settings

FACTORY = "bench.fake_runtimes:fixed_render"
RENDER_SECONDS_ENV = "BENCH_RENDER_SECONDS"  # read by bench.fake_runtimes.fixed_render
# Delivery settings that bear on recovery: taken as shipped, never from the caller.
SHIPPED = (
    "FARM_TASK_TIME_LIMIT", "FARM_LEASE_SECONDS", "FARM_VISIBILITY_TIMEOUT",
    "FARM_REAPER_SECONDS", "FARM_MAX_STAGE_ATTEMPTS", "FARM_RETRY_BACKOFF_SECONDS",
)  # fmt: skip
WAIT_SECONDS = 240.0  # for a render to start, or to run again


@dataclass(frozen=True)
class Kill:
    """One worker process killed mid-render: when, and the render runs it held."""

    at: float  # epoch seconds
    runs: tuple[tuple[int, int], ...]  # (stage run id, article id) of each open render run


@dataclass(frozen=True)
class Recovery:
    """One round's figures, in seconds after the kill."""

    rerun: float  # until the last of the held renders ran again
    ready: float  # until the new worker process said it was ready


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line.

    Args:
        argv: arguments without the program name; ``None`` for ``sys.argv``.

    Returns:
        The options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, choices=range(1, MAX_RESTARTS))
    parser.add_argument("--articles", type=int, default=3, help="per round")
    parser.add_argument("--render-seconds", type=float, default=4.0, help="per image")
    parser.add_argument("--kill-after", type=float, default=1.0, help="seconds into a render")
    parser.add_argument("--redis-db", type=int, default=8)
    args = parser.parse_args(argv)
    if not 0 < args.kill_after < args.render_seconds:
        parser.error("--kill-after must fall inside a render (0 < it < --render-seconds)")
    return args


def open_renders(sessions, batch_id: str) -> list[tuple[int, int]]:
    """The batch's render stage runs still marked running, oldest first.

    Args:
        sessions: the benchmark database's sessions.
        batch_id: the batch.

    Returns:
        (stage run id, article id) pairs.
    """
    query = (
        select(StageRun.id, StageRun.article_id)
        .join(Article, Article.id == StageRun.article_id)
        .where(Article.batch_id == batch_id, StageRun.stage == "render")
        .where(StageRun.outcome == "running")
        .order_by(StageRun.id)
    )
    with sessions() as session:
        return [(run_id, article_id) for run_id, article_id in session.execute(query)]


def kill_mid_render(sessions, batch_id: str, worker: WorkerProcess, kill_after: float) -> Kill:
    """Wait for a render to start, let it run ``kill_after`` seconds, SIGKILL the process.

    Args:
        sessions: the benchmark database's sessions.
        batch_id: the batch.
        worker: the ``farm worker`` launcher; its celery worker child is killed.
        kill_after: seconds into the first render.

    Returns:
        The kill.
    """
    deadline = time.monotonic() + WAIT_SECONDS
    while not open_renders(sessions, batch_id):
        if time.monotonic() > deadline:
            raise TimeoutError("no render started")
        time.sleep(0.05)
    time.sleep(kill_after)
    children = worker.children()
    held = open_renders(sessions, batch_id)
    if not children or not held:
        raise RuntimeError(f"nothing to kill mid-render (children {children}, renders {held})")
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    return Kill(time.time(), tuple(held))


def rerun_started(sessions, run_id: int, article_id: int) -> float | None:
    """When the article's render first ran again after stage run ``run_id``, if it has.

    Returns:
        Epoch seconds of the new run's start, or None.
    """
    query = select(func.min(StageRun.started_at)).where(
        StageRun.article_id == article_id,
        StageRun.stage == "render",
        StageRun.id > run_id,
        StageRun.outcome.in_(("running", "ok")),
    )
    with sessions() as session:
        started = session.scalar(query)
    return None if started is None else as_utc(started).timestamp()


def wait_recovered(sessions, kill: Kill, worker: WorkerProcess) -> Recovery:
    """Wait until every render the dead process held runs again.

    Args:
        sessions: the benchmark database's sessions.
        kill: the kill.
        worker: the ``farm worker`` launcher, whose log shows the new process's start.

    Returns:
        The round's figures.
    """
    readies = lambda: worker.log_path.read_text(errors="replace").count(READY_MARKER)  # noqa: E731
    before, ready_at = readies(), None
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        if ready_at is None and readies() > before:
            ready_at = time.time()
        starts = [rerun_started(sessions, run_id, article) for run_id, article in kill.runs]
        if all(start is not None for start in starts):
            ready = (ready_at or time.time()) - kill.at
            return Recovery(max(starts) - kill.at, ready)
        if time.monotonic() > deadline:
            raise TimeoutError(f"renders of {kill.runs} not run again in {WAIT_SECONDS:.0f}s")
        time.sleep(0.05)


def run_round(args, number: int, farm, worker: WorkerProcess) -> Recovery:
    """Submit a batch, kill the worker process mid-render, time the recovery, see it end.

    Args:
        args: the options.
        number: the round, from 1 (seeds its articles).
        farm: (Celery app, sessionmaker) of the producer side.
        worker: the ``farm worker`` launcher.

    Returns:
        The round's figures.
    """
    app, sessions = farm
    submitted, _ = submit_rows(app, sessions, synthetic_rows(args.articles, seed=number))
    kill = kill_mid_render(sessions, submitted.batch_id, worker, args.kill_after)
    recovery = wait_recovered(sessions, kill, worker)
    alive = lambda: worker.process.poll() is None  # noqa: E731
    timeout = WAIT_SECONDS + args.articles * args.render_seconds
    wait_batch_ended(sessions, submitted.batch_id, timeout, alive)  # every article ends done
    print(
        f"round {number}: {len(kill.runs)} renders held by the killed process ran again "
        f"{recovery.rerun:.1f}s after the kill (new process ready after {recovery.ready:.1f}s); "
        f"all {args.articles} articles done",
        flush=True,
    )
    return recovery


def worker_command(args, database_url: str, broker_url: str, workdir: Path) -> tuple:
    """``farm worker all`` with the sleeping renderer and the shipped delivery settings.

    Returns:
        (argv, environment).
    """
    env = farm_env(
        database_url, broker_url, workdir / "output", FACTORY,
        **{RENDER_SECONDS_ENV: repr(args.render_seconds)},
    )  # fmt: skip
    env = {name: value for name, value in env.items() if name not in SHIPPED}
    return [sys.executable, "-m", "producer.cli", "worker", "all"], env


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; its worker, database and Redis database go away, even on Ctrl-C.

    Args:
        argv: command-line arguments.

    Returns:
        The exit code.
    """
    args = parse_args(argv)
    shipped = Settings.model_fields
    print(
        f"recovery: {args.rounds} rounds, {args.articles} articles each, render "
        f"{args.render_seconds}s (sleep), SIGKILL {args.kill_after}s into a render; shipped "
        f"lease {shipped['lease_seconds'].default}s, reaper every "
        f"{shipped['reaper_seconds'].default}s",
        flush=True,
    )
    with (
        interrupt_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="bench-recovery-") as workdir,
        redis_database(args.redis_db) as broker_url,
        fresh_database("farm_bench_recovery") as database_url,
    ):
        command = worker_command(args, database_url, broker_url, Path(workdir))
        farm = producer_side(database_url, broker_url)
        with running([command], Path(workdir), "worker", ready_timeout=300, tail_lines=30) as [
            worker
        ]:
            taken = [run_round(args, n, farm, worker) for n in range(1, args.rounds + 1)]
    print(f"slowest round: {max(r.rerun for r in taken):.1f}s")
    print(f"recovery_seconds: {sum(r.rerun for r in taken) / len(taken):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
