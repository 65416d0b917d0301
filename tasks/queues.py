"""Queue names and message priorities."""

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


def stage_priority(follow_up: bool, priority: int) -> int:
    """The Redis priority of one stage's message in a chain sent at ``priority``.

    Args:
        follow_up: whether the stage is its queue's second (``Stage.follow_up``).
        priority: the chain's priority (``NORMAL_PRIORITY`` or ``URGENT_PRIORITY``).

    Returns:
        ``FOLLOW_UP_PRIORITY`` for a follow-up stage of normal catalog work, else ``priority``.
    """
    if priority == NORMAL_PRIORITY and follow_up:
        return FOLLOW_UP_PRIORITY
    return priority
