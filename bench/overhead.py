"""A diagnostic: what the farm's delivery costs per article next to bare Celery chains.

Both run on the same Redis (one database, different queues) in the same run, in interleaved
rounds, each by one real worker process with a pool of threads, as many as a ``farm worker
all`` process holds messages (``role_concurrency("all")``):

* bare: ``celery -A bench.bare_app worker``, four no-op tasks chained per article;
* farm: the worker process ``farm worker all`` starts (:func:`tasks.launcher.plan_workers`)
  with ``bench.fake_runtimes:zero_cost``, batches stored with ``import_catalog`` and sent
  with ``send_and_mark``, on a fresh PostgreSQL database.

A round's throughput is articles over the time from the first send to the last chain's end
(the farm's ``finished_at`` in the database; the bare chain's own time stamp in Redis). It
also prints the CPU time per article of each worker process, PostgreSQL and Redis. The last
line is ``overhead_ratio: X``, farm throughput over bare throughput. With free models this
is the price of the farm's guarantees (a claim and a completion per stage, files written);
it is no goal in itself: with real models the model calls dominate.

    python -m bench.overhead [--articles N] [--rounds R] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import redis
from pydantic import SecretStr

from bench import bare_app
from bench.catalog import synthetic_rows
from bench.cpuload import CpuShares
from bench.farm import farm_env, producer_side, submit_rows, wait_batch_ended
from bench.processes import running
from bench.services import fresh_database, interrupt_on_sigterm, redis_database
from tasks.launcher import plan_workers
from tasks.registry import role_concurrency
from tasks.settings import Settings

CONCURRENCY = role_concurrency("all", Settings())  # what `farm worker all` holds per process
FACTORY = "bench.fake_runtimes:zero_cost"
WARMUP_ARTICLES = 20


@dataclass(frozen=True)
class Measurement:
    """One side of one round."""

    side: str
    articles: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per part of the setup

    @property
    def throughput(self) -> float:
        """Articles per second."""
        return self.articles / self.seconds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line.

    Args:
        argv: arguments without the program name; ``None`` for ``sys.argv``.

    Returns:
        The options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=300, help="articles per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="CI size: 100 articles, 2 rounds")
    parser.add_argument("--redis-db", type=int, default=10)
    args = parser.parse_args(argv)
    if args.quick:
        args.articles, args.rounds = 100, 2
    return args


def worker_commands(broker_url: str, database_url: str, workdir: Path) -> list:
    """The bare and the farm worker command lines.

    Args:
        broker_url: the benchmark's Redis database.
        database_url: the benchmark's database.
        workdir: scratch folder (the farm writes its images there).

    Returns:
        [(argv, env) of the bare worker, (argv, env) of the farm worker].
    """
    bare = [
        sys.executable, "-m", "celery", "-A", "bench.bare_app", "worker",
        "--queues", f"{bare_app.TEXT_QUEUE},{bare_app.GPU_QUEUE}", "--hostname", "bare@bench",
        "--pool", "threads", "--concurrency", str(CONCURRENCY), "--loglevel", "INFO",
    ]  # fmt: skip
    env = farm_env(database_url, broker_url, workdir / "output", FACTORY)
    settings = Settings(database_url=database_url, broker_url=SecretStr(broker_url),
                        output_dir=workdir / "output", runtime_factory=FACTORY)  # fmt: skip
    # The celery process itself, not the launcher above it: its CPU is what is measured.
    [farm] = plan_workers("all", settings, concurrency=CONCURRENCY)
    return [(bare, os.environ | {bare_app.BROKER_ENV: broker_url}), (farm.argv, env | farm.env)]


def bare_round(client: redis.Redis, articles: int, timeout: float) -> Measurement:
    """Send ``articles`` bare chains and wait for the last to end.

    Args:
        client: the benchmark's Redis database.
        articles: how many chains.
        timeout: seconds before giving up.

    Returns:
        The measurement.
    """
    client.delete(bare_app.DONE_COUNTER, bare_app.LAST_DONE)
    started = time.time()
    with bare_app.app.producer_or_acquire() as producer:
        for index in range(articles):
            bare_app.bare_chain(index, f"SKU-{index:06d}").apply_async(producer=producer)
    deadline = time.monotonic() + timeout
    while int(client.get(bare_app.DONE_COUNTER) or 0) < articles:
        if time.monotonic() > deadline:
            raise TimeoutError(f"bare chains not done after {timeout}s")
        time.sleep(0.05)
    return Measurement("bare", articles, float(client.get(bare_app.LAST_DONE)) - started)


def farm_round(app, sessions, articles: int, seed: int, timeout: float, alive) -> Measurement:
    """Store and send one farm batch and wait until its last article is done.

    Args:
        app: the configured farm app.
        sessions: the benchmark database's sessions.
        articles: batch size.
        seed: seed of the synthetic rows.
        timeout: seconds before giving up.
        alive: False once the farm worker has died.

    Returns:
        The measurement.
    """
    submitted, started = submit_rows(app, sessions, synthetic_rows(articles, seed))
    finished = wait_batch_ended(sessions, submitted.batch_id, timeout, alive)
    return Measurement("farm", articles, finished - started)


def run_rounds(args, broker_url: str, database_url: str, workers) -> list[Measurement]:
    """Run the interleaved rounds; the side that goes first alternates.

    Args:
        args: the options.
        broker_url: the benchmark's Redis database.
        database_url: the benchmark's database.
        workers: the running [bare, farm] worker processes.

    Returns:
        Every measurement, in the order taken, with the CPU each side's setup spent.
    """
    bare_app.app.conf.broker_url = broker_url
    app, sessions = producer_side(database_url, broker_url)
    client = redis.Redis.from_url(broker_url)
    farm_alive = lambda: workers[1].process.poll() is None  # noqa: E731
    timeout = 60 + args.articles
    # Untimed: the worker threads open their database and broker connections on first use.
    bare_round(client, WARMUP_ARTICLES, timeout)
    farm_round(app, sessions, WARMUP_ARTICLES, -1, timeout, farm_alive)
    shares = {
        "bare": CpuShares(workers[0].process.pid),
        "farm": CpuShares(workers[1].process.pid, database_url.rsplit("/", 1)[1]),
    }
    measurements = []
    for number in range(args.rounds):
        sides = {
            "bare": lambda: bare_round(client, args.articles, timeout),
            "farm": lambda n=number: farm_round(
                app, sessions, args.articles, n, timeout, farm_alive
            ),
        }
        order = ("bare", "farm") if number % 2 == 0 else ("farm", "bare")
        for side in order:
            shares[side].start()
            result = replace(sides[side](), cpu=shares[side].stop())
            measurements.append(result)
            print(
                f"round {number + 1} {side}: {result.articles} articles in "
                f"{result.seconds:.2f}s = {result.throughput:.1f} articles/s",
                flush=True,
            )
    return measurements


def report(measurements: list[Measurement]) -> float:
    """Print the totals per side and the ratio.

    Args:
        measurements: every round's measurements.

    Returns:
        Farm throughput over bare throughput, over all rounds.
    """
    totals = {}
    for side in ("bare", "farm"):
        taken = [m for m in measurements if m.side == side]
        articles = sum(m.articles for m in taken)
        totals[side] = articles / sum(m.seconds for m in taken)
        print(f"{side} overall: {totals[side]:.1f} articles/s")
        spent = {part: sum(m.cpu.get(part, 0.0) for m in taken) for part in taken[0].cpu}
        split = ", ".join(f"{part} {1000 * sec / articles:.1f}" for part, sec in spent.items())
        print(f"{side} CPU per article (ms): {split}; {1000 * sum(spent.values()) / articles:.1f}")
    ratio = totals["farm"] / totals["bare"]
    print(f"overhead_ratio: {ratio:.3f}")
    return ratio


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; everything it started is stopped and removed, even on Ctrl-C.

    Args:
        argv: command-line arguments.

    Returns:
        The exit code.
    """
    args = parse_args(argv)
    print(
        f"overhead: {args.rounds} rounds x {args.articles} articles per side, CPU only, "
        f"{os.cpu_count()} cores, {CONCURRENCY} threads per worker process",
        flush=True,
    )
    with (
        interrupt_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="bench-overhead-") as workdir,
        redis_database(args.redis_db) as broker_url,
        fresh_database() as database_url,
    ):
        commands = worker_commands(broker_url, database_url, Path(workdir))
        with running(commands, Path(workdir), "worker") as workers:
            measurements = run_rounds(args, broker_url, database_url, workers)
    report(measurements)
    return 0


if __name__ == "__main__":
    sys.exit(main())
