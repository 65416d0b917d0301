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

    python -m bench.scale [--articles N] [--render-seconds S] [--gpus P] [--quick]

With ``--costs PROFILE`` it measures the whole farm instead: every model call (translation,
extraction, rendering, scoring) sleeps what ``bench/costs.toml`` says it costs on that
profile, holding its card (:mod:`bench.cards`), in the deployment shape ``--text-on``
(:mod:`bench.shapes`: ``gpu``, the GPU processes serve the text queue too; ``cpu``, one text
process on the CPU; ``card``, a text process pinned to card 0; ``cards``, a text process on
every card beside its GPU process). It prints the farm's
articles per hour, one card's render + score rate (``3600 / (render + score per article at
the shipped score batch size)``, from the table), how the cards spent their time (from the
calls they logged), and last ``farm_efficiency: X``: the farm's rate over N cards' render +
score rate (1: text costs the cards nothing and the farm keeps them busy).

    python -m bench.scale --gpus 4 --costs h100 [--text-on gpu|cpu|card|cards] [--articles N]
        [--text-batch B] [--time-scale K] [--quick]
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

from bench import costs, shapes
from bench.cards import busy_seconds
from bench.catalog import synthetic_rows
from bench.cpuload import CpuMeter
from bench.farm import producer_side, submit_rows, wait_batch_ended
from bench.processes import running
from bench.services import fresh_database, interrupt_on_sigterm, redis_database
from db.models import Article, Render, StageRun, as_utc
from tasks.launcher import plan_workers
from tasks.settings import Settings

GPU_PROCESSES = 8  # the setting; --gpus changes it
QUICK_ARTICLES = 200
COSTED_ARTICLES = 1_000  # with --costs
COSTED_QUICK_ARTICLES = 40
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
    parser.add_argument("--articles", type=int, default=None)
    parser.add_argument("--render-seconds", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="CI size")
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument(
        "--gpus",
        "--gpu-processes",
        dest="gpu_processes",
        type=lambda text: max(1, int(text)),
        default=GPU_PROCESSES,
        help="cards: one GPU-queue process each (1 shows the farm's own cost per article)",
    )
    parser.add_argument("--costs", metavar="PROFILE", help="measure the farm at these costs")
    parser.add_argument("--cost-table", default=str(costs.TABLE))
    parser.add_argument("--text-on", choices=shapes.SHAPES, default="gpu")
    parser.add_argument("--text-batch", type=int, default=None, help="FARM_TEXT_BATCH_SIZE")
    parser.add_argument("--time-scale", type=float, default=1.0, help="factor on every cost")
    args = parser.parse_args(argv)
    if args.costs:
        costs.profile_costs(args.costs, args.cost_table)  # a wrong name fails here
        default, quick = COSTED_ARTICLES, COSTED_QUICK_ARTICLES
    else:
        default, quick = 10_000, QUICK_ARTICLES
    args.articles = quick if args.quick else args.articles or default
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


def measure(args, urls: tuple[str, str], workers, ideal: float) -> tuple[tuple, dict, float]:
    """Warm up, then run the timed batch.

    Args:
        args: the options.
        urls: the benchmark's database and Redis database.
        workers: the running worker processes.
        ideal: the seconds the batch would take at best (the time-out is three times that).

    Returns:
        ((first send, last done) in epoch seconds, :func:`gpu_task_seconds`, busy share of
        the machine's CPUs over the timed run or NaN when unknown).
    """
    app, sessions = producer_side(*urls)
    alive = lambda: all(w.process.poll() is None for w in workers)  # noqa: E731
    timeout = 120 + 3 * ideal
    # Untimed: one render per process, so every process has connected before the clock runs.
    warm, _ = submit_rows(app, sessions, synthetic_rows(args.gpu_processes, seed=-1))
    wait_batch_ended(sessions, warm.batch_id, timeout, alive)
    last_report = [time.monotonic()]

    def progress(open_count: int) -> None:
        if time.monotonic() - last_report[0] >= 30:
            last_report[0] = time.monotonic()
            done = args.articles - open_count
            rate = done / max(1e-9, time.time() - started) * 3600
            print(f"  {done}/{args.articles} done, {rate:.0f} articles/h so far", flush=True)

    rows = synthetic_rows(args.articles)
    meter = CpuMeter()
    meter.start()
    started = time.time()  # the progress lines' clock until the send says when it began
    submitted, started = submit_rows(app, sessions, rows)
    finished = wait_batch_ended(sessions, submitted.batch_id, timeout, alive, 1.0, progress)
    busy = meter.busy()
    tasks = gpu_task_seconds(sessions, submitted.batch_id)
    tasks["timeline"] = gpu_timeline(sessions, submitted.batch_id, (started, finished))
    return (started, finished), tasks, float("nan") if busy is None else busy


def fixed_render_commands(args, urls: tuple[str, str], workdir: Path) -> list:
    """The fixed-render farm's processes: :func:`worker_commands` for ``args``."""
    return worker_commands(args, *urls, workdir)


def costed_commands(args, urls: tuple[str, str], workdir: Path) -> list:
    """The costed farm's processes in the shape ``--text-on`` (:mod:`bench.shapes`)."""
    return shapes.worker_commands(
        args.text_on,
        args.gpu_processes,
        args.costs,
        urls,
        workdir,
        text_batch=args.text_batch,
        time_scale=args.time_scale,
    )


def card_rate(args) -> tuple[float, float]:
    """One card's render + score cost per article and its articles per hour, from the table.

    Scoring counts at the shipped score batch size (a card scores that many at once when
    renders come faster than it scores), every cost times ``--time-scale``.
    """
    table = costs.profile_costs(args.costs, args.cost_table)
    per_article = table["render"].seconds(1) + table["score"].per_article(
        Settings().score_batch_size
    )
    seconds = per_article * args.time_scale
    return seconds, 3600 / seconds


def shipped_text_batch(args) -> int:
    """The text batch of the run: ``--text-batch``, else the shipped default for the device
    the text stages run on (a process on a card, or the CPU text process)."""
    device = "cpu" if args.text_on == "cpu" else "cuda"
    return args.text_batch or Settings(device=device).text_batch()


def costed_floor(args) -> float:
    """The least time the costed batch can take, from the table: its time-out's base.

    The cards' work (render, score and, on the ``gpu`` shape, text) spread over the cards,
    or the text process's work alone when it is the slower.
    """
    card = card_rate(args)[0]
    profile = shapes.CPU_PROFILE if args.text_on == "cpu" else args.costs
    table = costs.profile_costs(profile, args.cost_table)
    batch = shipped_text_batch(args)
    text = sum(table[stage].per_article(batch) for stage in ("translate", "extract"))
    text *= args.time_scale
    if args.text_on in ("gpu", "cards"):
        return args.articles * (card + text) / args.gpu_processes
    return args.articles * max(card / args.gpu_processes, text)


def efficiency_ceiling(args) -> float:
    """The best farm_efficiency the shape can show under the table: every text batch full,
    no card idle, the batch done in :func:`costed_floor`. Text on the cards takes card time
    that the render + score rate does not count; on the CPU it bounds the farm only when it
    is the slower."""
    card = card_rate(args)[0]
    return args.articles * card / (args.gpu_processes * costed_floor(args))


def run(args, commands) -> tuple[tuple, dict, float, dict]:
    """Start the farm's processes on fresh services, measure, stop everything.

    Returns:
        (window, task figures, CPU busy share, card busy seconds by card and stage).
    """
    with (
        interrupt_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="bench-scale-") as workdir,
        redis_database(args.redis_db) as broker_url,
        fresh_database() as database_url,
    ):
        urls = (database_url, broker_url)
        booting = time.perf_counter()
        with running(
            commands(args, urls, Path(workdir)), Path(workdir), "worker", 300, 15
        ) as workers:
            print(f"{len(workers)} worker processes ready in {time.perf_counter() - booting:.1f}s")
            ideal = (
                args.articles
                * (card_rate(args)[0] if args.costs else args.render_seconds)
                / args.gpu_processes
            )
            window, tasks, busy = measure(args, urls, workers, ideal)
        return window, tasks, busy, busy_seconds(workdir, window)


def report_gpu_queue(tasks: dict, busy: float) -> None:
    """Print the GPU queue's times per article and the machine's CPU use."""
    print(
        f"mean per article on the GPU queue: renderer {tasks['renderer']:.3f}s per image; "
        f"render {tasks['render']:.3f}s and score {tasks['score']:.3f}s from claim to stored "
        f"(a process holds several messages: a render waits its turn on the executor)"
    )
    split = ", ".join(f"{name} {value * 1000:.1f}" for name, value in tasks["timeline"].items())
    print(f"GPU-queue process time per article (ms): {split}")
    print(f"machine CPU busy over the timed run: {busy:.0%} of {os.cpu_count()} cores")


def report_farm(args, actual: float, cards: dict) -> float:
    """Print the costed farm's rates and how its cards spent their time.

    Args:
        args: the options.
        actual: seconds from the first send to the last article done.
        cards: card → stage → seconds held (:func:`bench.cards.busy_seconds`).

    Returns:
        farm_efficiency: the farm's articles per hour over N cards' render + score rate.
    """
    per_article, one_card = card_rate(args)
    farm = args.articles / actual * 3600
    held = {stage: sum(c.get(stage, 0.0) for c in cards.values()) for stage in STAGE_NAMES}
    total = sum(held.values()) or float("nan")
    text = held["translate"] + held["extract"]
    shares = ", ".join(f"{stage} {seconds / total:.1%}" for stage, seconds in held.items())
    print(f"card time by stage: {shares} (from the calls the cards logged)")
    print(f"cards busy: {total / (actual * args.gpu_processes):.1%} of {args.gpu_processes} x "
          f"{actual:.1f}s; text share of card time: {text / total:.1%}")  # fmt: skip
    print(f"one card's render + score rate: {one_card:.0f} articles/h "
          f"({per_article:.3f}s per article, from the table)")  # fmt: skip
    print(f"farm: {farm:.0f} articles/h ({args.articles} articles in {actual:.1f}s); "
          f"{args.gpu_processes} cards' render + score rate: "
          f"{args.gpu_processes * one_card:.0f} articles/h")  # fmt: skip
    print(f"the table's ceiling for this shape: {efficiency_ceiling(args):.3f} "
          f"(full text batches, no card idle)")  # fmt: skip
    return farm / (args.gpu_processes * one_card)


STAGE_NAMES = ("translate", "extract", "render", "score")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; its workers, database and Redis database go away, even on Ctrl-C.

    Args:
        argv: command-line arguments.

    Returns:
        The exit code.
    """
    args = parse_args(argv)
    began = time.perf_counter()
    if args.costs:
        batch = shipped_text_batch(args)
        print(
            f"scale: {args.articles} articles, {args.gpu_processes} cards, costs {args.costs} "
            f"(bench/costs.toml, each call sleeps its cost; time scale {args.time_scale:g}), "
            f"text on {args.text_on}, text batch {batch}, {os.cpu_count()} CPU cores",
            flush=True,
        )
        window, tasks, busy, cards = run(args, costed_commands)
    else:
        print(
            f"scale: {args.articles} articles, {args.gpu_processes} GPU-queue processes, "
            f"render {args.render_seconds}s per image (sleep, no GPU on this machine), "
            f"{os.cpu_count()} CPU cores",
            flush=True,
        )
        window, tasks, busy, cards = run(args, fixed_render_commands)
    actual = window[1] - window[0]
    report_gpu_queue(tasks, busy)
    if args.costs:
        name, value = "farm_efficiency", report_farm(args, actual, cards)
    else:
        ideal = args.articles * args.render_seconds / args.gpu_processes
        print(
            f"ideal: {ideal:.1f}s  actual: {actual:.1f}s  ({args.articles / actual:.2f} articles/s)"
        )
        name, value = "scale_efficiency", ideal / actual
    print(f"whole benchmark, start-up and clean-up included: {time.perf_counter() - began:.0f}s")
    print(f"{name}: {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
