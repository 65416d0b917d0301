"""The chain of stage tasks for one article, built from task names (no task imports needed)."""

from __future__ import annotations

from celery import chain

from db.transitions import STAGES
from tasks.app import app
from tasks.queues import NORMAL_PRIORITY, TASK_NAMES, stage_priority


def article_chain(
    article_id: int, key: str, from_stage: str = "translate", priority: int = NORMAL_PRIORITY
):
    """The chain of stage signatures for one article, starting at ``from_stage``.

    Args:
        article_id: the article's primary key.
        key: the article key (a label for Flower).
        from_stage: the first stage to run.
        priority: Redis priority of the chain (0 is served first); follow-up stages of
            normal work go ahead of first stages (``tasks.queues.stage_priority``).

    Returns:
        A Celery ``chain`` ready for ``apply_async``.
    """
    if from_stage not in STAGES:
        raise ValueError(f"unknown stage {from_stage!r}; choose one of {', '.join(STAGES)}")
    stages = STAGES[STAGES.index(from_stage) :]
    signatures = [
        app.signature(
            TASK_NAMES[stage],
            args=(article_id,) if index == 0 else (),
            kwargs={"key": key},
            priority=stage_priority(stage, priority),
        )
        for index, stage in enumerate(stages)
    ]
    signatures[0].set(immutable=True)
    return chain(*signatures)
