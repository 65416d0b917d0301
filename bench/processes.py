"""Worker subprocesses of a benchmark: started in their own session, logged to a file, and
always stopped (gently, then by force) when the benchmark ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

READY_MARKER = " ready."


class WorkerProcess:
    """One ``celery worker`` (or ``farm worker``) subprocess.

    Args:
        argv: its command line.
        env: its whole environment.
        log_path: where its stdout and stderr go.
    """

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")  # noqa: SIM115  (closed in stop())
        # Its own session: Ctrl-C in the terminal reaches only the benchmark, which then stops
        # its workers in order, and the whole group can be killed if one hangs.
        self.process = subprocess.Popen(
            list(argv), env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until Celery logs that the worker is ready.

        Args:
            timeout: seconds to wait before giving up.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY_MARKER in self.log_path.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early; log:\n{self.tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout:.0f}s; log:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        """The last lines of the worker's log.

        Args:
            lines: how many.

        Returns:
            The text.
        """
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def children(self) -> list[int]:
        """Pids of the process's children (the celery worker under a ``farm worker``)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:  # gone, or not Linux
            return []

    def terminate(self) -> None:
        """Ask the worker for a warm shutdown (SIGTERM), without waiting."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the worker to shut down; kill its process group if it does not in ``timeout``.

        Args:
            timeout: seconds to wait for a warm shutdown.
        """
        # A `farm worker` starts its celery worker in a session of its own, out of reach of
        # our process group: note it now, to kill it below if it outlives its launcher.
        children = self.children()
        try:
            self.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            for pid in children:
                _kill_worker(pid)
        finally:
            self._log.close()


def _kill_worker(pid: int) -> None:
    # Only a celery worker still running under that pid (a pid can be reused).
    try:
        if b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass  # already gone


@contextmanager
def running(
    commands: Sequence[tuple[Sequence[str], dict[str, str]]],
    log_dir: Path,
    name: str,
    ready_timeout: float = 120.0,
    tail_lines: int = 40,
) -> Iterator[list[WorkerProcess]]:
    """Start worker processes, wait until every one is ready, stop them all on the way out.

    When the block raises, the end of each process's log goes to standard error first: what
    a worker said is usually why a benchmark failed.

    Args:
        commands: (argv, environment) per process.
        log_dir: folder for the logs.
        name: prefix of the log file names.
        ready_timeout: seconds each process may take to become ready.
        tail_lines: how many lines of each log to show when the block raises.

    Yields:
        The running processes.
    """
    started: list[WorkerProcess] = []
    try:
        for index, (argv, env) in enumerate(commands):
            started.append(WorkerProcess(argv, env, Path(log_dir) / f"{name}-{index}.log"))
        for worker in started:
            worker.wait_ready(ready_timeout)
        try:
            yield started
        except Exception:
            for worker in started:
                print(f"--- {worker.log_path.name}\n{worker.tail(tail_lines)}", file=sys.stderr)
            raise
    finally:
        # All at once: warm shutdowns then overlap instead of adding up.
        for worker in started:
            worker.terminate()
        for worker in started:
            worker.stop()
