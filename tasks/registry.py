"""The stage registry: every fact about a stage, in one place.

Chains, routes, worker roles, status views, requeue and the reaper all read it; nothing else
knows the order of the stages, their statuses, queues or batch sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from db.models import ArticleStatus
from tasks import stages
from tasks.queues import GPU_QUEUE, TEXT_QUEUE
from tasks.settings import Settings


@dataclass(frozen=True)
class Stage:
    """One stage of an article's chain.

    Attributes:
        name: ``translate``, ``extract``, ``render`` or ``score``.
        task: the Celery task name (stable: ``farm.render``).
        input: the status an article waits in for this stage.
        output: the status it moves to when the stage is done.
        queue: the broker queue of its messages.
        role: the worker role that serves it (``text`` or ``gpu``).
        batch_size: how many articles one model call may take, from the settings.
        prepare: article → model input (:mod:`tasks.stages`).
        call: (runtime, model inputs) → model outputs, one model call.
        finish: (article, model output) → the stage's output, files written.
        next: the stage that follows, or None.
        writes: the article columns it produces (a requeue from it clears them).
        needs_renders: whether its input carries the article's earlier render attempts.
        follow_up: whether it is its queue's second stage, served ahead of the first.
    """

    name: str
    task: str
    input: ArticleStatus
    output: ArticleStatus
    queue: str
    role: str
    batch_size: Callable[[Settings], int]
    prepare: Callable
    call: Callable
    finish: Callable
    next: str | None
    writes: tuple[str, ...]
    needs_renders: bool = False
    follow_up: bool = False


def _one(_settings: Settings) -> int:
    # FLUX.1-schnell at 1024² is compute-bound at one image per call: a batch gains ~2 %.
    return 1


STAGES: dict[str, Stage] = {
    "translate": Stage(
        "translate", "farm.translate", ArticleStatus.pending, ArticleStatus.translated,
        TEXT_QUEUE, "text", Settings.text_batch,
        stages.prepare_translate, stages.call_translate, stages.finish_translate,
        "extract", ("translation",),
    ),
    "extract": Stage(
        "extract", "farm.extract", ArticleStatus.translated, ArticleStatus.extracted,
        TEXT_QUEUE, "text", Settings.text_batch,
        stages.prepare_extract, stages.call_extract, stages.finish_extract,
        "render", ("attributes", "generation_prompt", "clip_prompt"), follow_up=True,
    ),
    "render": Stage(
        "render", "farm.render", ArticleStatus.extracted, ArticleStatus.rendered,
        GPU_QUEUE, "gpu", _one,
        stages.prepare_render, stages.call_render, stages.finish_render,
        "score", ("image_path", "clip_score"),
    ),
    "score": Stage(
        "score", "farm.score", ArticleStatus.rendered, ArticleStatus.done,
        GPU_QUEUE, "gpu", lambda s: s.score_batch_size,
        stages.prepare_score, stages.call_score, stages.finish_score,
        None, ("clip_score",), needs_renders=True, follow_up=True,
    ),
}  # fmt: skip
ORDER: tuple[str, ...] = tuple(STAGES)
ROLES: dict[str, tuple[str, ...]] = {
    "text": tuple(n for n, s in STAGES.items() if s.role == "text"),
    "gpu": tuple(n for n, s in STAGES.items() if s.role == "gpu"),
    "all": ORDER,
}
ROUTES = [(stage.task, {"queue": stage.queue}) for stage in STAGES.values()]
IN_FLIGHT = tuple(stage.input for stage in STAGES.values())


def role_queues(role: str) -> tuple[str, ...]:
    """The queues a worker of ``role`` consumes, in stage order, without repeats."""
    return tuple(dict.fromkeys(STAGES[name].queue for name in ROLES[role]))


def role_concurrency(role: str, settings: Settings) -> int:
    """Messages one worker process of ``role`` holds at once: enough to fill every batch.

    Each of the role's stages gets a full batch waiting (a text worker translates a batch
    while the next extraction batch gathers), and a GPU process one message more, so the
    next render starts while the previous article's PNG is written.
    """
    names = ROLES[role]
    waiting = sum(STAGES[name].batch_size(settings) for name in names)
    return waiting + (1 if any(STAGES[name].role == "gpu" for name in names) else 0)


def stage_waiting_in(status: str) -> Stage | None:
    """The stage an article in ``status`` waits for, or None when it waits for none."""
    return next((s for s in STAGES.values() if s.input.value == status), None)


def stages_from(name: str) -> list[Stage]:
    """The stage ``name`` and every stage after it, in order.

    Raises:
        ValueError: ``name`` is not a stage.
    """
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; choose one of {', '.join(ORDER)}")
    return [STAGES[n] for n in ORDER[ORDER.index(name) :]]
