"""Simulated cards: a model call holds its card, across processes, for as long as it takes.

Two worker processes can share one card (a text process pinned beside a GPU process); a
card runs one call at a time, so each simulated call takes an exclusive ``fcntl.flock`` on
a file named by the card in the benchmark's scratch folder, sleeps its cost while holding
it, and appends what it did (stage, start, end, inputs) to the card's call log. The
benchmark reads the logs back to tell how each card spent its time.
"""

from __future__ import annotations

import fcntl
import time
from collections import defaultdict
from pathlib import Path


def lock_path(folder: Path | str, card: str) -> Path:
    """The lock file of ``card`` in ``folder``."""
    return Path(folder) / f"card-{card}.lock"


def log_path(folder: Path | str, card: str) -> Path:
    """The call log of ``card`` in ``folder``."""
    return Path(folder) / f"card-{card}.calls"


def hold(folder: Path | str | None, card: str | None, stage: str, seconds: float, count: int):
    """Take the card, sleep ``seconds`` on it, log the call, let it go.

    Without a folder or a card (a process on the CPU), only sleeps.

    Args:
        folder: the benchmark's scratch folder for locks and logs.
        card: the card's name (its ``CUDA_VISIBLE_DEVICES``).
        stage: the stage of the call, for the log.
        seconds: what the call costs.
        count: the inputs it takes, for the log.

    Returns:
        (start, end) of the call, epoch seconds.
    """
    if folder is None or card is None:
        start = time.time()
        time.sleep(seconds)
        return start, time.time()
    with open(lock_path(folder, card), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        start = time.time()
        time.sleep(seconds)
        end = time.time()
        with open(log_path(folder, card), "a") as log:
            log.write(f"{stage} {start:.6f} {end:.6f} {count}\n")
    return start, end


def busy_seconds(folder: Path | str, window: tuple[float, float]) -> dict[str, dict[str, float]]:
    """How long each card was held per stage within a time window, from the call logs.

    Args:
        folder: the benchmark's scratch folder.
        window: (first, last) epoch seconds; calls are clipped to it.

    Returns:
        Card → stage → seconds.
    """
    busy: dict[str, dict[str, float]] = {}
    for log in sorted(Path(folder).glob("card-*.calls")):
        card = log.stem.removeprefix("card-")
        per_stage: dict[str, float] = defaultdict(float)
        for line in log.read_text().splitlines():
            stage, start, end, _count = line.split()
            clipped = min(float(end), window[1]) - max(float(start), window[0])
            per_stage[stage] += max(0.0, clipped)
        busy[card] = dict(per_stage)
    return busy
