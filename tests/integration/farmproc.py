"""Helpers for driving real farm processes from the integration tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from db.engine import make_engine, session_factory
from db.models import TERMINAL_STATUSES, Article

FARM = [sys.executable, "-m", "producer.cli"]


def farm(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the ``farm`` CLI in a subprocess and capture its output."""
    return subprocess.run([*FARM, *args], env=env, capture_output=True, text=True, timeout=timeout)


class WorkerProcess:
    """A ``farm worker`` subprocess whose log goes to a file."""

    def __init__(self, env: dict, role: str, log_path: Path, *args: str):
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115  (closed in stop())
        self.process = subprocess.Popen(
            [*FARM, "worker", role, *args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches the worker processes
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log_path.read_text():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_path.read_text()}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # orphaned worker processes, if any
        if not self.log.closed:
            self.log.close()

    def children(self) -> list[int]:
        """Pids of the launcher's worker processes (the celery workers under ``farm worker``)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def wait_until_ended(database_url: str, timeout: float = 240, ended: tuple = ()) -> None:
    """Wait until no article in the database is still in flight (or short of ``ended``)."""
    sessions = session_factory(make_engine(database_url))
    ended = [*ended, *(s.value for s in TERMINAL_STATUSES)]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as session:
            open_count = session.scalar(
                select(func.count()).select_from(Article).where(Article.status.not_in(ended))
            )
        if open_count == 0:
            return
        time.sleep(0.5)
    with sessions() as session:
        waiting = session.execute(
            select(Article.key, Article.status, Article.lease_stage, Article.lease_expires_at,
                   Article.sent_at, Article.claimed_at, Article.stage_attempts)
            .where(Article.status.not_in(ended))
        ).all()  # fmt: skip
    raise AssertionError(
        f"{open_count} articles still in flight after {timeout}s: "
        + "; ".join(str(tuple(row)) for row in waiting[:10])
    )


def process_ended(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie that nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_ended(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for process ``pid`` to end; whether it did."""
    deadline = time.monotonic() + timeout
    while not process_ended(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def ready_nodes(log_path: Path) -> list[str]:
    """The node names that said ``ready`` in a worker log, in order (again after a restart)."""
    return re.findall(r"\] (\S+@\S+) ready\.", log_path.read_text())


def wait_ready_count(worker: WorkerProcess, count: int, timeout: float = 120) -> list[str]:
    """Wait until the worker's log says ``ready`` ``count`` times; the nodes that said it."""
    deadline = time.monotonic() + timeout
    while len(nodes := ready_nodes(worker.log_path)) < count:
        if time.monotonic() > deadline or worker.process.poll() is not None:
            raise AssertionError(
                f"{len(nodes)} of {count} ready (launcher exit {worker.process.poll()}):\n"
                f"{worker.log_path.read_text()}"
            )
        time.sleep(0.2)
    return nodes
