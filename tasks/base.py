"""Behaviour shared by every stage task: claim, run, store, retry or fail, time and log.

A stage task is a thin wrapper that names its stage and its stage function; this class does
the rest, so that delivery guarantees live in one place:

* the article is claimed with a lease (``db.transitions``), so a duplicate delivery finds the
  work done or taken and does nothing;
* transient errors (full disks, out-of-memory) release the lease and retry with backoff;
  after ``stage_retries`` retries, or on :class:`InvalidArticle` at once, the article ends
  ``failed`` with its stage, error kind and message; when the database fails, nothing can
  be released, so the retry carries the lease tokens its earlier tries took (``lease``)
  and takes their claims back (each try claims under a token of its own, so a second copy
  of the same message still finds the first one's claims held);
* a copy that did no work stops its chain, so the next stage is sent once;
* a batched stage (translate and extract; render and score unless ``FARM_GPU_BATCH_SIZE`` is 1)
  also claims other articles waiting at its stage and runs them in one call of its batch
  function (one model call; render streams them through the GPU); it stores each and sends
  each one's next stage itself, and their own messages, when they come, find the stage done
  and stop (one that comes while the batch runs looks again every ``busy_recheck_seconds``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NoReturn

from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery import Task
from celery.exceptions import Reject, Retry
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from db.models import TERMINAL_STATUSES, Article
from db.transitions import (
    STAGE_OUTPUT,
    STAGES,
    Claim,
    ClaimOutcome,
    abandon_stage,
    autocommit_reads,
    claim_stage,
    complete_stage,
    fail_article,
    new_lease_token,
    release_stage,
    release_token,
    waiting_articles,
)
from tasks import state
from tasks.chains import article_chain
from tasks.exceptions import InvalidArticle
from tasks.finish import write_statistics_if_finished
from tasks.queues import URGENT_PRIORITY
from tasks.stages import StageContext, StageOutput

logger = logging.getLogger("farm.tasks")

StageFunction = Callable[[Article, StageContext], StageOutput]
# A batched stage: per article, its output or the error that stops it alone.
BatchFunction = Callable[[list[Article], StageContext], list[StageOutput | Exception]]


class StageTask(Task):
    """Base class of ``farm.translate``, ``farm.extract``, ``farm.render`` and ``farm.score``."""

    stage: str = ""
    batch_setting: str = "text_batch_size"  # the Settings field that sizes this stage's batches
    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # bounded by the farm's own attempt counters instead

    def run_stage(
        self,
        article_id: int,
        work: StageFunction,
        batch_work: BatchFunction | None = None,
        lease: list[str] | None = None,
    ) -> int:
        """Claim the article for this stage, run ``work`` on it and store its outputs.

        Args:
            article_id: the article's primary key.
            work: the plain stage function.
            batch_work: the stage's batched form; when given, up to ``batch_setting`` - 1
                other waiting articles are claimed and run in the same call.
            lease: the lease tokens of this message's earlier tries, which a retry after a
                database failure carries: their claims may be taken back although live.

        Returns:
            ``article_id``, which the chain hands to the next stage.
        """
        settings = self.app.farm_settings
        sessions = state.sessions(settings.database_url)
        earlier = list(lease or [])
        token = new_lease_token(self.request.id)
        try:
            with sessions() as session:
                return self._claim_and_run(session, article_id, work, batch_work, token, earlier)
        except DBAPIError as error:
            # The database itself is away: nothing could be recorded, so retry the whole
            # stage. The retry carries this try's token and the earlier ones (a claim may
            # have committed unanswered), so it takes back what they hold instead of
            # waiting for their leases to run out.
            limit = self.app.farm_settings.database_retries
            message = f"database error: {type(error.orig).__name__}"
            self._retry_later(error, message, limit, lease=[*earlier, token])
            raise  # unreachable: _retry_later raises

    def _claim_and_run(
        self,
        session,
        article_id: int,
        work: StageFunction,
        batch_work: BatchFunction | None,
        token: str,
        earlier: list[str],
    ) -> int:
        if earlier:
            # The earlier tries' batch mates go back to their own messages.
            release_token(session, earlier, self.stage, article_id, "its batch's task failed")
        claim = self._claim(session, article_id, token, takeover=earlier)
        if claim.outcome is ClaimOutcome.busy:
            self._look_again(claim.retry_in + 1)
        if claim.outcome is not ClaimOutcome.claimed:
            logger.info("article %s: %s skipped (%s)", article_id, self.stage, claim.outcome.value)
            self.request.chain = None
            return article_id
        # A retried article (an earlier try failed or was killed) runs alone.
        batched = batch_work is not None and claim.attempt == 1
        others = self._claim_others(session, article_id, token) if batched else []
        started = time.perf_counter()
        autocommit_reads(session)  # the stage's reads and its completion
        output, *outputs = self._run(work, batch_work, [claim, *others])
        for other, other_output in zip(others, outputs, strict=True):
            self._store_other(session, other, other_output)
        if isinstance(output, InvalidArticle):
            self._fail(session, claim, output)
        if isinstance(output, Exception):
            self._after_error(session, claim, article_id, output)
        self._store(session, claim, output, started, len(others))
        return article_id

    def _look_again(self, lease_left: float) -> NoReturn:
        """Send this message again for an article whose stage another task holds.

        The holder may be a batch that runs the article and stores it (this copy then finds
        the stage done), or that gives it back after a failed call, or a worker that died
        (its lease runs out). So look again soon, but not after the lease would have run out.
        The re-sent message keeps its retry count: waiting is not a failure.
        """
        countdown = min(lease_left, self.app.farm_settings.busy_recheck_seconds)
        if self.request.called_directly or self.request.is_eager:
            raise self.retry(countdown=countdown)  # not from a queue: Celery's own handling
        again = self.signature_from_request(countdown=countdown)
        try:
            again.apply_async()
        except Exception as error:  # as Task.retry does: the broker is away for good
            raise Reject(error, requeue=False) from error
        raise Retry(when=countdown, sig=again)

    def _run(
        self, work: StageFunction, batch_work: BatchFunction | None, claims: list[Claim]
    ) -> list[StageOutput | Exception]:
        """One output or exception per claim. A batch whose call fails is run again one
        article at a time, so one article that breaks the model fails alone."""
        ctx = self._context()
        articles = [claim.article for claim in claims]
        if batch_work is None:
            return [_outcome(work, articles[0], ctx)]
        try:
            return batch_work(articles, ctx)
        except SoftTimeLimitExceeded as error:
            return [error] * len(articles)  # out of time: nothing is run again in this task
        except SQLAlchemyError:
            # The database failed (a stage reads related rows), not the model: the session
            # is unusable, so the whole stage is retried (run_stage) instead of run again here.
            raise
        except Exception as error:
            if len(articles) == 1:
                return [error]
            logger.warning(
                "%s of %d articles in one call failed (%s: %s); running them one at a time",
                self.stage,
                len(articles),
                type(error).__name__,
                error,
            )
            alone = lambda article, ctx: batch_work([article], ctx)[0]  # noqa: E731
            return [_outcome(alone, article, ctx) for article in articles]

    def _claim(
        self, session, article_id: int, token: str, takeover: list[str] | None = None
    ) -> Claim:
        settings = self.app.farm_settings
        return claim_stage(
            session,
            article_id,
            self.stage,
            self.request.hostname or "unknown",
            settings.lease_seconds,
            settings.max_stage_attempts,
            token=token,
            takeover=takeover,
        )

    def _claim_others(self, session, article_id: int, token: str) -> list[Claim]:
        limit = getattr(self.app.farm_settings, self.batch_setting) - 1
        if limit < 1:
            return []
        waiting = waiting_articles(session, self.stage, limit, exclude=article_id)
        claims = (self._claim(session, other_id, token) for other_id in waiting)
        return [claim for claim in claims if claim.outcome is ClaimOutcome.claimed]

    def _store(self, session, claim: Claim, output: StageOutput, started: float, others: int):
        article = claim.article
        if not complete_stage(
            session, claim, article.id, self.stage, output.values, output.render, output.status
        ):
            logger.warning("article %s: %s lost its lease; result dropped", article.id, self.stage)
            self.request.chain = None
            return
        self._after_store(session, article, output)
        logger.info(
            "article %s (%s): %s done in %.2fs%s",
            article.id,
            article.key,
            self.stage,
            time.perf_counter() - started,
            f" with {others} more articles in the same call" if others else "",
        )

    def _store_other(self, session, claim: Claim, output: StageOutput | Exception) -> None:
        """Store an article claimed alongside this task's own, and send its next stage."""
        article = claim.article
        if isinstance(output, InvalidArticle):
            fail_article(session, article.id, self.stage, "InvalidArticle", str(output), claim)
            self._article_ended(session, article)
            return
        if isinstance(output, Exception):
            # Its own message is still queued: that task retries it and counts the error.
            release_stage(session, claim, article.id, f"{type(output).__name__}: {output}")
            return
        if not complete_stage(
            session, claim, article.id, self.stage, output.values, output.render, output.status
        ):
            return  # its lease ran out: another copy owns it now
        self._after_store(session, article, output)
        status = output.status or STAGE_OUTPUT[self.stage]
        if status not in TERMINAL_STATUSES and not output.then:
            next_stage = STAGES[STAGES.index(self.stage) + 1]
            article_chain(article.id, article.key, next_stage).apply_async()

    def _fail(self, session, claim: Claim, error: InvalidArticle) -> NoReturn:
        fail_article(session, claim.article.id, self.stage, "InvalidArticle", str(error), claim)
        self._article_ended(session, claim.article)
        raise error

    def _context(self) -> StageContext:
        settings = self.app.farm_settings
        return StageContext(
            runtime=state.runtime(self.stage),
            profile=state.profile(),
            output_dir=settings.output_dir,
            worker=self.request.hostname or "unknown",
            min_clip_score=settings.min_clip_score,
            max_attempts=settings.max_attempts,
            images_per_call=settings.render_images_per_call,
            images=state.recent_images(),
        )

    def _after_store(self, session, article: Article, output: StageOutput) -> None:
        if (output.status or STAGE_OUTPUT[self.stage]) in TERMINAL_STATUSES:
            self._article_ended(session, article)
        if output.then:
            chain = article_chain(article.id, article.key, output.then, priority=URGENT_PRIORITY)
            chain.apply_async()

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Called in the worker's main process when a hard time limit killed the pool child.

        The child could record nothing, so free what it held here (its article and batch
        mates, by the task id in their lease tokens) and start the article's chain again
        from this stage; the claim counter bounds how often that can happen.
        """
        if not isinstance(exc, TimeLimitExceeded) or not args:
            return
        article_id, key = args[0], (kwargs or {}).get("key", "")
        settings = self.app.farm_settings
        with state.sessions(settings.database_url)() as session:
            abandon_stage(session, task_id, self.stage, f"hard time limit: {exc}")
        logger.warning("article %s: %s hit the hard time limit; sent again", article_id, self.stage)
        chain = article_chain(article_id, key, self.stage, priority=URGENT_PRIORITY)
        chain.apply_async(countdown=settings.retry_backoff_seconds)

    def _article_ended(self, session, article: Article) -> None:
        autocommit_reads(session)
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

    def _retry_later(
        self, error: Exception, message: str, limit: int, lease: list[str] | None = None
    ) -> NoReturn:
        settings = self.app.farm_settings
        if self.request.retries >= limit:
            raise error
        countdown = min(60.0, settings.retry_backoff_seconds * (2**self.request.retries))
        logger.warning("%s retry in %.1fs: %s", self.stage, countdown, message)
        kwargs = dict(self.request.kwargs or {})
        if lease is not None:
            kwargs["lease"] = lease
        raise self.retry(exc=error, countdown=countdown, kwargs=kwargs)


def _outcome(work: StageFunction, article: Article, ctx: StageContext) -> StageOutput | Exception:
    try:
        return work(article, ctx)
    except SQLAlchemyError:
        raise  # the database's, not the article's: see StageTask._run
    except Exception as error:
        return error
