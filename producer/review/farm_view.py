"""What the farm is doing, in plain words, from what the database already records.

The farm keeps no table of worker heartbeats. What it does keep is enough to tell whether a
GPU worker is at work: a stage a worker holds has a lease that its worker renews every third
of ``FARM_LEASE_SECONDS`` (a lease still running is a worker alive now), and every stage
run is stored with the database server's time it started. A GPU worker counts as online
while it holds a render or score lease, or started one within :data:`RECENT_SECONDS`. A GPU
worker that sits idle longer than that looks offline until it takes work, which it does
within seconds of a message arriving; so a regeneration waiting for one says so only when
no GPU worker has worked for that long.

Nothing here asks Celery: the studio reads the database only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.clock import server_now, server_time
from db.models import Article, ArticleStatus, StageRun, as_utc

# Stages a GPU worker runs (tasks.registry's "gpu" role), named here so that the studio
# does not import the stage registry and its model code.
GPU_STAGES = ("render", "score")
# A GPU worker that started a stage this recently counts as online.
RECENT_SECONDS = 600

# Plain words for an article's farm status when no worker holds it.
WAITING = {
    ArticleStatus.pending.value: "Waiting to be translated",
    ArticleStatus.translated.value: "Waiting for its attributes to be read",
    ArticleStatus.extracted.value: "Waiting to be rendered",
    ArticleStatus.rendered.value: "Rendered; waiting to be scored",
    ArticleStatus.done.value: "Finished",
    ArticleStatus.needs_review.value: "Finished, but scored below the batch's minimum",
    ArticleStatus.failed.value: "Failed",
}
WORKING = {
    "translate": "Being translated now",
    "extract": "Its attributes are being read now",
    "render": "A GPU worker is rendering attempt {attempt} now",
    "score": "A GPU worker is scoring attempt {attempt} now",
}
_GPU_INPUTS = (ArticleStatus.extracted.value, ArticleStatus.rendered.value)


@dataclass(frozen=True)
class GpuWorkers:
    """Whether GPU workers are at work, as far as the database tells."""

    busy: int  # articles a GPU worker holds a live lease on
    last_seen: datetime | None  # the latest start of a GPU stage, server time
    online: bool

    @property
    def text(self) -> str:
        """One line for the page."""
        if self.busy:
            noun = "article" if self.busy == 1 else "articles"
            return f"GPU workers online: working on {self.busy} {noun} now"
        seen = _clock(self.last_seen)
        if self.online:
            return f"GPU workers online (last started work at {seen})"
        if self.last_seen is None:
            return "No GPU worker is online: none has worked for this farm yet"
        return f"No GPU worker is online (the last one started work at {seen})"


@dataclass(frozen=True)
class Progress:
    """Where an article stands, in words, and whether it waits for a GPU worker none runs."""

    text: str
    stranded: bool  # waiting for a GPU stage while no GPU worker is online
    working: bool  # a worker holds it now


def gpu_workers(session: Session) -> GpuWorkers:
    """Whether a GPU worker is online: a live GPU lease, or a GPU stage started recently.

    Two small queries: the live GPU leases, and the latest GPU stage run.
    """
    busy = session.scalar(
        select(func.count())
        .select_from(Article)
        .where(
            Article.lease_stage.in_(GPU_STAGES),
            Article.lease_token.is_not(None),
            Article.lease_expires_at > server_now(),
        )
    )
    gpu_runs = StageRun.stage.in_(GPU_STAGES)
    last = session.scalar(select(func.max(StageRun.started_at)).where(gpu_runs))
    recent = False
    if last is not None:
        recent = bool(
            session.scalar(
                select(func.count())
                .select_from(StageRun)
                .where(gpu_runs, StageRun.started_at >= server_time(-RECENT_SECONDS))
            )
        )
    return GpuWorkers(busy or 0, as_utc(last) if last is not None else None, bool(busy) or recent)


def progress(article: Article, gpu: GpuWorkers) -> Progress:
    """The article's farm status in plain words, for the reviewer waiting on it.

    Args:
        article: the article, as loaded.
        gpu: from :func:`gpu_workers`.
    """
    if article.lease_token is not None and article.lease_stage in WORKING:
        text = WORKING[article.lease_stage].format(attempt=article.render_attempt)
        return Progress(text, stranded=False, working=True)
    if article.status in _GPU_INPUTS:
        step = "render" if article.status == ArticleStatus.extracted.value else "score"
        attempt = article.render_attempt
        if not gpu.online:
            seen = (
                f"the last one started work at {_clock(gpu.last_seen)}"
                if gpu.last_seen is not None
                else "none has worked for this farm yet"
            )
            text = (
                f"Waiting for a GPU worker to {step} attempt {attempt}, but no GPU worker is "
                f"online ({seen}). It will be done as soon as one starts."
            )
            return Progress(text, stranded=True, working=False)
        text = f"Queued: a GPU worker will {step} attempt {attempt} shortly"
        return Progress(text, stranded=False, working=False)
    if article.status == ArticleStatus.failed.value and article.error_stage:
        return Progress(f"Failed at the {article.error_stage} stage", False, False)
    return Progress(WAITING.get(article.status, article.status), stranded=False, working=False)


def _clock(moment: datetime | None) -> str:
    return "–" if moment is None else as_utc(moment).strftime("%H:%M UTC")
