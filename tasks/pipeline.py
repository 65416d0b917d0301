"""The four stage tasks.

Each task is a thin shell over :mod:`tasks.stages`; claiming, storing, retrying and failing
are in :class:`tasks.base.StageTask`. Tasks take the article id (and its key, only so that
Flower shows which article a task is about) and return the id for the next stage; the chain
itself is built in :mod:`tasks.chains`.
"""

from __future__ import annotations

from tasks import stages
from tasks.app import app
from tasks.base import StageTask


@app.task(bind=True, base=StageTask, name="farm.translate", stage="translate")
def translate(
    self: StageTask, article_id: int, key: str = "", lease: list[str] | None = None
) -> int:
    """German → English for one article."""
    return self.run_stage(article_id, stages.translate, stages.translate_batch, lease)


@app.task(bind=True, base=StageTask, name="farm.extract", stage="extract")
def extract(self: StageTask, article_id: int, key: str = "", lease: list[str] | None = None) -> int:
    """English text → attributes and prompts for one article."""
    return self.run_stage(article_id, stages.extract, stages.extract_batch, lease)


@app.task(
    bind=True, base=StageTask, name="farm.render", stage="render", batch_setting="gpu_batch_size"
)
def render(self: StageTask, article_id: int, key: str = "", lease: list[str] | None = None) -> int:
    """Generation prompt → image for one article's current attempt."""
    return self.run_stage(article_id, stages.render, stages.render_batch, lease)


@app.task(
    bind=True, base=StageTask, name="farm.score", stage="score", batch_setting="gpu_batch_size"
)
def score(self: StageTask, article_id: int, key: str = "", lease: list[str] | None = None) -> int:
    """Image → CLIP score; publishes the article's image and JSON."""
    return self.run_stage(article_id, stages.score, stages.score_batch, lease)
