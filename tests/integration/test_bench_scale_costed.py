"""bench.scale with stage costs runs a real two-card farm end to end and reports its figure."""

from __future__ import annotations

import pytest

from bench import scale

pytestmark = pytest.mark.integration


def test_the_costed_scale_benchmark_ends_with_a_farm_efficiency(capsys):
    assert scale.main(["--gpus", "2", "--costs", "h100", "--quick"]) == 0
    name, value = capsys.readouterr().out.strip().splitlines()[-1].split(": ")
    assert name == "farm_efficiency"
    assert 0 < float(value) <= 1.2
