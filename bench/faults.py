"""Reliability figures: the fault-injection suite and the bad-input corpus, totalled.

Runs the fault scenarios (:data:`SCENARIOS`: real Redis, PostgreSQL and worker processes;
the services must be up, as ``.ci/services`` leaves them) with a report file that each
scenario appends its article tally to, then runs every case of the bad-input corpus. Prints
the totals as its last lines:

    scenarios: P/T passed
    articles: submitted S, completed C, failed with reason F, lost L, duplicated D,
      stale published P
    bad inputs: H/N handled
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# The fault scenarios: single faults, then the faults of a fleet of processes.
SCENARIOS = (
    "tests/integration/test_faults.py",
    "tests/integration/test_faults_fleet.py",
    "tests/integration/test_migration_race.py",
    "tests/integration/test_launcher_fleet.py",
    "tests/integration/test_multi_host.py",
)


def run_scenarios(report: Path, extra: list[str]) -> tuple[int, int]:
    """Run the fault suite; return (passed, total) from pytest's own summary."""
    env = os.environ | {"FARM_FAULT_REPORT": str(report), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "pytest", *SCENARIOS, "-q", *extra]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    print(result.stdout[-3000:])
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|error)", summary)}
    passed = counts.get("passed", 0)
    return passed, passed + counts.get("failed", 0) + counts.get("error", 0)


def article_totals(report: Path) -> dict[str, int]:
    """Sum the per-scenario tallies the tests appended."""
    totals = dict.fromkeys(
        ("submitted", "completed", "failed_with_reason", "lost", "duplicated", "stale_published"),
        0,
    )
    if report.exists():
        for line in report.read_text().splitlines():
            record = json.loads(line)
            for name in totals:
                totals[name] += record.get(name, 0)
    return totals


def bad_inputs() -> tuple[int, int]:
    """Run every bad-input case; return (handled, tried)."""
    from tests.bad_inputs import CORPUS, run_case

    handled = 0
    with tempfile.TemporaryDirectory() as scratch:
        for index, case in enumerate(CORPUS):
            folder = Path(scratch) / str(index)
            folder.mkdir()
            handled += bool(run_case(case, folder))
    return handled, len(CORPUS)


def main() -> None:
    """Run the fault suite and the bad-input corpus; print their totals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k redis)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "faults.jsonl"
        passed, total = run_scenarios(report, args.pytest_args)
        totals = article_totals(report)
    handled, tried = bad_inputs()
    print(f"scenarios: {passed}/{total} passed")
    print(
        f"articles: submitted {totals['submitted']}, completed {totals['completed']}, "
        f"failed with reason {totals['failed_with_reason']}, lost {totals['lost']}, "
        f"duplicated {totals['duplicated']}, stale published {totals['stale_published']}"
    )
    print(f"bad inputs: {handled}/{tried} handled")


if __name__ == "__main__":
    main()
