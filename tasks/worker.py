"""Entry point of a worker process: ``celery -A tasks.worker worker -Q ...``.

Reads the settings once from the environment (the ``farm worker`` launcher sets the role,
device and GPU there) and registers the start-up that loads the models before the worker
connects (``tasks.boot``).
"""

from tasks import boot  # noqa: F401  (connects the worker_process_init handler)
from tasks.app import app, configure
from tasks.settings import Settings

configure(Settings())

__all__ = ["app"]
