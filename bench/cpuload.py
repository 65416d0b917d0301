"""How busy the machine's CPUs were over a stretch of time (Linux ``/proc/stat``)."""

from __future__ import annotations

import os
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


def _process_seconds() -> dict[int, tuple[int, str, float]]:
    """Every process's parent, command line and CPU seconds so far (user + system)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = (
            int(fields[1]),
            command,
            (int(fields[11]) + int(fields[12])) / ticks,
        )
    return found


class CpuShares:
    """CPU seconds spent by each part of a worker setup between :meth:`start` and :meth:`stop`.

    Parts: the worker's main process, its pool children, the PostgreSQL backends serving one
    database, and Redis. Processes that exit in between are not counted.

    Args:
        worker_pid: the worker's main process.
        database: the PostgreSQL database whose backends count, or None.
    """

    def __init__(self, worker_pid: int, database: str | None = None) -> None:
        self.worker_pid, self.database = worker_pid, database
        self._start: dict[int, tuple[str, float]] = {}

    def _parts(self) -> dict[int, tuple[str, float]]:
        parts = {}
        for pid, (parent, command, seconds) in _process_seconds().items():
            if pid == self.worker_pid:
                part = "worker main process"
            elif parent == self.worker_pid:
                part = "pool children"
            elif self.database and command.startswith("postgres:") and self.database in command:
                part = "PostgreSQL"
            elif "redis-server" in command:
                part = "Redis"
            else:
                continue
            parts[pid] = (part, seconds)
        return parts

    def start(self) -> None:
        """Start counting now."""
        self._start = self._parts()

    def stop(self) -> dict[str, float]:
        """CPU seconds per part since :meth:`start`.

        Returns:
            Part name → seconds (parts with no process are left out).
        """
        spent: dict[str, float] = {}
        for pid, (part, seconds) in self._parts().items():
            before = self._start.get(pid, (part, 0.0))[1]
            spent[part] = spent.get(part, 0.0) + seconds - before
        return spent
