"""The stage-bookkeeping benchmark runs against the real PostgreSQL and reports its figure."""

from __future__ import annotations

import pytest

from bench import claims

pytestmark = pytest.mark.integration


def test_the_claims_benchmark_completes_every_stage_and_ends_with_milliseconds(capsys):
    assert claims.main(["--articles", "20"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    name, value = lines[-1].split(": ")
    assert name == "claim_complete_ms" and float(value) > 0
    assert lines[0].startswith("20 stages claimed and completed")
