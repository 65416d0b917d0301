"""Malformed and hostile catalog files (``tests.bad_inputs``) are read or rejected cleanly."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from producer.catalog import CatalogError, read_catalog
from tests.bad_inputs import CORPUS, Case, accepted, outcome, run_case

ROOT = Path(__file__).resolve().parents[2]
BY_NAME = {case.name: case for case in CORPUS}
CLI_CASES = [
    "truncated-xlsx",
    "password-protected-xlsx",
    "formula-without-a-value",
    "csv-with-a-nul-byte",
    "duplicate-keys-across-files",
    "symlink-to-etc-passwd",
    "nonexistent-path",
]


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_each_bad_input_is_read_correctly_or_rejected_with_located_problems(case, tmp_path):
    result, seconds = outcome(case, tmp_path)
    case.check(result)
    assert seconds <= case.seconds, f"took {seconds:.1f}s, allowed {case.seconds}s"
    if isinstance(result, CatalogError):
        assert all(problem.file and problem.message for problem in result.problems)


def test_the_corpus_has_at_least_25_uniquely_named_cases_and_run_case_handles_them(tmp_path):
    assert len(CORPUS) >= 25
    assert len(BY_NAME) == len(CORPUS)
    handled = {}
    for case in CORPUS:
        if case.seconds <= 10:  # the slow ones have run once above
            (tmp_path / case.name).mkdir()
            handled[case.name] = run_case(case, tmp_path / case.name)
    assert [name for name, ok in handled.items() if not ok] == []


def test_run_case_counts_a_wrong_outcome_or_a_foreign_exception_as_not_handled(tmp_path):
    def explode(folder: Path) -> list[Path]:
        raise OSError("disk on fire")

    nonexistent = BY_NAME["nonexistent-path"]
    cases = [
        Case("expects rows", nonexistent.build, accepted("row")),
        Case("crashes", explode, nonexistent.check),
        nonexistent,
    ]
    assert [run_case(case, tmp_path) for case in cases] == [False, False, True]


@pytest.mark.parametrize("name", CLI_CASES)
def test_farm_submit_rejects_a_bad_input_with_exit_2_the_problems_and_nothing_stored(
    name, tmp_path
):
    files = BY_NAME[name].build(tmp_path)
    with pytest.raises(CatalogError) as expected:
        read_catalog(files)
    database = tmp_path / "x.db"
    command = [sys.executable, "-m", "producer.cli", "--database-url", f"sqlite:///{database}"]
    command += ["--broker-url", "memory://", "submit", *map(str, files)]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    # Rich wraps long lines, so compare the texts with every run of white space made one space.
    shown = " ".join(done.stderr.split())
    for problem in expected.value.problems:
        assert " ".join(str(problem).split()) in shown
    assert _stored_rows(database) == 0


def _stored_rows(database: Path) -> int:
    if not database.exists():
        return 0
    with sqlite3.connect(database) as connection:
        query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'alembic_version'"
        tables = [name for (name,) in connection.execute(query)]
        counts = [connection.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone() for t in tables]
    return sum(count for (count,) in counts)
