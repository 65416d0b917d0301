"""Queue names, task names and the routes between them, in one place."""

from __future__ import annotations

TEXT_QUEUE = "farm.text"
GPU_QUEUE = "farm.gpu"

# Redis serves priority 0 first. Catalog work runs at NORMAL; requeued and regenerated
# articles at URGENT, so they do not wait behind the rest of a 10,000-article catalog.
URGENT_PRIORITY = 0
NORMAL_PRIORITY = 6
PRIORITY_STEPS = [0, 3, 6, 9]

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
