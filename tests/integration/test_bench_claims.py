"""The stage-bookkeeping benchmark runs against the real PostgreSQL and reports its figure."""

from __future__ import annotations

import pytest

from bench import claims
from bench.catalog import synthetic_rows
from bench.services import fresh_database
from db.engine import make_engine, session_factory
from producer.imports import import_catalog

pytestmark = pytest.mark.integration


def test_the_claims_benchmark_completes_every_stage_and_ends_with_milliseconds(capsys):
    assert claims.main(["--articles", "20"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    name, value = lines[-1].split(": ")
    assert name == "claim_complete_ms" and float(value) > 0
    assert lines[0].startswith("20 stages claimed and completed")


def test_a_stage_that_is_already_done_stops_the_benchmark_instead_of_counting_nothing():
    with fresh_database("farm_test_bench_claims") as url:
        engine = make_engine(url)
        with session_factory(engine)() as session:
            stored = import_catalog(session, synthetic_rows(2), "claims", {"profile": "bench"},
                                    new_batch=True)  # fmt: skip
        ids = [article_id for article_id, _key in stored.to_send]
        claims.claim_and_complete(engine, ids)
        with pytest.raises(RuntimeError, match="the claim took nothing"):
            claims.claim_and_complete(engine, ids)
        engine.dispose()
