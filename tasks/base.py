"""Behaviour shared by every stage task: claim, run, store, retry or fail.

A stage task works on its own article only:

1. **Claim** it (:func:`db.transitions.claim`): one conditional UPDATE takes a lease. A copy
   of the message that finds the stage done or held, or the article not there yet, stops
   quietly and ends its chain.
2. **Run** the stage over a plain :class:`ArticleInput`: ``prepare`` here, the model call on
   the process's model executor (which batches it with other messages' inputs, and counts
   the attempt as the call starts: :class:`tasks.boot.AttemptCounter`), ``finish`` here
   again (a PNG written while the executor renders the next article).
3. **Store** under the lease, then let Celery send the chain's next stage; the message is
   acknowledged after that (``acks_late``).

Errors: :class:`InvalidArticle` fails the article at once; any other error releases the
stage for a retry with backoff (the attempt counted), until the article's attempts at the
stage reach ``max_stage_attempts`` and it fails with that error. A database that is away is
waited for: the claim is retried later, a store is tried again in place. Articles whose
worker died are not this module's concern: their lease ends (at once, when the launcher
sees the death) and the reaper (:mod:`tasks.reaper`) sends them again.
"""

from __future__ import annotations

import logging
import random
import time
from functools import partial

from celery import Task
from sqlalchemy.exc import DBAPIError

from db import sends, transitions
from db.models import TERMINAL_STATUSES
from db.urls import describe
from tasks import context
from tasks.chains import article_chain
from tasks.context import WorkerContext
from tasks.exceptions import InvalidArticle
from tasks.finish import write_statistics_if_finished
from tasks.publish import publish
from tasks.queues import URGENT_PRIORITY
from tasks.registry import STAGES, Stage
from tasks.stages import ArticleInput, StageContext, StageOutput

logger = logging.getLogger("farm.tasks")


def _report_unclaimed(engine, article_id: int, stage: str) -> None:
    """Say why a message's stage was not taken: quietly when the article is done or held, as
    an error naming the database when it has no such article (the message is still
    acknowledged: retrying cannot create the row, but a worker pointed at the wrong database
    must not strand articles silently)."""
    if transitions.article_exists(engine, article_id):
        logger.info("article %s: %s skipped (done, held or not there yet)", article_id, stage)
        return
    logger.error(
        "article %s: no such article in the database %s; its %s message is dropped. "
        "Is this worker's FARM_DATABASE_URL the one the batch was submitted to?",
        article_id, describe(engine.url), stage,
    )  # fmt: skip


# Storing a finished stage while the database is away: tried again for this long.
STORE_PATIENCE_SECONDS = 600.0
# The longest wait before a retry, whatever the attempt.
MAX_BACKOFF_SECONDS = 60.0


def backoff_seconds(base: float, attempt: int) -> float:
    """How long to wait before the retry that follows ``attempt`` (from 1).

    Doubling from ``base``, capped, and drawn between half and all of that: retries of
    articles that failed together (a database restart) do not all come back at once.

    Args:
        base: ``FARM_RETRY_BACKOFF_SECONDS``.
        attempt: the attempt that just failed.
    """
    ceiling = min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def attempts_left(attempt: int, limit: int) -> int:
    """How many more attempts at a stage an article may have after attempt number ``attempt``.

    The one reading of ``FARM_MAX_STAGE_ATTEMPTS``: attempt ``limit`` still runs, with 0
    left (an error then fails the article); a claim for an attempt past it runs nothing
    (negative): the article's stage was attempted ``limit`` times already.
    """
    return limit - attempt


class StageTask(Task):
    """Base class of ``farm.translate``, ``farm.extract``, ``farm.render`` and ``farm.score``."""

    stage: str = ""
    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # bounded by the article's attempts at the stage instead

    def run_stage(self, article_id: int) -> int:
        """Claim the article for this stage, run the stage and store its outputs.

        Args:
            article_id: the article's primary key.

        Returns:
            ``article_id``, which the chain hands to the next stage.
        """
        process = context.current()
        process.take_next_sent()  # what an earlier message of this thread left, if it failed
        settings, engine = process.settings, process.engine
        stage = STAGES[self.stage]
        node = self.request.hostname or "unknown"
        token = transitions.new_token(node)
        try:
            held = transitions.claim(
                engine, article_id, stage.name, stage.input.value, token, node,
                settings.lease_seconds, with_renders=stage.needs_renders,
            )  # fmt: skip
        except DBAPIError as error:
            countdown = backoff_seconds(settings.retry_backoff_seconds, self.request.retries + 1)
            logger.warning("%s: database away (%s); retry in %.1fs", stage.name, error, countdown)
            raise self.retry(exc=error, countdown=countdown) from error
        finally:
            process.arrivals.claimed(self.request.id)
        if held is None:
            _report_unclaimed(engine, article_id, stage.name)
            self.request.chain = None
            return article_id
        process.leases.add(token)
        try:
            self._run_claimed(process, stage, held)
        finally:
            process.leases.discard(token)
        return article_id

    def _run_claimed(self, worker: WorkerContext, stage: Stage, held: transitions.Claim) -> None:
        limit = worker.settings.max_stage_attempts
        if attempts_left(held.attempt, limit) < 0:
            message = f"{stage.name} gave up after {limit} attempts (errors, deaths or time-outs)"
            self._fail(worker, stage, held, "AttemptsExhausted", message)
            return
        started = time.perf_counter()
        try:
            article = ArticleInput.from_row(held.article, held.renders)
            output = self._run(worker, stage, article, held.token)
        except InvalidArticle as error:
            self._fail(worker, stage, held, "InvalidArticle", str(error))
            return
        except Exception as error:
            self._retry_or_fail(worker, stage, held, error)
            return
        self._store(worker, stage, held, output)
        logger.info(
            "article %s (%s): %s done in %.2fs",
            held.article_id, held.article["key"], stage.name, time.perf_counter() - started,
        )  # fmt: skip

    def _run(
        self, worker: WorkerContext, stage: Stage, article: ArticleInput, token: str
    ) -> StageOutput:
        ctx = self._stage_context(worker)
        model_input = stage.prepare(article, ctx)
        call = partial(stage.call, worker.runtime(stage.name))
        size = stage.batch_size(worker.settings)
        running = worker.executor.submit(stage.name, call, model_input, size, label=token)
        return stage.finish(article, running.result(), ctx)

    def _store(
        self, worker: WorkerContext, stage: Stage, held: transitions.Claim, output: StageOutput
    ) -> None:
        status = output.status or stage.output
        ended = status in TERMINAL_STATUSES
        store = partial(transitions.complete, worker.engine, held, status.value, output.values,
                        output.render, ended)  # fmt: skip
        if not self._patiently(stage, store):
            logger.warning("article %s: %s lost its lease; result dropped", held.article_id, stage)
            self.request.chain = None
            return
        if output.publish:
            self._publish(worker, held)
        if ended:
            self._article_ended(worker, held)
        if output.then:
            # Celery sends the regeneration as it sends any chain's next stage.
            steps = article_chain(held.article_id, held.article["key"], output.then,
                                  URGENT_PRIORITY)  # fmt: skip
            self.request.chain = [dict(step) for step in reversed(steps.tasks)]
        if self.request.chain:
            # Marked as sent in on_success, once Celery has sent the chain's next stage.
            worker.note_next_sent(held.article_id, status.value)

    def _publish(self, worker: WorkerContext, held: transitions.Claim) -> None:
        """Publish the stored best attempt; what fails here, the reaper publishes later."""
        try:
            publish(worker.engine, held.article_id, worker.settings.output_dir, worker.profile)
        except (OSError, DBAPIError) as error:
            logger.warning("article %s: not published yet (%s); the reaper will",
                           held.article_id, error)  # fmt: skip

    def _patiently(self, stage: Stage, write) -> bool:
        """Run a database write, waiting out a database that is away (a restart)."""
        deadline = time.monotonic() + STORE_PATIENCE_SECONDS
        delay = 0.5
        while True:
            try:
                return write()
            except DBAPIError as error:
                if time.monotonic() + delay > deadline:
                    raise
                logger.warning("%s: database away (%s); storing again in %.1fs",
                               stage.name, type(error.orig).__name__, delay)  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def on_success(self, retval, task_id, args, kwargs) -> None:
        """Record that the chain's next stage was sent (Celery sends it before this runs)."""
        worker = context.current()
        sent = worker.take_next_sent()
        if sent is not None:
            sends.mark_sent(worker.engine, [sent[0]], sent[1])

    def after_return(self, status, retval, task_id, args, kwargs, einfo) -> None:
        """Forget a next stage noted by a task that did not succeed after all."""
        if context.installed():
            context.current().take_next_sent()

    def _retry_or_fail(self, worker: WorkerContext, stage: Stage, held: transitions.Claim, error):
        engine, settings = worker.engine, worker.settings
        kind = type(error).__name__
        message = f"{kind}: {error}"
        if attempts_left(held.attempt, settings.max_stage_attempts) <= 0:
            self._fail(worker, stage, held, kind, message)
            return
        countdown = backoff_seconds(settings.retry_backoff_seconds, held.attempt)
        transitions.release(engine, held, message, countdown)
        logger.warning("%s retry in %.1fs: %s", stage.name, countdown, message)
        raise self.retry(exc=error, countdown=countdown)

    def _fail(self, worker: WorkerContext, stage: Stage, held, kind: str, error: str) -> None:
        logger.warning("article %s: %s failed (%s)", held.article_id, stage.name, error)
        transitions.fail(worker.engine, held.article_id, stage.name, kind, error, held)
        self.request.chain = None
        self._article_ended(worker, held)

    def _article_ended(self, worker: WorkerContext, held: transitions.Claim) -> None:
        with worker.engine.connect() as connection:
            output_dir = worker.settings.output_dir
            write_statistics_if_finished(connection, held.article["batch_id"], output_dir)

    def _stage_context(self, worker: WorkerContext) -> StageContext:
        settings = worker.settings
        return StageContext(
            profile=worker.profile,
            output_dir=settings.output_dir,
            worker=self.request.hostname or "unknown",
            min_clip_score=settings.min_clip_score,
            max_attempts=settings.max_attempts,
            images=worker.images,
            model_commits=worker.runtimes.model_commits,
        )
