"""``farm worker``: start and supervise Celery worker processes, one per GPU for the GPU role.

Each process is a real ``celery worker`` with a pool of threads: it holds several messages
at once and feeds one model executor (:mod:`tasks.boot`). A GPU process sees only its own
card (``CUDA_VISIBLE_DEVICES``). The launcher stays as their parent: when one dies (killed,
by the kernel's OOM killer say, or stopped by its watchdog after a hung model call), it ends
that process's leases at once, has the reaper send its articles again, and starts it anew.
A process that exits on its own with an error (its models cannot load, its GPU is not there,
the database is away) stops them all, and ``farm worker`` exits with that process's code.
Before any process starts, :func:`check_devices` makes sure the GPUs asked for are there.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from db import transitions
from db.engine import make_engine
from tasks import callrecord
from tasks.exceptions import HUNG_EXIT_CODE, FarmError
from tasks.registry import role_concurrency, role_queues
from tasks.settings import Settings

logger = logging.getLogger("farm.launcher")

# A process that dies more often than this is not started again: something else is wrong.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 600.0


class DeviceUnavailable(FarmError):
    """A GPU or CUDA device was asked for that is not there: no worker takes work."""

    # As for missing models: a process that cannot serve stops at boot and exits 1.
    exit_code = 1


@dataclass(frozen=True)
class WorkerProcess:
    """One worker process to start: its node name, command line and extra environment."""

    node: str
    argv: list[str]
    env: dict[str, str]


def plan_workers(
    role: str,
    settings: Settings,
    gpus: Sequence[str] = (),
    concurrency: int | None = None,
    loglevel: str = "INFO",
) -> list[WorkerProcess]:
    """The worker processes for a role.

    Args:
        role: ``text``, ``gpu`` or ``all``.
        settings: the farm's settings (device, profile, database, broker, ...).
        gpus: GPU indices; one process per GPU, each pinned to its card.
        concurrency: messages each process holds at once; enough to fill the role's
            batches when None (:func:`tasks.registry.role_concurrency`).
        loglevel: Celery log level.

    Returns:
        One :class:`WorkerProcess` per process to start.
    """
    if role not in ("text", "gpu", "all"):
        raise ValueError(f"unknown role {role!r}; choose one of text, gpu, all")
    base_env = settings.as_env() | {"FARM_WORKER_ROLE": role}
    host = socket.gethostname()
    threads = concurrency or role_concurrency(role, settings)

    def process(name: str, env: dict[str, str]) -> WorkerProcess:
        node = f"{name}@{host}"
        argv = [
            sys.executable, "-m", "celery", "-A", "tasks.worker", "worker",
            "--queues", ",".join(role_queues(role)), "--hostname", node,
            "--pool", "threads", "--concurrency", str(threads),
            "--task-events", "--loglevel", loglevel,
        ]  # fmt: skip
        return WorkerProcess(node, argv, env)

    if not gpus:
        return [process(role, base_env)]
    return [
        process(f"{role}{gpu}", base_env | {"CUDA_VISIBLE_DEVICES": gpu, "FARM_DEVICE": "cuda"})
        for gpu in gpus
    ]


def check_devices(device: str, gpus: Sequence[str] = (), count: int | None = None) -> None:
    """Fail before any worker process starts when the GPUs asked for are not there.

    Each process checks its own device again at boot (:func:`check_device`); checking here
    first gives one message instead of one per process, before any loads its models.

    Args:
        device: the device setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        gpus: the ``--gpus`` indices; each process gets its own ``CUDA_VISIBLE_DEVICES``.
        count: the CUDA devices this machine shows; asked of torch when None.

    Raises:
        DeviceUnavailable: CUDA is asked for and no device is visible, or an index is past
            the last device.
    """
    if not gpus and not device.startswith("cuda"):
        return
    if gpus and count is None and "CUDA_VISIBLE_DEVICES" in os.environ:
        # The processes get CUDA_VISIBLE_DEVICES of their own, so what this process sees
        # says nothing about them: each checks its card at boot instead.
        return
    if count is None:
        count = _cuda_device_count()
    if not gpus:
        check_device(device, count=count)
        return
    asked = f"GPU{'s' if len(gpus) > 1 else ''} {','.join(gpus)}"
    if count == 0:
        raise DeviceUnavailable(f"{asked} asked for, but {_NO_CUDA}")
    missing = [gpu for gpu in gpus if gpu.isdigit() and int(gpu) >= count]
    if missing:
        raise DeviceUnavailable(
            f"GPU {','.join(missing)} asked for (--gpus), but this machine shows {count} CUDA "
            f"device{'s' if count > 1 else ''}, numbered from 0; see nvidia-smi -L"
        )


def check_device(device: str, visible: str | None = None, count: int | None = None) -> None:
    """In a worker process, before its models load: fail when its CUDA device is not there.

    Args:
        device: the device setting of the process (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        visible: its ``CUDA_VISIBLE_DEVICES`` (the GPU ``farm worker --gpus`` gave it), for
            the message.
        count: the CUDA devices this process sees; asked of torch when None.

    Raises:
        DeviceUnavailable: CUDA is asked for and the device is not visible.
    """
    if not device.startswith("cuda"):
        return
    if count is None:
        count = _cuda_device_count()
    _, _, index = device.partition(":")
    needed = int(index) + 1 if index.isdigit() else 1
    if count >= needed:
        return
    asked = f"GPU {visible}" if visible else f"device {device!r} (FARM_DEVICE/--device)"
    if count == 0:
        raise DeviceUnavailable(f"{asked} asked for, but {_NO_CUDA}")
    raise DeviceUnavailable(f"{asked} asked for, but this process sees only {count} CUDA devices")


_NO_CUDA = (
    "no CUDA device is visible on this machine; check the driver with nvidia-smi, or run "
    "the worker on the CPU (without --gpus, with --device cpu)"
)


def _cuda_device_count() -> int:
    # torch only here: the launcher itself runs no model, and importing torch takes seconds.
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_workers(
    processes: Sequence[WorkerProcess], on_death: Callable[[WorkerProcess], None] | None = None
) -> int:
    """Run the worker processes until they stop, starting again any that die.

    SIGINT and SIGTERM are passed on to every process (a warm shutdown).

    Args:
        processes: from :func:`plan_workers`.
        on_death: called with a process that died, before it is started again.

    Returns:
        The exit code: the first non-zero code of a process that failed on its own, else 0.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="[%(asctime)s: %(levelname)s/launcher] %(message)s"
        )
    running = {spec.node: _start(spec) for spec in processes}
    specs = {spec.node: spec for spec in processes}
    deaths: dict[str, list[float]] = {node: [] for node in specs}
    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        for child in running.values():
            if child.poll() is None:
                child.send_signal(signum)

    previous = {
        signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return _supervise(running, specs, deaths, on_death, forward, lambda: stopping)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _supervise(running, specs, deaths, on_death, forward, stopping) -> int:
    code = 0
    while True:
        for node, child in list(running.items()):
            returned = child.poll()
            if returned is None or returned == 0 or child.farm_handled:
                continue
            child.farm_handled = True
            if not stopping() and _should_restart(returned, deaths[node]):
                logger.warning("worker %s died (exit %s); starting it again", node, returned)
                if on_death is not None:
                    on_death(specs[node])
                running[node] = _start(specs[node])
            elif code == 0:
                code = returned if returned > 0 else 1
                forward(signal.SIGTERM, None)
        if all(_finished(child) for child in running.values()):
            return code
        time.sleep(0.3)


def _finished(child: subprocess.Popen) -> bool:
    returned = child.poll()
    return returned == 0 or (returned is not None and child.farm_handled)


def _start(spec: WorkerProcess) -> subprocess.Popen:
    child = subprocess.Popen(spec.argv, env=os.environ | spec.env, start_new_session=True)
    child.farm_handled = False
    return child


def _should_restart(returncode: int, deaths: list[float]) -> bool:
    # Killed by a signal, or stopped by its watchdog: start again. An error exit of its own
    # (models missing) would only repeat.
    if returncode >= 0 and returncode != HUNG_EXIT_CODE:
        return False
    now = time.monotonic()
    deaths[:] = [t for t in deaths if now - t < RESTART_WINDOW_SECONDS] + [now]
    return len(deaths) <= MAX_RESTARTS


def recovery(settings: Settings) -> Callable[[WorkerProcess], None]:
    """What the launcher does when one of its processes died: its articles go out again.

    The process's leases end at once (their tokens carry its node name) and the reaper
    sends their articles, so they run again within seconds instead of after the lease.

    Args:
        settings: the farm's settings (database and broker).
    """
    from tasks.app import configure
    from tasks.reaper import reap

    app = configure(settings)
    engine = make_engine(settings.database_url)

    def on_death(process: WorkerProcess) -> None:
        prefix = transitions.owner_prefix(process.node)
        culprits, waiting = callrecord.read(process.node)
        reason = f"worker {process.node} died"
        try:
            # Its watchdog may have ended them already (a hung call): reap in any case.
            transitions.expire(engine, reason, "lost", prefix=prefix, culprits=culprits)
            reap(app, engine)
            _resend_unclaimed(app, engine, waiting)
        except Exception as error:  # the timers' reaper will find them instead
            logger.warning("could not send the articles of %s again: %s", process.node, error)

    return on_death


def _resend_unclaimed(app, engine, waiting: list[list]) -> None:
    """Send again the messages a dead process received but never claimed.

    Their articles hold no lease, so no reaper sees them; Redis would deliver the messages
    again only after the visibility timeout. A copy of one still on its way finds the stage
    done or held and stops.
    """
    from tasks.chains import send_chains
    from tasks.queues import URGENT_PRIORITY
    from tasks.registry import STAGES

    pairs = [(article_id, STAGES[stage].input.value) for article_id, stage, _ in waiting]
    unclaimed = set(transitions.unclaimed(engine, pairs))
    chains = [(a, key, stage) for a, stage, key in waiting if a in unclaimed]
    if chains:
        send_chains(app, chains, priority=URGENT_PRIORITY)
        logger.warning("%d messages the process had not claimed sent again", len(chains))
