"""The bookkeeping of one stage task alone: claim and completion in a loop on PostgreSQL.

One process claims and completes the translate stage of N stored articles on a fresh
PostgreSQL database with the calls a stage task makes (:func:`db.transitions.claim`, then
:func:`db.transitions.complete`, each its own transaction). It prints wall-clock and this
process's CPU time per stage (the client side: SQLAlchemy, psycopg); the server's share is
the difference. The last line is ``claim_complete_ms: X``, wall-clock milliseconds per stage.

    python -m bench.claims [--articles N]
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.catalog import synthetic_rows
from bench.services import fresh_database
from db import transitions
from db.engine import make_engine, session_factory
from db.models import ArticleStatus
from producer.imports import import_catalog

WARM_UP = 50
WORKER = "bench@claims"
LEASE_SECONDS = 45


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line.

    Args:
        argv: arguments without the program name; ``None`` for ``sys.argv``.

    Returns:
        The options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=1000, help="timed stages")
    return parser.parse_args(argv)


def claim_and_complete(engine, article_ids: list[int]) -> None:
    """Claim and complete the translate stage of each article, as a stage task does.

    Args:
        engine: the database.
        article_ids: pending articles.
    """
    pending, translated = ArticleStatus.pending.value, ArticleStatus.translated.value
    for article_id in article_ids:
        token = transitions.new_token(WORKER)
        held = transitions.claim(
            engine, article_id, "translate", pending, token, WORKER, LEASE_SECONDS
        )
        if held is None:
            raise RuntimeError(f"article {article_id}: the claim took nothing")
        if not transitions.complete(engine, held, translated, {"translation": "-"}):
            raise RuntimeError(f"article {article_id}: completion lost its lease")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark.

    Args:
        argv: command-line arguments.

    Returns:
        The exit code.
    """
    args = parse_args(argv)
    with fresh_database("farm_bench_claims") as url:
        engine = make_engine(url)
        sessions = session_factory(engine)
        with sessions() as session:
            rows = synthetic_rows(WARM_UP + args.articles)
            stored = import_catalog(session, rows, "claims", {"profile": "bench"}, new_batch=True)
        ids = [article_id for article_id, _key in stored.to_send]
        claim_and_complete(engine, ids[:WARM_UP])
        wall, cpu = time.perf_counter(), time.process_time()
        claim_and_complete(engine, ids[WARM_UP:])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        engine.dispose()
    per_stage = 1000 / args.articles
    print(f"{args.articles} stages claimed and completed on PostgreSQL, as a stage task does")
    print(f"client CPU: {cpu * per_stage:.2f} ms per stage")
    print(f"claim_complete_ms: {wall * per_stage:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
