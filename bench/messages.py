"""How many messages each stage of an article costs: every stage's task should arrive once.

Real services and real worker processes: a fresh PostgreSQL database, a Redis database of
its own, and ``farm worker text`` and ``farm worker gpu`` (the launcher and the celery
worker it starts, with its pool of threads) with ``bench.fake_runtimes:fixed_render``
(text stages and scoring free, the renderer sleeping ``--render-seconds`` per image). One
batch of ``--articles`` (40) is submitted as ``farm submit`` does; once every article is
done and a few seconds have passed for late copies, the workers' logs are read: each
``Task farm.<stage>[<id>] received`` line is one message delivered. Every article must end
``done``.

It prints, per stage, messages received per article; the last line is
``messages_per_stage: X``, the largest of them (1 = no stage's message arrived twice).

    python -m bench.messages [--articles N] [--render-seconds S]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from bench.catalog import synthetic_rows
from bench.farm import farm_env, producer_side, submit_rows, wait_batch_ended
from bench.processes import running
from bench.services import fresh_database, interrupt_on_sigterm, redis_database
from tasks.registry import ORDER, STAGES

FACTORY = "bench.fake_runtimes:fixed_render"
RENDER_SECONDS_ENV = "BENCH_RENDER_SECONDS"  # read by bench.fake_runtimes.fixed_render
ROLES = ("text", "gpu")
RECEIVED = re.compile(r"Task (farm\.\w+)\[[0-9a-f-]+\] received")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line.

    Args:
        argv: arguments without the program name; ``None`` for ``sys.argv``.

    Returns:
        The options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=40)
    parser.add_argument("--render-seconds", type=float, default=0.1, help="per image")
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=3.0,
        help="wait after the last article is done, for copies still on their way",
    )
    parser.add_argument("--redis-db", type=int, default=15)
    return parser.parse_args(argv)


def received(logs: list[Path]) -> dict[str, int]:
    """Messages the workers received, by task name, from their logs.

    Args:
        logs: the worker processes' log files.

    Returns:
        Task name (``farm.render``) → how many times a worker received it.
    """
    counts: dict[str, int] = {}
    for log in logs:
        for match in RECEIVED.finditer(log.read_text(errors="replace")):
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def per_article(counts: dict[str, int], articles: int) -> dict[str, float]:
    """Messages received per article for each stage, in stage order.

    Args:
        counts: from :func:`received`.
        articles: articles in the batch.

    Returns:
        Stage name → received messages of its task over ``articles``.
    """
    return {name: counts.get(STAGES[name].task, 0) / articles for name in ORDER}


def worker_commands(args, database_url: str, broker_url: str, workdir: Path) -> list:
    """``farm worker text`` and ``farm worker gpu``, with the benchmark's runtimes.

    Args:
        args: the options.
        database_url: the benchmark's database.
        broker_url: the benchmark's Redis database.
        workdir: scratch folder for the outputs.

    Returns:
        (argv, environment) per worker.
    """
    env = farm_env(
        database_url, broker_url, workdir / "output", FACTORY,
        **{RENDER_SECONDS_ENV: repr(args.render_seconds)},
    )  # fmt: skip
    return [([sys.executable, "-m", "producer.cli", "worker", role], env) for role in ROLES]


def count_messages(args, database_url: str, broker_url: str, workers) -> dict[str, float]:
    """Submit one batch, wait until it is done, and count the messages its stages took.

    Args:
        args: the options.
        database_url: the benchmark's database.
        broker_url: the benchmark's Redis database.
        workers: the running worker processes.

    Returns:
        :func:`per_article` of the workers' logs.
    """
    app, sessions = producer_side(database_url, broker_url)
    alive = lambda: all(w.process.poll() is None for w in workers)  # noqa: E731
    submitted, started = submit_rows(app, sessions, synthetic_rows(args.articles))
    timeout = 120 + 2 * args.articles * args.render_seconds
    finished = wait_batch_ended(sessions, submitted.batch_id, timeout, alive)
    print(f"{args.articles} articles done in {finished - started:.1f}s", flush=True)
    time.sleep(args.settle_seconds)
    ratios = per_article(received([w.log_path for w in workers]), args.articles)
    if min(ratios.values()) < 1:
        # Every article is done, so every stage ran for each: the logs miss receipts.
        raise RuntimeError(f"fewer receipts logged than articles done: {ratios}")
    return ratios


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; its workers, database and Redis database go away, even on Ctrl-C.

    Args:
        argv: command-line arguments.

    Returns:
        The exit code.
    """
    args = parse_args(argv)
    print(
        f"messages: {args.articles} articles, farm worker {' + '.join(ROLES)}, "
        f"render {args.render_seconds}s per image (sleep)",
        flush=True,
    )
    with (
        interrupt_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="bench-messages-") as workdir,
        redis_database(args.redis_db) as broker_url,
        fresh_database("farm_bench_messages") as database_url,
    ):
        commands = worker_commands(args, database_url, broker_url, Path(workdir))
        with running(
            commands, Path(workdir), "worker", ready_timeout=300, tail_lines=15
        ) as workers:
            ratios = count_messages(args, database_url, broker_url, workers)
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.3f} messages received per article")
    print(f"messages_per_stage: {max(ratios.values()):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
