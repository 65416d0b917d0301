"""The studio benchmark fills both databases, serves every page it times, and reports."""

from __future__ import annotations

import pytest

from bench import studio

pytestmark = pytest.mark.integration


def test_the_studio_benchmark_times_every_page_on_both_databases(capsys):
    studio.main(["--articles", "130", "--repeats", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    name, value = lines[-1].split(": ")
    assert name == "studio_page_ms" and float(value) > 0
    timed = [line.split()[0] for line in lines[:-1]]
    assert timed == ["sqlite"] * 5 + ["postgresql"] * 5
