"""``farm worker``: start and supervise Celery worker processes, one per GPU for the GPU role.

Each process is a real ``celery worker`` with a pool of threads: it holds several messages
at once and feeds one model executor (:mod:`tasks.boot`). A GPU process sees only its own
card (``CUDA_VISIBLE_DEVICES``). Its node name carries the launcher's pid and a random part
(``text-4711-9f3a@host``), so two launchers of one role on one host never share leases or
Flower entries.

The launcher stays as their parent, and tells a process's failure at boot from one while it
served: a process creates its ready file (:data:`READY_FILE_ENV`) once Celery says it is ready.

* Before it is ready, an error exit of its own (its models cannot load, its GPU is not there,
  the database is away) stops them all, and ``farm worker`` exits with that process's code:
  starting it again would only fail again.
* Killed (by the kernel's OOM killer, say), stopped by its watchdog after a hung model call,
  or exiting with an error after it was ready (kombu giving up on a lost broker), a process
  has its leases ended at once (:func:`recovery`) and is started anew, at most
  :data:`MAX_RESTARTS` times in :data:`RESTART_WINDOW_SECONDS`. The reaper sends its
  articles again on its next turn, and those of the messages it had received but not claimed
  yet (its arrivals file) once their stage was stored 30 s ago.
* SIGINT and SIGTERM are passed on to every process as a warm shutdown. SIGHUP makes the
  launcher restart every process warmly: each finishes the messages it holds, exits and is
  started again (with the code and models installed now). On a terminal SIGHUP stops them
  instead, as the terminal is gone, and under ``nohup`` it stays ignored. SIGHUP to a worker
  process itself is a warm restart too (:data:`RESTART_EXIT_CODE`): Celery's own handler
  would re-execute the process into an ImportError.
* The processes end with their launcher (Linux ``PR_SET_PDEATHSIG``: SIGTERM, a warm
  shutdown): a launcher killed and started again by a service manager leaves no copy of its
  processes running unsupervised beside the new ones.

Before any process starts, :func:`check_devices` makes sure the GPUs asked for are there.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from db import sends, transitions
from db.engine import make_engine
from tasks.context import ARRIVALS_FILE_ENV, read_arrivals
from tasks.exceptions import HUNG_EXIT_CODE, FarmError
from tasks.registry import STAGES, role_concurrency, role_queues
from tasks.settings import Settings

logger = logging.getLogger("farm.launcher")

# A process that dies more often than this is not started again: something else is wrong.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 600.0
# The exit code of a worker process that stopped warmly on SIGHUP to be started again. It
# passes only from a worker process to its launcher, never out of `farm worker`, and a
# restart asked for does not count against MAX_RESTARTS.
RESTART_EXIT_CODE = 76
# The file a worker process creates once it is ready (tasks.boot), named by its launcher.
READY_FILE_ENV = "FARM_READY_FILE"


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


def launcher_instance() -> str:
    """This launcher's part of its processes' node names: its pid and a random part.

    The pid finds the launcher in ``ps``; the random part keeps apart two launchers with one
    pid on one host name (containers sharing it, each launcher its pid 1). Leases and
    Flower's entries are both keyed by node name.
    """
    return f"{os.getpid()}-{secrets.token_hex(2)}"


def plan_workers(
    role: str,
    settings: Settings,
    gpus: Sequence[str] = (),
    concurrency: int | None = None,
    loglevel: str = "INFO",
    instance: str | None = None,
) -> list[WorkerProcess]:
    """The worker processes for a role.

    Args:
        role: ``text``, ``gpu`` or ``all``.
        settings: the farm's settings (device, profile, database, broker, ...).
        gpus: GPU indices; one process per GPU, each pinned to its card.
        concurrency: messages each process holds at once; enough to fill the role's
            batches when None (:func:`tasks.registry.role_concurrency`).
        loglevel: Celery log level.
        instance: what sets this launcher's node names apart from another's on the same
            host (``text-<instance>@host``); :func:`launcher_instance` when None.

    Returns:
        One :class:`WorkerProcess` per process to start.
    """
    if role not in ("text", "gpu", "all"):
        raise ValueError(f"unknown role {role!r}; choose one of text, gpu, all")
    base_env = settings.as_env() | {"FARM_WORKER_ROLE": role}
    host = socket.gethostname()
    # A process pinned to a card runs on CUDA, whatever this launcher's device setting says.
    on_card = settings.model_copy(update={"device": "cuda"}) if gpus else settings
    threads = concurrency or role_concurrency(role, on_card)
    instance = instance or launcher_instance()

    def process(name: str, env: dict[str, str]) -> WorkerProcess:
        node = f"{name}-{instance}@{host}"
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


@dataclass
class Supervised:
    """One planned process under its launcher: the child now running it and what it said."""

    spec: WorkerProcess
    ready_file: Path  # created by the process once Celery says it is ready
    arrivals_file: Path  # its messages received and not claimed (tasks.context.Arrivals)
    child: subprocess.Popen | None = None
    handled: bool = False  # the child's exit was dealt with
    restart_asked: bool = False  # stopped by its launcher (SIGHUP) to be started again
    deaths: list[float] = field(default_factory=list)

    def start(self) -> None:
        """Start a process for the spec (again); a new one must say it is ready anew."""
        self.ready_file.unlink(missing_ok=True)
        # Cleared before the new child exists, so that a SIGHUP marking it is not undone.
        self.handled = self.restart_asked = False
        self.child = subprocess.Popen(
            self.spec.argv,
            env=os.environ
            | self.spec.env
            | {READY_FILE_ENV: str(self.ready_file), ARRIVALS_FILE_ENV: str(self.arrivals_file)},
            # A session of its own: a Ctrl-C on the terminal reaches the launcher only, which
            # passes it on once to every process.
            start_new_session=True,
            preexec_fn=_bind_to_launcher(os.getpid()),
        )

    def was_ready(self) -> bool:
        """Whether the process now running (or just ended) said it was ready."""
        return self.ready_file.exists()

    def running(self) -> bool:
        """Whether the child is still running."""
        return self.child is not None and self.child.poll() is None


def run_workers(
    processes: Sequence[WorkerProcess],
    on_death: Callable[[WorkerProcess, Path], None] | None = None,
) -> int:
    """Run the worker processes until they stop, starting again any that die while serving.

    SIGINT and SIGTERM are passed on to every process (a warm shutdown); SIGHUP restarts
    every process warmly, or stops them when the launcher runs on a terminal.

    Args:
        processes: from :func:`plan_workers`.
        on_death: called with a process that died and its arrivals file, before it is
            started again (:func:`recovery`).

    Returns:
        The exit code: the first non-zero code of a process that failed at boot or died more
        often than it may be restarted (1 for one killed by a signal), else 0.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="[%(asctime)s: %(levelname)s/launcher] %(message)s"
        )
    # The ready and arrivals files of this launcher's processes, private to it.
    with tempfile.TemporaryDirectory(prefix="farm-worker-") as scratch:
        fleet = [
            Supervised(spec, Path(scratch, f"{spec.node}.ready"),
                       Path(scratch, f"{spec.node}.arrivals.json"))
            for spec in processes
        ]  # fmt: skip
        for member in fleet:
            member.start()
        return _run(fleet, on_death)


def _run(fleet: list[Supervised], on_death) -> int:
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        for member in fleet:
            if member.running():
                member.child.send_signal(signum)

    def restart(_signum, _frame):
        if stopping:
            return
        logger.warning("SIGHUP: restarting the worker processes warmly")
        for member in fleet:
            if member.running():
                member.restart_asked = True
                member.child.send_signal(signal.SIGTERM)  # Celery's warm shutdown

    def hang_up(_signum, frame):
        stop(signal.SIGTERM, frame)

    handlers = {signal.SIGINT: stop, signal.SIGTERM: stop}
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # under nohup hangups stay ignored
        handlers[signal.SIGHUP] = hang_up if _on_terminal() else restart
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        return _supervise(fleet, on_death, stop, lambda: stopping)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _supervise(fleet: list[Supervised], on_death, stop, stopping) -> int:
    code = 0
    while True:
        for member in fleet:
            returned = member.child.poll()
            if returned is None or member.handled:
                continue
            member.handled = True
            if _restarts(member, returned, stopping()):
                _start_again(member, returned, on_death)
                if stopping():  # a signal came while it started: it missed it
                    member.child.send_signal(signal.SIGTERM)
            elif returned not in (0, RESTART_EXIT_CODE) and code == 0:
                code = returned if returned > 0 else 1
                if not stopping():
                    logger.error("worker %s %s; stopping all", member.spec.node,
                                 _exit_text(returned, member.was_ready()))  # fmt: skip
                stop(signal.SIGTERM, None)
        if all(member.handled for member in fleet):
            return code
        time.sleep(0.3)


def _restarts(member: Supervised, returned: int, stopping: bool) -> bool:
    """Whether a process that exited with ``returned`` is started again."""
    if stopping:
        return False
    if member.restart_asked or returned == RESTART_EXIT_CODE:
        return True  # a warm restart asked for (SIGHUP), not a death
    if returned == 0:
        return False  # stopped on purpose (a remote shutdown): it stays stopped
    if returned > 0 and returned != HUNG_EXIT_CODE and not member.was_ready():
        # Failed at boot (models missing, no GPU, database away): it would only fail again.
        return False
    # Killed, stopped by its watchdog, or an error while it served (kombu giving up on a
    # lost broker): start it again, unless it keeps dying.
    now = time.monotonic()
    member.deaths[:] = [t for t in member.deaths if now - t < RESTART_WINDOW_SECONDS] + [now]
    return len(member.deaths) <= MAX_RESTARTS


def _start_again(member: Supervised, returned: int, on_death) -> None:
    node = member.spec.node
    if returned in (0, RESTART_EXIT_CODE):
        logger.warning("worker %s stopped to be restarted; starting it again", node)
    else:
        logger.warning("worker %s %s; starting it again",
                       node, _exit_text(returned, member.was_ready()))  # fmt: skip
        if on_death is not None:
            on_death(member.spec, member.arrivals_file)
    member.start()


def _exit_text(returned: int, ready: bool) -> str:
    if returned < 0:
        return f"was killed by {signal.Signals(-returned).name}"
    if returned == HUNG_EXIT_CODE:
        return "was stopped by its watchdog (a model call hung)"
    return f"exited with code {returned} {'while serving' if ready else 'at boot'}"


def _on_terminal() -> bool:
    # As Celery does: closing the terminal sends the launcher SIGHUP, which must stop it,
    # not leave it restarting its processes in the background.
    try:
        return os.isatty(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        return False


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _bind_to_launcher(launcher: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child sent SIGTERM when its launcher dies (Linux).

    The kernel sends it when the thread that forked ends: the launcher's main thread, which
    starts every process. A launcher that died between the fork and the ``prctl`` call
    would send nothing: the child then has another parent, and exits at once.

    Args:
        launcher: the launcher's pid.

    Returns:
        The function, or None where ``prctl`` is not there (a service manager must then
        stop the processes with their launcher).
    """
    prctl = _prctl()
    if prctl is None:
        return None

    def bind() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != launcher:
            os._exit(1)

    return bind


@functools.cache
def _prctl():
    # Looked up once in the launcher: the child, between fork and exec, only calls it.
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def recovery(settings: Settings) -> Callable[[WorkerProcess, Path], None]:
    """What the launcher does when one of its processes died: put its articles in the reaper's
    way at once.

    Its leases carry its node name (:func:`db.transitions.owner_prefix`) and are ended; the
    messages it had received but not claimed (its arrivals file) have their sends forgotten
    (:func:`db.sends.unmark_unclaimed`). The reaper sends both on a turn
    (``FARM_REAPER_SECONDS``; an unclaimed one once its stage was stored 30 s ago), instead of
    after the lease or the broker's visibility timeout. The launcher sends nothing itself.

    Args:
        settings: the farm's settings (the database).
    """
    engine = make_engine(settings.database_url)

    def on_death(process: WorkerProcess, arrivals_file: Path) -> None:
        prefix = transitions.owner_prefix(process.node)
        received = read_arrivals(arrivals_file)
        waiting = [(a, STAGES[stage].input.value) for a, stage in received if stage in STAGES]
        try:
            # Its watchdog may have ended them already (a hung call): nothing is left then.
            transitions.expire(engine, f"worker {process.node} died", "lost", prefix=prefix)
            unmarked = sends.unmark_unclaimed(engine, waiting)
        except Exception as error:  # they run out with their lease, and the reaper sends them
            logger.warning("could not hand the articles of %s to the reaper: %s",
                           process.node, error)  # fmt: skip
            return
        if unmarked:
            logger.warning("%d messages %s had not claimed go to the reaper", unmarked,
                           process.node)  # fmt: skip

    return on_death
