"""How busy the machine's CPUs were over a stretch of time (Linux ``/proc/stat``)."""

from __future__ import annotations

from pathlib import Path

PROC_STAT = Path("/proc/stat")
# Fields of the "cpu" line that count as idle: idle and iowait.
IDLE_FIELDS = (3, 4)


def _ticks() -> tuple[int, int] | None:
    try:
        fields = [int(value) for value in PROC_STAT.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = sum(fields[index] for index in IDLE_FIELDS)
    return sum(fields), idle


class CpuMeter:
    """Busy share of all CPUs between :meth:`start` and :meth:`busy`; ``None`` off Linux."""

    def __init__(self) -> None:
        self._start: tuple[int, int] | None = None

    def start(self) -> None:
        """Start measuring now."""
        self._start = _ticks()

    def busy(self) -> float | None:
        """Fraction of CPU time that was not idle since :meth:`start`.

        Returns:
            A number in [0, 1] (1 = every core busy all the time), or ``None`` when unknown.
        """
        end = _ticks()
        if self._start is None or end is None or end[0] == self._start[0]:
            return None
        total = end[0] - self._start[0]
        idle = end[1] - self._start[1]
        return 1.0 - idle / total
