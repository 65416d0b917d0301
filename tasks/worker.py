"""Entry point of a worker process: ``celery -A tasks.worker worker -Q ...``.

Reads the settings once from the environment (the ``farm worker`` launcher sets the role,
device and GPU there) and registers the start-up that loads the models before the worker
connects (``tasks.boot``). SIGHUP stops the process warmly for its launcher to start it
again, instead of Celery's re-execution of the process
(:func:`tasks.boot.install_warm_restart_handler`).
"""

from celery.apps import worker as celery_worker

from tasks import boot  # connects the worker_init and worker_ready handlers
from tasks.app import app, configure
from tasks.settings import Settings

# Celery's worker looks the handler up by this name when it installs its signal handlers.
celery_worker.install_worker_restart_handler = boot.install_warm_restart_handler

configure(Settings())

__all__ = ["app"]
