"""Worker start-up: load the models, start the model executor and the worker's timers.

A worker process is one ``celery worker`` with a pool of threads: it holds several messages
at once, and one model executor (:mod:`workers.executor`) makes their model calls. The
models load in ``worker_init``, before the worker connects to the broker. First the process
checks that its CUDA device is there and that the database answers; a worker that cannot
serve (no device, database away, models missing or failing to load) logs one message and
exits 1 without ever saying ``ready``: Celery would log an exception raised from a signal
handler and carry on, so the handler ends the process itself (``os._exit``). Beside the
executor run two timers: lease renewal for the stages this process holds, and the reaper.
As each model call starts, the executor has its articles' attempts counted
(:class:`AttemptCounter`). All of it is the process's :class:`tasks.context.WorkerContext`,
built here before the worker takes work. A model call that outruns ``task_time_limit`` makes
the process end its leases and exit with :data:`HUNG_EXIT_CODE`; ``farm worker`` starts it
again.

Once Celery says the worker is ready, the process creates the ready file its launcher named
(:data:`tasks.launcher.READY_FILE_ENV`): an error exit after it is one of a process that was
serving, which the launcher starts again, not a failure at boot. SIGHUP is a warm stop with
:data:`tasks.launcher.RESTART_EXIT_CODE`, after which the launcher starts the process again
(:func:`install_warm_restart_handler`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from pathlib import Path

from celery import Celery, platforms
from celery.signals import task_received, worker_init, worker_ready, worker_shutdown
from celery.utils.log import in_sighandler
from celery.worker import state as worker_state
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from db import transitions
from db.engine import make_engine, open_database
from db.exceptions import DatabaseError
from db.urls import mask_password
from tasks import context
from tasks.context import ARRIVALS_FILE_ENV, Arrivals, WorkerContext
from tasks.exceptions import HUNG_EXIT_CODE, FarmError, ModelsMissing
from tasks.launcher import READY_FILE_ENV, RESTART_EXIT_CODE, check_device
from tasks.model_pins import settings_profile
from tasks.reaper import Periodic, note_broker_epoch, reaper_turn
from tasks.registry import ROLES, STAGES
from tasks.settings import Settings
from workers.devices import release_memory, resolve_device
from workers.executor import ModelExecutor
from workers.hub import check_profile, describe_missing
from workers.loader import load_runtimes, quiet_library_logs

logger = logging.getLogger("farm.boot")

_timers: list[Periodic] = []
STAGE_OF_TASK = {stage.task: name for name, stage in STAGES.items()}
# The longest a model call waits for the claims of the messages received before it: a claim
# is one UPDATE, made as soon as a thread takes the message.
CLAIM_WAIT_SECONDS = 2.0


def load_for_role(settings: Settings):
    """Load the models of ``settings.worker_role``.

    Args:
        settings: the farm's settings (profile, device, model overrides, role).

    Returns:
        The loaded :class:`workers.loader.Runtimes`.
    """
    if settings.worker_role not in ROLES:
        raise ValueError(f"unknown worker role {settings.worker_role!r}")
    quiet_library_logs()
    stages = ROLES[settings.worker_role]
    if settings.runtime_factory:
        module_name, _, function = settings.runtime_factory.partition(":")
        factory = getattr(importlib.import_module(module_name), function)
        return factory(stages, settings)
    profile = settings_profile(settings)  # LockFileInvalid for a lock file it cannot use
    missing = describe_missing(check_profile(profile, stages), profile)
    if missing:
        raise ModelsMissing(missing)
    runtimes = load_runtimes(
        stages, profile, settings.device, settings.render_options(), settings.extract_options()
    )
    if settings.worker_role == "text" and resolve_device(settings.device).type == "cpu":
        say_text_rate(runtimes, settings.text_batch())
    return runtimes


def say_text_rate(runtimes, batch_size: int) -> None:
    """Measure and log the rate a text worker on the CPU sets, before it takes work.

    A CPU text worker feeds GPU workers that render far faster than a CPU extracts; an
    operator who chose this shape learns at start what it costs, not from an idle card.
    """
    from workers.doctor import describe_text_rate

    logger.warning(
        "text stages on the CPU: %s; GPU workers will wait for them unless enough text "
        "processes run (or serve the text queue from the GPU workers: farm worker all --gpus)",
        describe_text_rate(runtimes, batch_size),
    )


class AttemptCounter:
    """The model executor's ``on_call``: counts the attempts of a call's articles as it starts.

    Only the articles of the call running have their attempt counted: those of the previous
    call, which returned, get theirs back in the same statement, so that a death or a hang in
    this call charges none of them (an error of theirs counts as their stage is given back:
    :func:`db.transitions.release`); until then they stay charged, so a death while their
    results are stored charges them. A batch call that fails is made again for each article
    alone; each claim is counted once. A database that is away costs the count, not the call.
    First it waits for the claims of the messages received before the call
    (:class:`tasks.context.Arrivals`).

    Args:
        engine: the farm's database.
        arrivals: the messages received and not yet claimed; None waits for none.
    """

    def __init__(self, engine: Engine, arrivals: Arrivals | None = None) -> None:
        self._engine = engine
        self._arrivals = arrivals
        self._counted: set[str] = set()  # the last call's tokens; only the model thread's

    def __call__(self, stage: str, tokens: list) -> None:
        """Wait for the claims of the messages received, then count the call's attempts."""
        if self._arrivals is not None:
            # A call may kill the process (out of memory, a crash in a kernel): the messages
            # it received take their leases first, so that the reaper can send them again.
            late = self._arrivals.wait(CLAIM_WAIT_SECONDS)
            if late:
                logger.warning("%s: calling before %d messages were claimed", stage, len(late))
        current = {token for token in tokens if token}
        new, back = current - self._counted, self._counted - current
        if not new and not back:
            return
        try:
            transitions.count_attempts(self._engine, sorted(new), sorted(back))
        except DBAPIError as error:  # what was not given back is given back at the next call
            logger.warning("%s: attempt not counted, the database is away (%s); calling anyway",
                           stage, type(error.orig).__name__)  # fmt: skip
            return
        self._counted = current


def start_process(app: Celery, settings: Settings, node: str) -> None:
    """Load the role's models, install the process's :class:`WorkerContext`, start lease
    renewal and the reaper.

    Args:
        app: the configured farm app (the reaper sends through it).
        settings: the farm's settings, role included.
        node: the worker's node name (unused: its lease tokens carry it).
    """
    check_serviceable(settings)
    say_where(settings)
    runtimes = load_for_role(settings)
    engine = make_engine(settings.database_url)
    arrivals = Arrivals(os.environ.get(ARRIVALS_FILE_ENV))
    executor = ModelExecutor(
        max_wait=settings.batch_wait_seconds,
        time_limit=settings.task_time_limit,
        on_hang=lambda stage, _tokens: _stop_hung(stage),
        on_call=AttemptCounter(engine, arrivals),
    )
    worker = WorkerContext(settings, engine, runtimes, executor, arrivals=arrivals)
    context.install(worker)
    note_broker_epoch(app, engine)
    leases, seconds = worker.leases, settings.lease_seconds
    renew = lambda: transitions.renew(engine, leases.tokens(), seconds)  # noqa: E731
    _timers[:] = [
        Periodic("leases", settings.lease_seconds / 3, renew),
        Periodic("reaper", settings.reaper_seconds, reaper_turn(app, worker)),
    ]  # fmt: skip
    for timer in _timers:
        timer.start()


def say_where(settings: Settings) -> None:
    """Log the device and the database (its password masked) this process serves with.

    A ``gpu`` worker that finds no CUDA device under ``FARM_DEVICE=auto`` runs on the CPU,
    many times slower: that is said as a warning, not left to be found out.
    """
    device = "cpu" if settings.runtime_factory else str(resolve_device(settings.device))
    logger.info(
        "%s worker on %s (FARM_DEVICE=%s), database %s", settings.worker_role, device,
        settings.device, mask_password(settings.database_url),
    )  # fmt: skip
    unmeant = settings.device == "auto" and not settings.runtime_factory
    if settings.worker_role == "gpu" and device == "cpu" and unmeant:
        logger.warning(
            "gpu worker on the CPU: no CUDA device is visible, so render and score run on "
            "the CPU, many times slower than on a card (set FARM_DEVICE=cpu to mean it)"
        )


def check_serviceable(settings: Settings) -> None:
    """Fail fast, before the models load, when this process could not serve anyway.

    Args:
        settings: the process's settings (device, database).

    Raises:
        tasks.launcher.DeviceUnavailable: its CUDA device is not visible.
        db.exceptions.DatabaseError: the database cannot be reached or is missing (a
            missing SQLite file is not created: ``farm worker`` made it before).
    """
    if not settings.runtime_factory:  # a benchmark's runtimes choose their own device
        check_device(settings.device, os.environ.get("CUDA_VISIBLE_DEVICES"))
    open_database(settings.database_url, create=False).dispose()


def stop_process(wait: float = 30.0) -> bool:
    """Stop the timers and the executor, drop the models and give their memory back.

    First the timers' turns and the model call in progress end (``wait`` seconds at most in
    all): a thread left in a model call as the interpreter ends can abort it (``terminate
    called without an active exception``), and one left in a turn would write after the
    database was let go.

    Args:
        wait: the most seconds to wait for those threads.

    Returns:
        Whether every one of them ended.
    """
    deadline = time.monotonic() + wait
    for timer in _timers:
        timer.stop()
    ended = True
    if context.installed():
        executor = context.current().executor
        executor.stop()
        ended = executor.join(max(0.0, deadline - time.monotonic()))
    for timer in _timers:
        timer.join(max(0.0, deadline - time.monotonic()))
        ended = ended and not timer.is_alive()
    _timers.clear()
    context.drop()
    release_memory()
    return ended


def _stop_hung(stage: str) -> None:
    # Every lease of this process ends: only the articles of the hung call have an attempt
    # counted (their runs close as "timeout"); the others' runs close as "interrupted".
    try:
        held = context.current()
        reason = f"a {stage} call ran past the {held.settings.task_time_limit} s limit"
        transitions.expire(held.engine, reason, "timeout", tokens=held.leases.tokens())
    finally:
        logger.critical("stopping this worker: its %s call hung; its articles go elsewhere", stage)
        logging.shutdown()
        os._exit(HUNG_EXIT_CODE)


@worker_init.connect
def _start_worker_process(sender=None, **_) -> None:
    from tasks.app import app

    if context.installed():  # an embedded worker (farm run) started them before
        return
    try:
        start_process(app, app.settings, sender.hostname)
    except (FarmError, DatabaseError) as error:  # a message says it all; no traceback
        logger.critical("worker cannot start: %s", error)
        logging.shutdown()
        os._exit(1)
    except BaseException:
        logger.critical("worker could not load its models", exc_info=True)
        logging.shutdown()
        os._exit(1)


@worker_ready.connect
def _say_ready(**_) -> None:
    # The launcher tells by this file a process that fails at boot from one that served.
    path = os.environ.get(READY_FILE_ENV)
    if path:
        Path(path).touch()


def install_warm_restart_handler(worker=None, sig: str = "SIGHUP") -> None:
    """Make ``sig`` a warm stop with :data:`RESTART_EXIT_CODE`: the launcher starts it again.

    Celery's own SIGHUP handler (``celery.apps.worker.install_worker_restart_handler``,
    installed when the worker's output is not a terminal) re-executes the process from its
    ``sys.argv``, which under ``python -m celery`` fails with an ImportError: the launcher
    would see an error exit. :mod:`tasks.worker` puts this function in its place.

    Args:
        worker: the Celery worker (unused: Celery passes it).
        sig: the signal's name.
    """

    def warm_restart(*_args) -> None:
        with in_sighandler():
            print(f"worker: warm shutdown on {sig}; farm worker starts it again",
                  file=sys.__stdout__, flush=True)  # fmt: skip
        worker_state.should_stop = RESTART_EXIT_CODE

    platforms.signals[sig] = warm_restart


@task_received.connect
def _note_received(request=None, **_) -> None:
    # A message with an ETA (a retry after its backoff) is run later: its article's lease,
    # kept through the backoff, stands for it meanwhile.
    stage = STAGE_OF_TASK.get(getattr(request, "name", None))
    if stage is not None and not request.eta and request.args and context.installed():
        context.current().arrivals.received(request.id, request.args[0], stage)


@worker_shutdown.connect
def _stop_worker_process(**_) -> None:
    for timer in _timers:
        timer.stop()
