"""Queue names, task names and the routes between them, in one place."""

from __future__ import annotations

TEXT_QUEUE = "farm.text"
GPU_QUEUE = "farm.gpu"

# Redis serves priority 0 first. Catalog work runs at NORMAL; requeued and regenerated
# articles at URGENT, so they do not wait behind the rest of a 10,000-article catalog.
URGENT_PRIORITY = 0
NORMAL_PRIORITY = 6
PRIORITY_STEPS = [0, 3, 6, 9]
# Within catalog work a queue serves an article's second stage before the next article's
# first: an extraction goes ahead of the untranslated rest of the catalog (so the GPU queue
# fills after the first few articles, not after every translation), and a score ahead of the
# renders still waiting (so articles finish while the catalog runs, not in a burst at the end).
FOLLOW_UP_PRIORITY = 3
FOLLOW_UP_STAGES = ("extract", "score")

TASK_NAMES = {
    "translate": "farm.translate",
    "extract": "farm.extract",
    "render": "farm.render",
    "score": "farm.score",
}

# Ordered: the first matching route wins.
ROUTES = [
    ("farm.translate", {"queue": TEXT_QUEUE}),
    ("farm.extract", {"queue": TEXT_QUEUE}),
    ("farm.render", {"queue": GPU_QUEUE}),
    ("farm.score", {"queue": GPU_QUEUE}),
]

ROLE_QUEUES = {
    "text": (TEXT_QUEUE,),
    "gpu": (GPU_QUEUE,),
    "all": (TEXT_QUEUE, GPU_QUEUE),
}
ROLE_STAGES = {
    "text": ("translate", "extract"),
    "gpu": ("render", "score"),
    "all": ("translate", "extract", "render", "score"),
}


def stage_priority(stage: str, priority: int) -> int:
    """The Redis priority of one stage's message in a chain sent at ``priority``.

    Args:
        stage: the stage.
        priority: the chain's priority (``NORMAL_PRIORITY`` or ``URGENT_PRIORITY``).

    Returns:
        ``FOLLOW_UP_PRIORITY`` for a follow-up stage of normal catalog work, else ``priority``.
    """
    if priority == NORMAL_PRIORITY and stage in FOLLOW_UP_STAGES:
        return FOLLOW_UP_PRIORITY
    return priority
