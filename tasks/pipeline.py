"""The stage tasks and the chain that strings them together for one article.

Each task is a thin shell over :mod:`tasks.stages`; claiming, storing, retrying and failing
are in :class:`tasks.base.StageTask`. Tasks take the article id (and its key, only so that
Flower shows which article a task is about) and return the id for the next stage.
"""

from __future__ import annotations

from celery import chain

from tasks import stages
from tasks.app import app
from tasks.base import StageTask


@app.task(bind=True, base=StageTask, name="farm.translate", stage="translate")
def translate(self: StageTask, article_id: int, key: str = "") -> int:
    """German → English for one article."""
    return self.run_stage(article_id, stages.translate)


@app.task(bind=True, base=StageTask, name="farm.extract", stage="extract")
def extract(self: StageTask, article_id: int, key: str = "") -> int:
    """English text → attributes and prompts for one article."""
    return self.run_stage(article_id, stages.extract)


@app.task(bind=True, base=StageTask, name="farm.render", stage="render")
def render(self: StageTask, article_id: int, key: str = "") -> int:
    """Generation prompt → image for one article's current attempt."""
    return self.run_stage(article_id, stages.render)


@app.task(bind=True, base=StageTask, name="farm.score", stage="score")
def score(self: StageTask, article_id: int, key: str = "") -> int:
    """Image → CLIP score; publishes the article's image and JSON."""
    return self.run_stage(article_id, stages.score)


STAGE_TASKS = {"translate": translate, "extract": extract, "render": render, "score": score}


def article_chain(article_id: int, key: str, from_stage: str = "translate"):
    """The chain of stage signatures for one article, starting at ``from_stage``.

    Args:
        article_id: the article's primary key.
        key: the article key (a label for Flower).
        from_stage: the first stage to run.

    Returns:
        A Celery ``chain`` ready for ``apply_async``.
    """
    names = list(STAGE_TASKS)
    first, *rest = names[names.index(from_stage) :]
    signatures = [STAGE_TASKS[first].si(article_id, key=key)]
    signatures += [STAGE_TASKS[name].s(key=key) for name in rest]
    return chain(*signatures)
