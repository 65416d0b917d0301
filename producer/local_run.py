"""``farm run``: the whole farm in this process, over a catalog's batch, resumable.

Running a catalog again continues its latest batch: finished articles are kept, unfinished
ones are sent from where they stand. Ctrl-C stops the worker within seconds and quietly (its
messages in hand end without a retry: :mod:`tasks.embedded`), frees the articles it held,
says how many of the batch's articles are left for the next run, and exits 130.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from db import transitions
from db.models import TERMINAL_STATUSES
from producer.imports import ImportResult
from producer.progress import batch_summaries, wait_for_batch
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


@dataclass(frozen=True)
class Freed:
    """What Ctrl-C left of a batch, read from the database once its articles were freed."""

    in_progress: int  # the batch's articles that had not ended: the next run goes on with them
    mid_stage: int  # of those, the ones the stopped worker held in a stage

    def line(self, batch_id: str) -> str:
        """``stopped; 62 articles in progress freed (9 were mid-stage). Run the same ...``"""
        noun = "article" if self.in_progress == 1 else "articles"
        return (
            f"stopped; {self.in_progress} {noun} in progress freed ({self.mid_stage} "
            f"{'was' if self.mid_stage == 1 else 'were'} mid-stage). Run the same command "
            f"again to continue batch {batch_id}."
        )


def free_interrupted(sessions: sessionmaker[Session], batch_id: str) -> Freed:
    """Free the articles the stopped local worker held, so that a resumed run takes them now.

    Their attempts are given back: they were stopped, not at fault. Call it once the worker
    has stopped (:func:`tasks.embedded.embedded_worker` has returned): a thread of it still
    running could claim an article after this.

    Args:
        sessions: the farm's database.
        batch_id: the batch that was running.

    Returns:
        The batch's articles in progress, and how many of them were held mid-stage.
    """
    prefix = transitions.owner_prefix(LOCAL_NODE)
    held = transitions.expire(
        sessions.kw["bind"], "stopped by Ctrl-C", "interrupted", prefix=prefix, give_back=True
    )
    with sessions() as session:
        (summary,) = batch_summaries(session, [batch_id])
    ended = sum(summary[status.value] for status in TERMINAL_STATUSES)
    return Freed(in_progress=summary["total"] - ended, mid_stage=held)


def end_process(code: int, at_once: bool = False) -> NoReturn:
    """Exit with ``code`` once the embedded workers have stopped.

    Through the interpreter's teardown when they stopped every thread; else (a thread still
    in a model call, which would abort that teardown: ``terminate called without an active
    exception``, exit 134), or with ``at_once``, the output is flushed and the process ends
    at once. After Ctrl-C it ends at once: the articles are freed and the message said,
    nothing is left to do but let go of the models, and their teardown can take seconds.

    Args:
        code: the exit code.
        at_once: end without the teardown even when every thread stopped.
    """
    from tasks.embedded import stopped_cleanly

    if stopped_cleanly() and not at_once:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
