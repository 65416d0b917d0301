"""How fast the farm submits a big catalog, next to bare ``apply_async`` of the same chains.

* farm: ``read_catalog`` of a generated 10,000-article ``.xlsx`` workbook (German-like text),
  ``import_catalog`` on a fresh PostgreSQL database and ``send_and_mark`` (the chains sent to
  Redis, then recorded as sent), as ``farm submit`` does;
* bare: ``article_chain(id, key).apply_async()`` once per article for the same chains, with
  no reading, validation or database.

No worker runs; the queue is flushed between runs. Sides alternate over the rounds. The last
line is ``submit_ratio: X``, bare time over farm time (1 or more: the farm is at least as fast).

    python -m bench.submit [--articles N] [--rounds R] [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.catalog import write_workbook
from bench.farm import producer_side
from bench.services import fresh_database, interrupt_on_sigterm, redis_database
from producer.catalog import read_catalog
from producer.imports import import_catalog
from producer.submit import send_and_mark
from tasks.chains import article_chain
from tasks.queues import TEXT_QUEUE


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line.

    Args:
        argv: arguments without the program name; ``None`` for ``sys.argv``.

    Returns:
        The options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2, help="runs per side, alternating")
    parser.add_argument("--quick", action="store_true", help="CI size: 1,000 articles")
    parser.add_argument("--profile", action="store_true", help="print the farm side's profile")
    parser.add_argument("--redis-db", type=int, default=11)
    args = parser.parse_args(argv)
    if args.quick:
        args.articles = 1_000
    return args


def farm_submit(workbook: Path, app, sessions) -> tuple[float, dict[str, float]]:
    """Submit the workbook the way ``farm submit`` does, timing each step.

    Args:
        workbook: the catalog.
        app: the configured farm app.
        sessions: the benchmark database's sessions.

    Returns:
        (total seconds, seconds per step).
    """
    steps = {}
    started = time.perf_counter()
    rows = read_catalog([workbook])
    steps["read_catalog"] = time.perf_counter() - started
    with sessions() as session:
        submitted = import_catalog(session, rows, "bench", {"profile": "bench"}, new_batch=True)
    steps["import_catalog"] = time.perf_counter() - started - sum(steps.values())
    send_and_mark(app, sessions.kw["bind"], submitted.to_send)
    steps["send_and_mark"] = time.perf_counter() - started - sum(steps.values())
    return time.perf_counter() - started, steps


def bare_submit(articles: list[tuple[int, str]]) -> float:
    """Send the same chains with one plain ``apply_async`` each.

    Args:
        articles: (article id, key) pairs.

    Returns:
        Seconds taken.
    """
    started = time.perf_counter()
    for article_id, key in articles:
        article_chain(article_id, key).apply_async()
    return time.perf_counter() - started


def queued(client: redis.Redis) -> int:
    """Messages waiting in the farm's text queue (every chain's first task goes there).

    Args:
        client: the benchmark's Redis database.

    Returns:
        The count over every priority list of the queue (kombu keeps one list per priority).
    """
    return sum(client.llen(key) for key in client.scan_iter(match=f"{TEXT_QUEUE}*"))


def run_rounds(args, workbook: Path, broker_url: str, database_url: str) -> tuple[list, list]:
    """Alternate farm and bare submissions, checking each sent every chain.

    Args:
        args: the options.
        workbook: the catalog.
        broker_url: the benchmark's Redis database.
        database_url: the benchmark's database.

    Returns:
        (farm seconds per round, bare seconds per round).
    """
    app, sessions = producer_side(database_url, broker_url)
    client = redis.Redis.from_url(broker_url)
    keys = [(index + 1, f"SKU-{index:06d}") for index in range(args.articles)]
    farm_times, bare_times = [], []
    for number in range(args.rounds):
        for side in ("farm", "bare") if number % 2 == 0 else ("bare", "farm"):
            client.flushdb()
            if side == "farm":
                seconds, steps = farm_submit(workbook, app, sessions)
                farm_times.append(seconds)
                split = ", ".join(f"{name} {value:.2f}s" for name, value in steps.items())
            else:
                seconds = bare_submit(keys)
                bare_times.append(seconds)
                split = "apply_async only"
            if queued(client) != args.articles:
                raise RuntimeError(f"{side}: {queued(client)} chains queued, not {args.articles}")
            print(f"round {number + 1} {side}: {seconds:.2f}s ({split})", flush=True)
    return farm_times, bare_times


def profile_farm(workbook: Path, broker_url: str, database_url: str) -> None:
    """Print where a farm submission spends its time (cProfile, top 25 by cumulative time).

    Args:
        workbook: the catalog.
        broker_url: the benchmark's Redis database.
        database_url: the benchmark's database.
    """
    app, sessions = producer_side(database_url, broker_url)
    redis.Redis.from_url(broker_url).flushdb()
    profiler = cProfile.Profile()
    profiler.runcall(farm_submit, workbook, app, sessions)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; its database and Redis database are removed, even on Ctrl-C.

    Args:
        argv: command-line arguments.

    Returns:
        The exit code.
    """
    args = parse_args(argv)
    print(
        f"submit: {args.articles} articles, {args.rounds} rounds per side, CPU only, "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    with (
        interrupt_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="bench-submit-") as workdir,
        redis_database(args.redis_db) as broker_url,
        fresh_database() as database_url,
    ):
        workbook = write_workbook(Path(workdir) / "catalog.xlsx", args.articles)
        farm_times, bare_times = run_rounds(args, workbook, broker_url, database_url)
        if args.profile:
            profile_farm(workbook, broker_url, database_url)
    farm, bare = sum(farm_times) / len(farm_times), sum(bare_times) / len(bare_times)
    print(f"farm mean: {farm:.2f}s ({args.articles / farm:.0f} articles/s)")
    print(f"bare mean: {bare:.2f}s ({args.articles / bare:.0f} chains/s)")
    print(f"submit_ratio: {bare / farm:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
