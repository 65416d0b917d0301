"""The text stages with and without batching: real text workers, real (tiny) models.

Two sides, the same ``farm worker text`` with the same tiny random-weight Marian and Phi-3 on
the CPU, on one PostgreSQL database and Redis: ``FARM_TEXT_BATCH_SIZE=1`` (one article per
model call) and the batch size asked for. Rounds are interleaved and the side going first
alternates; for each side of a round its worker is started, warmed up with an untimed batch of
four articles (models loaded, connections open), timed on a batch of synthetic German
articles and stopped, so only one worker ever serves the queue. A round's time runs from the
first chain sent to the end of the last extraction. No GPU worker runs: the render messages
stay queued and are flushed at the end.

The last line is ``text_batch_speedup: X``: batched text articles per second over
one-at-a-time articles per second (tiny models on a CPU: it shows the farm's batching at
work, not what Phi-3-mini gains on a GPU; ``bench.gpu`` measures that).

    python -m bench.text [--articles N] [--rounds R] [--batch-size B] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from bench.catalog import synthetic_rows
from bench.farm import producer_side, submit_rows
from bench.processes import running
from bench.services import fresh_database, interrupt_on_sigterm, redis_database
from db.models import Article, ArticleStatus, StageRun, as_utc

TEXT_STATUSES = (ArticleStatus.pending.value, ArticleStatus.translated.value)


@dataclass(frozen=True)
class Farm:
    """The benchmark's database and broker, and the producer side's app and sessions."""

    database_url: str
    broker_url: str
    app: object
    sessions: object


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line.

    Args:
        argv: arguments without the program name; ``None`` for ``sys.argv``.

    Returns:
        The options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=96, help="articles per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="CI size: 32 articles, 2 rounds")
    parser.add_argument("--redis-db", type=int, default=14)
    args = parser.parse_args(argv)
    if args.quick:
        args.articles, args.rounds = 32, 2
    return args


def worker_command(farm: Farm, batch_size: int, workdir: Path) -> tuple[list[str], dict]:
    """The ``farm worker text`` command line of one side.

    Args:
        farm: the benchmark's database and broker.
        batch_size: the side's ``FARM_TEXT_BATCH_SIZE``.
        workdir: scratch folder (model cache and outputs).

    Returns:
        (argv, environment).
    """
    env = os.environ | {
        "FARM_DATABASE_URL": farm.database_url,
        "FARM_BROKER_URL": farm.broker_url,
        "FARM_OUTPUT_DIR": str(workdir / "output"),
        "FARM_PROFILE": "tiny",
        "FARM_DEVICE": "cpu",
        "FARM_MODEL_CACHE": str(workdir / "models"),
        "FARM_TEXT_BATCH_SIZE": str(batch_size),
        "HF_HUB_OFFLINE": "1",
    }
    return [sys.executable, "-m", "producer.cli", "worker", "text"], env


def text_round(farm: Farm, articles: int, seed: int, timeout: float, alive) -> float:
    """Send one batch and wait until every article has passed extraction.

    Args:
        farm: the benchmark's database, broker and producer side.
        articles: batch size.
        seed: seed of the synthetic rows.
        timeout: seconds before giving up.
        alive: False once the side's worker has died.

    Returns:
        Seconds from the first chain sent to the end of the last extraction.
    """
    sessions = farm.sessions
    submitted, started = submit_rows(farm.app, sessions, synthetic_rows(articles, seed))
    in_batch = Article.batch_id == submitted.batch_id
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            statuses = session.scalars(select(Article.status).where(in_batch)).all()
        if not any(status in TEXT_STATUSES for status in statuses):
            break
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"text stages of {submitted.batch_id} not through")
        time.sleep(0.2)
    if statuses.count(ArticleStatus.extracted.value) != articles:
        raise RuntimeError(f"not every article was extracted: {sorted(set(statuses))}")
    with sessions() as session:
        runs = session.execute(
            select(StageRun.started_at, StageRun.seconds)
            .join(Article, Article.id == StageRun.article_id)
            .where(in_batch, StageRun.stage == "extract", StageRun.outcome == "ok")
        ).all()
    ended = max(as_utc(start).timestamp() + seconds for start, seconds in runs)
    return ended - started


def timed_side(farm: Farm, batch_size: int, args, round_number: int, workdir: Path) -> float:
    """Start one side's worker, warm it up, time one batch, stop it.

    Args:
        farm: the benchmark's database, broker and producer side.
        batch_size: the side's ``FARM_TEXT_BATCH_SIZE``.
        args: the options.
        round_number: seeds the round's articles.
        workdir: scratch folder.

    Returns:
        Seconds of the timed batch.
    """
    timeout = 120 + 5 * args.articles
    command = worker_command(farm, batch_size, workdir)
    name = f"text-r{round_number}-b{batch_size}"
    with running([command], workdir, name, ready_timeout=300) as [worker]:
        alive = lambda: worker.process.poll() is None  # noqa: E731
        text_round(farm, 4, -1 - round_number, timeout, alive)  # untimed warm-up
        return text_round(farm, args.articles, round_number, timeout, alive)


def run_rounds(args, farm: Farm, workdir: Path) -> dict[int, list[float]]:
    """Interleaved rounds; the side going first alternates.

    Args:
        args: the options.
        farm: the benchmark's database, broker and producer side.
        workdir: scratch folder.

    Returns:
        Batch size → seconds of each timed round.
    """
    seconds: dict[int, list[float]] = {1: [], args.batch_size: []}
    for number in range(args.rounds):
        order = list(seconds) if number % 2 == 0 else list(reversed(seconds))
        for batch_size in order:
            taken = timed_side(farm, batch_size, args, number, workdir)
            seconds[batch_size].append(taken)
            print(
                f"round {number + 1} batch size {batch_size}: {args.articles} articles "
                f"in {taken:.2f}s = {args.articles / taken:.2f} articles/s",
                flush=True,
            )
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; everything it started is stopped and removed, even on Ctrl-C.

    Args:
        argv: command-line arguments.

    Returns:
        The exit code.
    """
    args = parse_args(argv)
    if args.batch_size < 2:
        raise SystemExit("--batch-size must be at least 2 to compare with one at a time")
    print(
        f"text: {args.rounds} rounds x {args.articles} articles per side, tiny models on the "
        f"CPU ({os.cpu_count()} cores), batch size 1 vs {args.batch_size}",
        flush=True,
    )
    with (
        interrupt_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="bench-text-") as workdir,
        redis_database(args.redis_db) as broker_url,
        fresh_database("farm_bench_text") as database_url,
    ):
        farm = Farm(database_url, broker_url, *producer_side(database_url, broker_url))
        seconds = run_rounds(args, farm, Path(workdir))
    rates = {size: args.articles * len(taken) / sum(taken) for size, taken in seconds.items()}
    for size, rate in rates.items():
        print(f"batch size {size} overall: {rate:.2f} articles/s")
    print(f"text_batch_speedup: {rates[args.batch_size] / rates[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
