"""The four stage tasks.

Each task is a thin shell: its stage's facts are in :mod:`tasks.registry`, its logic in
:mod:`tasks.stages`, and claiming, storing, retrying and failing in
:class:`tasks.base.StageTask`. Tasks take the article id (and its key, only so that Flower
shows which article a task is about) and return the id for the next stage of the chain.
"""

from __future__ import annotations

from tasks.app import app
from tasks.base import StageTask


@app.task(bind=True, base=StageTask, name="farm.translate", stage="translate")
def translate(self: StageTask, article_id: int, key: str = "") -> int:
    """German → English for one article."""
    return self.run_stage(article_id)


@app.task(bind=True, base=StageTask, name="farm.extract", stage="extract")
def extract(self: StageTask, article_id: int, key: str = "") -> int:
    """English text → attributes and prompts for one article."""
    return self.run_stage(article_id)


@app.task(bind=True, base=StageTask, name="farm.render", stage="render")
def render(self: StageTask, article_id: int, key: str = "") -> int:
    """Generation prompt → image for one article's current attempt."""
    return self.run_stage(article_id)


@app.task(bind=True, base=StageTask, name="farm.score", stage="score")
def score(self: StageTask, article_id: int, key: str = "") -> int:
    """Image → CLIP score; publishes the article's image and JSON."""
    return self.run_stage(article_id)
