"""Behaviour shared by every stage task: claim, run, store, retry or fail, time and log.

A stage task is a thin wrapper that names its stage and its stage function; this class does
the rest, so that delivery guarantees live in one place:

* the article is claimed with a lease (``db.transitions``), so a duplicate delivery finds the
  work done or taken and does nothing;
* transient errors (database blips, full disks, out-of-memory) release the lease and retry
  with backoff; after ``stage_retries`` retries, or on :class:`InvalidArticle` at once, the
  article ends ``failed`` with its stage, error kind and message;
* a copy that did no work stops its chain, so the next stage is sent once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NoReturn

from billiard.exceptions import TimeLimitExceeded
from celery import Task
from sqlalchemy.exc import DBAPIError

from db.models import TERMINAL_STATUSES, Article
from db.transitions import (
    STAGE_OUTPUT,
    ClaimOutcome,
    abandon_stage,
    claim_stage,
    complete_stage,
    fail_article,
    release_stage,
)
from tasks import state
from tasks.chains import article_chain
from tasks.exceptions import InvalidArticle
from tasks.finish import write_statistics_if_finished
from tasks.queues import URGENT_PRIORITY
from tasks.stages import StageContext, StageOutput

logger = logging.getLogger("farm.tasks")

StageFunction = Callable[[Article, StageContext], StageOutput]


class StageTask(Task):
    """Base class of ``farm.translate``, ``farm.extract``, ``farm.render`` and ``farm.score``."""

    stage: str = ""
    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # bounded by the farm's own attempt counters instead

    def run_stage(self, article_id: int, work: StageFunction) -> int:
        """Claim the article for this stage, run ``work`` on it and store its outputs.

        Args:
            article_id: the article's primary key.
            work: the plain stage function.

        Returns:
            ``article_id``, which the chain hands to the next stage.
        """
        settings = self.app.farm_settings
        sessions = state.sessions(settings.database_url)
        try:
            with sessions() as session:
                return self._claim_and_run(session, article_id, work)
        except DBAPIError as error:
            # The database itself is away: nothing could be recorded, so retry the whole stage.
            limit = self.app.farm_settings.database_retries
            self._retry_later(error, f"database error: {type(error.orig).__name__}", limit)
            raise  # unreachable: _retry_later raises

    def _claim_and_run(self, session, article_id: int, work: StageFunction) -> int:
        settings = self.app.farm_settings
        claim = claim_stage(
            session,
            article_id,
            self.stage,
            self.request.hostname or "unknown",
            settings.lease_seconds,
            settings.max_stage_attempts,
        )
        if claim.outcome is ClaimOutcome.busy:
            # Another copy holds a live lease; if its worker died the lease runs out, so look
            # again after it would have expired rather than dropping the article.
            raise self.retry(countdown=claim.retry_in + 1)
        if claim.outcome is not ClaimOutcome.claimed:
            logger.info("article %s: %s skipped (%s)", article_id, self.stage, claim.outcome.value)
            self.request.chain = None
            return article_id
        article = claim.article
        started = time.perf_counter()
        try:
            output = work(article, self._context())
        except InvalidArticle as error:
            fail_article(session, article_id, self.stage, "InvalidArticle", str(error), claim)
            self._article_ended(session, article)
            raise
        except Exception as error:
            self._after_error(session, claim, article_id, error)
        if complete_stage(
            session, claim, article_id, self.stage, output.values, output.render, output.status
        ):
            self._after_store(session, article, output)
            logger.info(
                "article %s (%s): %s done in %.2fs",
                article_id,
                article.key,
                self.stage,
                time.perf_counter() - started,
            )
        else:
            logger.warning("article %s: %s lost its lease; result dropped", article_id, self.stage)
            self.request.chain = None
        return article_id

    def _context(self) -> StageContext:
        settings = self.app.farm_settings
        return StageContext(
            runtime=state.runtime(self.stage),
            profile=state.profile(),
            output_dir=settings.output_dir,
            worker=self.request.hostname or "unknown",
            min_clip_score=settings.min_clip_score,
            max_attempts=settings.max_attempts,
        )

    def _after_store(self, session, article: Article, output: StageOutput) -> None:
        if (output.status or STAGE_OUTPUT[self.stage]) in TERMINAL_STATUSES:
            self._article_ended(session, article)
        if output.then:
            chain = article_chain(article.id, article.key, output.then, priority=URGENT_PRIORITY)
            chain.apply_async()

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Called in the worker's main process when a hard time limit killed the pool child.

        The child could record nothing, so free the stage here and start the article's chain
        again from this stage; the claim counter bounds how often that can happen.
        """
        if not isinstance(exc, TimeLimitExceeded) or not args:
            return
        article_id, key = args[0], (kwargs or {}).get("key", "")
        settings = self.app.farm_settings
        with state.sessions(settings.database_url)() as session:
            abandon_stage(session, article_id, self.stage, f"hard time limit: {exc}")
        logger.warning("article %s: %s hit the hard time limit; sent again", article_id, self.stage)
        chain = article_chain(article_id, key, self.stage, priority=URGENT_PRIORITY)
        chain.apply_async(countdown=settings.retry_backoff_seconds)

    def _article_ended(self, session, article: Article) -> None:
        write_statistics_if_finished(session, article.batch_id, self.app.farm_settings.output_dir)

    def _after_error(self, session, claim, article_id: int, error: Exception) -> NoReturn:
        kind = type(error).__name__
        message = f"{kind}: {error}"
        if self.request.retries >= self.app.farm_settings.stage_retries:
            fail_article(session, article_id, self.stage, kind, message, claim)
            self._article_ended(session, session.get(Article, article_id))
            raise error
        release_stage(session, claim, article_id, message)
        self._retry_later(error, message, self.app.farm_settings.stage_retries)

    def _retry_later(self, error: Exception, message: str, limit: int) -> NoReturn:
        settings = self.app.farm_settings
        if self.request.retries >= limit:
            raise error
        countdown = min(60.0, settings.retry_backoff_seconds * (2**self.request.retries))
        logger.warning("%s retry in %.1fs: %s", self.stage, countdown, message)
        raise self.retry(exc=error, countdown=countdown)
