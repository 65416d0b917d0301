"""Worker start-up: each pool process loads its models before it takes any work.

Models load in the pool child (``worker_process_init``), never in the parent, because CUDA
cannot be re-initialised in a forked child. A child that cannot load its models stops the
whole worker loudly instead of serving tasks it would fail.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal

from celery.signals import celeryd_init, worker_process_init, worker_shutting_down

from tasks import state
from tasks.exceptions import FarmError, ModelsMissing
from tasks.queues import ROLE_STAGES
from tasks.settings import Settings
from workers.devices import release_memory
from workers.hub import check_profile, describe_missing
from workers.loader import load_runtimes, quiet_library_logs
from workers.profiles import resolve_profile

logger = logging.getLogger("farm.boot")


def load_for_role(settings: Settings) -> None:
    """Load the models of ``settings.worker_role`` into this process.

    Args:
        settings: the farm's settings (profile, device, model overrides, role).
    """
    if settings.worker_role not in ROLE_STAGES:
        raise ValueError(f"unknown worker role {settings.worker_role!r}")
    quiet_library_logs()
    stages = ROLE_STAGES[settings.worker_role]
    if settings.runtime_factory:
        module_name, _, function = settings.runtime_factory.partition(":")
        factory = getattr(importlib.import_module(module_name), function)
        state.install_runtimes(factory(stages, settings))
        return
    profile = resolve_profile(
        settings.profile, settings.model_cache, **settings.profile_overrides()
    )
    missing = describe_missing(check_profile(profile, stages), profile)
    if missing:
        raise ModelsMissing(missing)
    render_options = {
        "compile": settings.render_compile,
        "fp8": settings.render_fp8,
        "memory_mode": settings.render_memory_mode,
    }
    extract_options = {"static_cache": settings.extract_static_cache}
    runtimes = load_runtimes(stages, profile, settings.device, render_options, extract_options)
    state.install_runtimes(runtimes)


def unload_models() -> None:
    """Drop this process's models and give their memory back (between stages of ``farm run``)."""
    state.drop_runtimes()
    release_memory()


_worker = None  # this main process's Celery worker, once it is made


@celeryd_init.connect
def _remember_worker(instance=None, **_) -> None:
    global _worker
    _worker = instance


@worker_shutting_down.connect
def _keep_exit_code(exitcode=None, **_) -> None:
    # Celery gives a cold shutdown the exit code 1 but its worker exits with 0 after one;
    # recorded here, the worker's own exit code is the one the shutdown asked for.
    if _worker is not None and exitcode:
        _worker.exitcode = exitcode


def _stop_worker() -> None:
    # SIGQUIT is Celery's cold shutdown, which exits 1 (SIGTERM's warm one exits 0): a service
    # manager must see that this worker could not start. The child holds no task yet.
    os.kill(os.getppid(), signal.SIGQUIT)


@worker_process_init.connect
def _load_models_in_pool_child(**_) -> None:
    from tasks.app import app

    if state.has_runtimes():  # an embedded worker (farm run) loaded them before starting
        return
    try:
        load_for_role(app.farm_settings)
    except FarmError as error:  # a message says it all; no traceback
        logger.critical("worker cannot start: %s; shutting the worker down", error)
        _stop_worker()
        os._exit(1)
    except BaseException:
        logger.critical("worker could not load its models; shutting the worker down", exc_info=True)
        _stop_worker()
        os._exit(1)
