"""``farm run``: the whole farm in this process, over a catalog's batch, resumable.

Running a catalog again continues its latest batch: finished articles are kept, unfinished
ones are sent from where they stand. Ctrl-C stops the worker, frees the articles it held and
says how to go on.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from db import transitions
from producer.imports import ImportResult
from producer.progress import wait_for_batch
from producer.submit import send_and_mark
from tasks.registry import ROLES, STAGES

LOCAL_NODE = "local@farm"
INTERRUPTED_EXIT_CODE = 130  # what a shell reports for a program stopped by Ctrl-C


def serve_locally(
    app: Celery,
    sessions: sessionmaker[Session],
    submitted: ImportResult,
    on_progress: Callable[[dict], None],
    on_ready: Callable[[], None] = lambda: None,
    on_loading: Callable[[str], None] = lambda what: None,
) -> dict:
    """Send the batch's chains to in-process workers and wait for the batch to end.

    ``together``: one worker with all four models. ``stagewise``: a text worker until no
    article waits for a text stage, its models unloaded, then a GPU worker (so one card never
    holds the language model and the image model at once).

    Args:
        app: the farm app on the in-memory broker.
        sessions: the farm's database.
        submitted: the import whose chains to send.
        on_progress: called with the batch summary after each poll.
        on_ready: called once a worker's models are loaded.
        on_loading: called with what is loading when the image models load after the text.

    Returns:
        The batch summary once every article has ended.
    """
    from tasks.embedded import embedded_worker
    from workers.devices import holds_all_models

    settings = app.settings
    schedule = settings.run_schedule
    if schedule == "auto":
        schedule = "together" if holds_all_models(settings.device) else "stagewise"
    wait = partial(wait_for_batch, sessions, submitted.batch_id, on_progress)
    engine = sessions.kw["bind"]
    if schedule == "together":
        with embedded_worker(app, "all", hostname=LOCAL_NODE) as alive:
            on_ready()
            send_and_mark(app, engine, submitted.to_send)
            return wait(alive=alive)
    with embedded_worker(app, "text", hostname=LOCAL_NODE) as alive:
        on_ready()
        send_and_mark(app, engine, submitted.to_send)
        wait(alive=alive, waiting=[STAGES[name].input.value for name in ROLES["text"]])
    on_loading("image models")
    with embedded_worker(app, "gpu", hostname=LOCAL_NODE) as alive:
        on_ready()
        return wait(alive=alive)


def free_interrupted(sessions: sessionmaker[Session]) -> int:
    """Free the articles the stopped local worker held, so that a resumed run takes them now.

    Their attempts are given back: they were stopped, not at fault.

    Returns:
        How many articles were freed.
    """
    prefix = transitions.owner_prefix(LOCAL_NODE)
    return transitions.expire(
        sessions.kw["bind"], "stopped by Ctrl-C", "interrupted", prefix=prefix, give_back=True
    )
