"""``farm worker``: start Celery worker processes for a role, one per GPU for the GPU role.

Each process is a real ``celery worker`` with a prefork pool of one child, so it keeps
heartbeats and time limits while a long render runs. A GPU process sees only its own card
(``CUDA_VISIBLE_DEVICES``) and loads its models in its pool child before taking work.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.queues import ROLE_QUEUES
from tasks.settings import Settings


@dataclass(frozen=True)
class WorkerProcess:
    """One worker process to start: its command line and its extra environment."""

    argv: list[str]
    env: dict[str, str]


def plan_workers(
    role: str,
    settings: Settings,
    gpus: Sequence[str] = (),
    concurrency: int = 1,
    loglevel: str = "INFO",
) -> list[WorkerProcess]:
    """The worker processes for a role.

    Args:
        role: ``text``, ``gpu`` or ``all``.
        settings: the farm's settings (device, profile, database, broker, ...).
        gpus: GPU indices; one process per GPU, each pinned to its card.
        concurrency: pool children per process (only for processes without a GPU).
        loglevel: Celery log level.

    Returns:
        One :class:`WorkerProcess` per process to start.
    """
    if role not in ROLE_QUEUES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLE_QUEUES)}")
    base_env = settings.as_env() | {"FARM_WORKER_ROLE": role}
    host = socket.gethostname()

    def command(name: str, children: int) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "tasks.worker", "worker",
            "--queues", ",".join(ROLE_QUEUES[role]),
            "--hostname", f"{name}@{host}",
            "--pool", "prefork", "--concurrency", str(children),
            "--task-events", "--loglevel", loglevel,
        ]  # fmt: skip

    if not gpus:
        return [WorkerProcess(command(role, concurrency), base_env)]
    return [
        WorkerProcess(
            command(f"{role}{gpu}", 1),
            base_env | {"CUDA_VISIBLE_DEVICES": gpu, "FARM_DEVICE": "cuda"},
        )
        for gpu in gpus
    ]


def run_workers(processes: Sequence[WorkerProcess]) -> int:
    """Run the worker processes until they stop.

    One process replaces this one (signals reach Celery directly). Several are supervised:
    SIGINT/SIGTERM are passed on, and when one fails the others are stopped too.

    Args:
        processes: from :func:`plan_workers`.

    Returns:
        The exit code: the first non-zero code of a child, else 0.
    """
    if len(processes) == 1:
        only = processes[0]
        os.execve(sys.executable, only.argv, os.environ | only.env)
    children = [
        subprocess.Popen(p.argv, env=os.environ | p.env, start_new_session=True) for p in processes
    ]

    def forward(signum, _frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    code = 0
    while any(child.poll() is None for child in children):
        failed = [c.returncode for c in children if c.returncode not in (None, 0)]
        if failed and code == 0:
            code = failed[0]
            forward(signal.SIGTERM, None)
        time.sleep(0.5)
    return code or next((c.returncode for c in children if c.returncode), 0)
