"""How close 8 GPU-queue worker processes get to perfect scaling, with a fixed render time.

Eight GPU-queue worker processes as ``farm worker gpu --gpus 0,...,7`` plans them
(:func:`tasks.launcher.plan_workers`: one ``celery worker`` with a pool of threads per card,
each holding ``role_concurrency("gpu")`` messages and feeding one model executor) run
``bench.fake_runtimes:fixed_render``, whose renderer sleeps ``--render-seconds`` per image;
translation, extraction and scoring cost nothing, and one text worker process (its default
concurrency) serves the text queue. No GPU is used: the sleeping renderer stands in for one,
so the figure is the farm's scheduling overhead. On a small machine the render time must
stay long enough that the CPU (database, broker, workers) is not the bottleneck; the
benchmark prints the machine's CPU use over the timed run to check. It also splits each
GPU-queue process's time per article, from the stage runs: the renderer busy, work held but
the renderer idle, nothing held, and the idle time at the edges. ``--gpu-processes 1``
shows that split on a quiet machine, without 8 processes sharing it.

Ideal time is ``articles x render_seconds / processes``; actual time runs from the first
chain sent to the last article done (``finished_at`` in the database). The last line is
``scale_efficiency: X``, ideal over actual.

    python -m bench.scale [--articles N] [--render-seconds S] [--gpu-processes P] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import func, select

from bench.catalog import synthetic_rows
from bench.cpuload import CpuMeter
from bench.farm import producer_side, submit_rows, wait_batch_ended
from bench.processes import running
from bench.services import fresh_database, interrupt_on_sigterm, redis_database
from db.models import Article, Render, StageRun, as_utc
from tasks.launcher import plan_workers
from tasks.settings import Settings

GPU_PROCESSES = 8  # the setting; --gpu-processes changes it
QUICK_ARTICLES = 200
FACTORY = "bench.fake_runtimes:fixed_render"
# Read by bench.fake_runtimes.fixed_render in the workers (not imported here: it pulls in
# every model library, which this process does not need).
RENDER_SECONDS_ENV = "BENCH_RENDER_SECONDS"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line.

    Args:
        argv: arguments without the program name; ``None`` for ``sys.argv``.

    Returns:
        The options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--render-seconds", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help=f"CI size: {QUICK_ARTICLES} articles")
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument(
        "--gpu-processes",
        type=lambda text: max(1, int(text)),
        default=GPU_PROCESSES,
        help="GPU-queue processes (1 shows the farm's own cost per article without contention)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.articles = QUICK_ARTICLES
    return args


def worker_commands(args, database_url: str, broker_url: str, workdir: Path) -> list:
    """Command lines of the GPU-queue processes and the text process, as the launcher plans them.

    Args:
        args: the options.
        database_url: the benchmark's database.
        broker_url: the benchmark's Redis database.
        workdir: scratch folder for the outputs.

    Returns:
        (argv, environment) per process.
    """
    settings = Settings(
        database_url=database_url,
        broker_url=SecretStr(broker_url),
        output_dir=workdir / "output",
        runtime_factory=FACTORY,
    )
    env = os.environ | {RENDER_SECONDS_ENV: repr(args.render_seconds), "HF_HUB_OFFLINE": "1"}
    gpus = [str(index) for index in range(args.gpu_processes)]
    planned = plan_workers("gpu", settings, gpus) + plan_workers("text", settings)
    return [(worker.argv, env | worker.env) for worker in planned]


def gpu_task_seconds(sessions, batch_id: str) -> dict[str, float]:
    """Mean times of the GPU-queue work of a batch, from the farm's own records.

    Args:
        sessions: the benchmark database's sessions.
        batch_id: the batch.

    Returns:
        ``renderer``: what the renderer reported per image; ``render`` and ``score``: each
        stage task from its claim to its stored outputs (stage runs).
    """
    in_batch = Article.batch_id == batch_id
    with sessions() as session:
        means = {
            "renderer": session.scalar(
                select(func.avg(Render.seconds)).join(Article).where(in_batch)
            )
        }
        for stage in ("render", "score"):
            query = (
                select(func.avg(StageRun.seconds))
                .join(Article)
                .where(in_batch, StageRun.stage == stage, StageRun.outcome == "ok")
            )
            means[stage] = session.scalar(query)
    return {name: float(value) for name, value in means.items()}


def gpu_timeline(sessions, batch_id: str, window: tuple[float, float]) -> dict[str, float]:
    """Where the GPU-queue processes spent their time, per article, from the stage runs.

    A process holds several messages at once, so its stage runs overlap (claimed together,
    each waiting its turn on the model executor); what counts is their union per process.

    Args:
        sessions: the benchmark database's sessions.
        batch_id: the batch.
        window: the timed run's first send and last article done (epoch seconds).

    Returns:
        Seconds per article, summed over the processes, which add up to the window times the
        processes: ``render call`` (what the renderer reported: the card busy), ``held,
        renderer idle`` (the rest of the union of the render and score runs: claims, stores,
        score calls and PNG writes that no render hid), ``nothing held`` (gaps between the
        runs: hand-over of messages, waiting for work) and ``before first, after last`` (a
        process's wait for its first article and its idle time at the end).
    """
    runs, calls = _gpu_runs(sessions, batch_id)
    spans: dict[str, list[tuple[float, float]]] = {}
    for worker, _stage, started, seconds in runs:
        begin = as_utc(started).timestamp()
        spans.setdefault(worker, []).append((begin, begin + seconds))
    held = gaps = edges = 0.0
    for intervals in spans.values():
        intervals.sort()
        first, covered_until = intervals[0]
        held += covered_until - first
        for begin, end in intervals[1:]:
            gaps += max(0.0, begin - covered_until)
            held += max(0.0, end - max(begin, covered_until))
            covered_until = max(covered_until, end)
        edges += first - window[0] + window[1] - covered_until
    articles = sum(1 for run in runs if run.stage == "render") or 1
    return {
        "render call": calls / articles,
        "held, renderer idle": (held - calls) / articles,
        "nothing held": gaps / articles,
        "before first, after last": edges / articles,
    }


def _gpu_runs(sessions, batch_id: str) -> tuple[list, float]:
    # The batch's successful render and score runs, and the renderer's reported seconds.
    query = (
        select(StageRun.worker, StageRun.stage, StageRun.started_at, StageRun.seconds)
        .join(Article)
        .where(Article.batch_id == batch_id, StageRun.stage.in_(("render", "score")))
        .where(StageRun.outcome == "ok")
    )
    with sessions() as session:
        runs = session.execute(query).all()
        calls = session.scalar(
            select(func.sum(Render.seconds)).join(Article).where(Article.batch_id == batch_id)
        )
    return runs, float(calls or 0)


def measure(args, database_url: str, broker_url: str, workers) -> tuple[float, dict, float]:
    """Warm up, then run the timed batch.

    Args:
        args: the options.
        database_url: the benchmark's database.
        broker_url: the benchmark's Redis database.
        workers: the running worker processes.

    Returns:
        (actual seconds from first send to last done, :func:`gpu_task_seconds`, busy share of
        the machine's CPUs over the timed run or NaN when unknown).
    """
    app, sessions = producer_side(database_url, broker_url)
    alive = lambda: all(w.process.poll() is None for w in workers)  # noqa: E731
    ideal = args.articles * args.render_seconds / args.gpu_processes
    timeout = 120 + 3 * ideal
    # Untimed: one render per process, so every process has connected before the clock runs.
    warm, _ = submit_rows(app, sessions, synthetic_rows(args.gpu_processes, seed=-1))
    wait_batch_ended(sessions, warm.batch_id, timeout, alive)
    last_report = [time.monotonic()]

    def progress(open_count: int) -> None:
        if time.monotonic() - last_report[0] >= 30:
            last_report[0] = time.monotonic()
            print(f"  {args.articles - open_count}/{args.articles} done", flush=True)

    rows = synthetic_rows(args.articles)
    meter = CpuMeter()
    meter.start()
    submitted, started = submit_rows(app, sessions, rows)
    finished = wait_batch_ended(sessions, submitted.batch_id, timeout, alive, 1.0, progress)
    busy = meter.busy()
    tasks = gpu_task_seconds(sessions, submitted.batch_id)
    tasks["timeline"] = gpu_timeline(sessions, submitted.batch_id, (started, finished))
    return finished - started, tasks, float("nan") if busy is None else busy


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; its workers, database and Redis database go away, even on Ctrl-C.

    Args:
        argv: command-line arguments.

    Returns:
        The exit code.
    """
    args = parse_args(argv)
    began = time.perf_counter()
    print(
        f"scale: {args.articles} articles, {args.gpu_processes} GPU-queue processes, "
        f"render {args.render_seconds}s per image (sleep, no GPU on this machine), "
        f"{os.cpu_count()} CPU cores",
        flush=True,
    )
    with (
        interrupt_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="bench-scale-") as workdir,
        redis_database(args.redis_db) as broker_url,
        fresh_database() as database_url,
    ):
        commands = worker_commands(args, database_url, broker_url, Path(workdir))
        booting = time.perf_counter()
        with running(
            commands, Path(workdir), "worker", ready_timeout=300, tail_lines=15
        ) as workers:
            print(f"{len(workers)} worker processes ready in {time.perf_counter() - booting:.1f}s")
            actual, tasks, busy = measure(args, database_url, broker_url, workers)
    ideal = args.articles * args.render_seconds / args.gpu_processes
    print(
        f"mean per article on the GPU queue: renderer {tasks['renderer']:.3f}s per image; "
        f"render {tasks['render']:.3f}s and score {tasks['score']:.3f}s from claim to stored "
        f"(a process holds several messages: a render waits its turn on the executor)"
    )
    split = ", ".join(f"{name} {value * 1000:.1f}" for name, value in tasks["timeline"].items())
    print(f"GPU-queue process time per article (ms): {split}")
    print(f"machine CPU busy over the timed run: {busy:.0%} of {os.cpu_count()} cores")
    print(f"ideal: {ideal:.1f}s  actual: {actual:.1f}s  ({args.articles / actual:.2f} articles/s)")
    print(f"whole benchmark, start-up and clean-up included: {time.perf_counter() - began:.0f}s")
    print(f"scale_efficiency: {ideal / actual:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
