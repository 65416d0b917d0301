"""The four stages as plain functions over plain inputs: no Celery, no sessions, no rows.

Each stage has three parts. ``prepare`` turns one article into its model input (and raises
:class:`InvalidArticle` when there is none); ``call`` runs the model once over the inputs of
several articles (the model executor batches them); ``finish`` turns one article's model
output into the columns to store, writing its files on the way. The base task
(``tasks.base``) loads the :class:`ArticleInput` after its claim and stores what ``finish``
returns; nothing here touches the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from db.models import DEFAULT_VIEW, ArticleStatus
from tasks import outputs, storage
from tasks.exceptions import InvalidArticle, TransientStageError
from tasks.handoff import RecentImages, read_rgb
from workers.prompts import clip_prompt, generation_prompt


@dataclass(frozen=True)
class RenderInput:
    """One earlier render attempt of an article, as the score stage needs it."""

    attempt: int
    seed: int
    image_path: str
    model_id: str
    lora: str | None
    clip_score: float | None
    model_commits: dict | None = None  # its image models' (renderer, lora, scorer)


@dataclass(frozen=True)
class ArticleInput:
    """What a stage may read of one article, loaded by its task right after the claim."""

    id: int
    key: str
    batch_id: str
    file_stem: str
    source_text: str
    source_file: str = ""
    source_sheet: str = ""
    source_row: int = 0
    translation: str | None = None
    attributes: dict | None = None
    generation_prompt: str | None = None
    clip_prompt: str | None = None
    render_attempt: int = 1
    attempt_base: int = 1
    min_clip_score: float | None = None  # the batch's own threshold, if it has one
    renders: tuple[RenderInput, ...] = ()
    view: str = DEFAULT_VIEW  # one catalog row rendered in several views is one article per view
    model_commits: dict | None = None  # its text models' (translator, extractor)

    @classmethod
    def from_row(cls, row: dict, renders: tuple[dict, ...] = ()) -> ArticleInput:
        """The input of a stage from the article's columns and its render attempts."""
        return cls(**row, renders=tuple(RenderInput(**render) for render in renders))

    @property
    def stem(self) -> str:
        """The file name stem of this article's images: the row's stem, plus the view's."""
        return outputs.view_stem(self.file_stem, self.view)

    @property
    def seed_key(self) -> str:
        """What its render seeds derive from: the key alone for the front (so a catalog's
        front renders stay reproducible), the key and the view otherwise, joined by a NUL that
        no spreadsheet key holds, so no two articles share a seed."""
        return self.key if self.view == DEFAULT_VIEW else f"{self.key}\x00{self.view}"


@dataclass(frozen=True)
class StageContext:
    """What a stage may use besides the article: the profile, where files go, its limits."""

    profile: object
    output_dir: Path | str  # a folder, or an object store's URL (tasks.storage)
    worker: str
    min_clip_score: float | None = None  # the farm's default; a batch's own threshold wins
    max_attempts: int = 1
    images: RecentImages | None = None  # this process's just-written images, for scoring
    # Role → {"repo", "commit"} of the models this worker loaded (workers.loader.Runtimes).
    model_commits: Mapping[str, dict] = field(default_factory=dict)

    def commits(self, *roles: str) -> dict[str, dict]:
        """The ``{"repo", "commit"}`` of each of ``roles`` this worker loaded, to record."""
        return {role: dict(self.model_commits[role]) for role in roles
                if role in self.model_commits}  # fmt: skip


@dataclass
class StageOutput:
    """Columns to write on the article (and its render row), and the status to move to."""

    values: dict = field(default_factory=dict)
    render: dict | None = None
    status: ArticleStatus | None = None
    then: str | None = None  # a stage to start again after storing (regeneration)
    publish: bool = False  # publish the stored best attempt once stored (tasks.publish)


def render_seed(key: str, attempt: int) -> int:
    """The seed of one render attempt, derived from the article key alone (stable across runs).

    Args:
        key: the article key.
        attempt: the render attempt, from 1.

    Returns:
        An integer in ``[0, 2**63)``.
    """
    digest = hashlib.sha256(f"{key}\x00{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def with_commits(recorded: dict | None, loaded: dict[str, dict]) -> dict:
    """The ``model_commits`` column to store: the commits recorded so far plus this stage's.

    Args:
        recorded: what the row holds (an earlier stage's models), or None.
        loaded: role → ``{"repo", "commit"}`` of the models this stage ran.

    Returns:
        ``{"model_commits": ...}``, or nothing when this worker knows no commits (runtimes
        of a benchmark's factory), which leaves the column as it is.
    """
    return {"model_commits": (recorded or {}) | loaded} if loaded else {}


# --- translate ----------------------------------------------------------------------------


def prepare_translate(article: ArticleInput, ctx: StageContext) -> str:
    """The German source text."""
    return article.source_text


def call_translate(runtime, texts: list[str]) -> list[str]:
    """German texts → English texts, in one call of the translator (each text once)."""
    return once_each(lambda unique: runtime(unique).texts, texts)


def once_each(call, inputs: list) -> list:
    """``call`` over the distinct ``inputs`` only, its outputs handed back to every copy.

    The views of one catalog row (and rows a catalog repeats) send the same text through
    the text stages, usually in the same batch: the model reads it once. Neither model
    samples, so a copy would get the same output anyway.

    Args:
        call: list of distinct inputs → list of outputs in the same order.
        inputs: hashable inputs, possibly repeated.

    Returns:
        One output per input, in order.
    """
    unique = list(dict.fromkeys(inputs))
    outputs = dict(zip(unique, call(unique), strict=True))
    return [outputs[item] for item in inputs]


def finish_translate(article: ArticleInput, text: str, ctx: StageContext) -> StageOutput:
    """The translation to store, and the translator's commit."""
    recorded = with_commits(article.model_commits, ctx.commits("translator"))
    return StageOutput(values={"translation": text} | recorded)


# --- extract ------------------------------------------------------------------------------


def prepare_extract(article: ArticleInput, ctx: StageContext) -> str:
    """The English text; an empty translation fails the article (nothing to extract from)."""
    if not (article.translation or "").strip():
        raise InvalidArticle("the translation is empty; nothing to extract from")
    return article.translation


def call_extract(runtime, texts: list[str]) -> list[dict]:
    """English texts → attribute dicts, in one call of the extractor (each text once)."""
    # Each copy gets its own dict: a stage that edits its attributes leaves the others be.
    return [dict(found) for found in once_each(lambda unique: runtime(unique).attributes, texts)]


def finish_extract(article: ArticleInput, attributes: dict, ctx: StageContext) -> StageOutput:
    """The attributes, the two prompts built from them for the article's view, and the
    extractor's commit."""
    return StageOutput(
        values={
            "attributes": attributes,
            "generation_prompt": generation_prompt(attributes, article.view),
            "clip_prompt": clip_prompt(attributes, article.view),
        }
        | with_commits(article.model_commits, ctx.commits("extractor"))
    )


# --- render -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedImage:
    """One image the renderer made, with its seed and its share of the call's time."""

    image: object
    seed: int
    seconds: float


def prepare_render(article: ArticleInput, ctx: StageContext) -> tuple[str, int]:
    """The generation prompt and the seed of the article's current attempt (and view)."""
    return article.generation_prompt or "", render_seed(article.seed_key, article.render_attempt)


def call_render(runtime, inputs: list[tuple[str, int]]) -> list[RenderedImage]:
    """(prompt, seed) pairs → images, in one call of the renderer."""
    prompts, seeds = [prompt for prompt, _ in inputs], [seed for _, seed in inputs]
    result = runtime(prompts, seeds)
    seconds = result.seconds / max(1, len(inputs))
    pairs = zip(result.images, seeds, strict=True)
    return [RenderedImage(image, seed, seconds) for image, seed in pairs]


def finish_render(article: ArticleInput, made: RenderedImage, ctx: StageContext) -> StageOutput:
    """Write the attempt's PNG (off the model's thread) and describe its render row.

    Raises:
        TransientStageError: the image could not be written (a full or read-only disk).
    """
    attempt = article.render_attempt
    path = outputs.attempt_image_path(ctx.output_dir, article.batch_id, article.stem, attempt)
    try:
        outputs.save_png(made.image, path)
        if ctx.images is not None:
            ctx.images.keep(path, made.image)
    except OSError as error:
        raise TransientStageError(
            f"cannot write image {path}: {error.strerror or error}"
        ) from error
    profile = ctx.profile
    return StageOutput(
        render={
            "attempt": attempt,
            "seed": made.seed,
            "model_id": profile.renderer,
            "lora": profile.lora,
            "width": profile.width,
            "height": profile.height,
            "steps": profile.steps,
            "image_path": str(path),
            "seconds": made.seconds,
            "worker": ctx.worker,
        }
        | with_commits(None, ctx.commits("renderer", "lora"))
    )


# --- score --------------------------------------------------------------------------------


def prepare_score(article: ArticleInput, ctx: StageContext) -> tuple[object, str]:
    """The current attempt's picture and the CLIP prompt.

    Raises:
        InvalidArticle: the current attempt has no image on disk.
    """
    current = _current_render(article, ctx.images)
    path = storage.place(current.image_path)
    picture = ctx.images.load(path) if ctx.images is not None else read_rgb(path)
    return picture, article.clip_prompt or ""


def call_score(runtime, inputs: list[tuple[object, str]]) -> list[float]:
    """(picture, text) pairs → CLIP scores, in one call of the scorer."""
    return [float(s) for s in runtime([p for p, _ in inputs], [t for _, t in inputs]).scores]


def finish_score(article: ArticleInput, value: float, ctx: StageContext) -> StageOutput:
    """Keep the best attempt and decide what comes next (:func:`verdict`).

    Nothing is written here: the best attempt is published from the stored row once the
    store took it (:mod:`tasks.publish`), so a stage that lost its lease publishes nothing.
    """
    current = _current_render(article, ctx.images)
    # Earlier attempts count when scored against the current prompts and still on disk.
    scored = [
        (r.clip_score, r)
        for r in article.renders
        if r.clip_score is not None
        and article.attempt_base <= r.attempt != current.attempt
        and storage.is_file(storage.place(r.image_path))
    ]
    scored.append((value, current))
    best_score, best = max(scored, key=lambda pair: pair[0])
    final = outputs.published_image_path(
        ctx.output_dir, article.batch_id, article.file_stem, article.view
    )
    output = StageOutput(
        values={"clip_score": best_score, "image_path": str(final), "best_attempt": best.attempt},
        render={"attempt": current.attempt, "clip_score": value}
        | with_commits(current.model_commits, ctx.commits("scorer")),
        publish=True,
    )
    threshold = article.min_clip_score
    threshold = ctx.min_clip_score if threshold is None else threshold
    output.status = verdict(
        best_score, threshold, article.render_attempt, article.attempt_base, ctx.max_attempts
    )
    if output.status == ArticleStatus.extracted:
        output.values["render_attempt"] = article.render_attempt + 1
        output.then = "render"
    return output


def verdict(
    best_score: float,
    threshold: float | None,
    render_attempt: int,
    attempt_base: int,
    max_attempts: int,
) -> ArticleStatus:
    """The one rule for a scored article: done, render again, or needs review.

    The score stage and a changed threshold (``producer.thresholds``) both judge by it:
    the best stored score counts, not the newest attempt's.

    Args:
        best_score: the article's best score for its current text.
        threshold: the batch's threshold, else the farm's; None accepts every score.
        render_attempt: its current render attempt.
        attempt_base: its first attempt for the current text (earlier ones had other prompts).
        max_attempts: render attempts allowed per text (``FARM_MAX_ATTEMPTS``).

    Returns:
        ``done``; ``extracted`` to be rendered again with the next seed; or ``needs_review``.
    """
    if threshold is None or best_score >= threshold:
        return ArticleStatus.done
    if render_attempt - attempt_base + 1 < max_attempts:
        return ArticleStatus.extracted
    return ArticleStatus.needs_review


def _current_render(article: ArticleInput, images: RecentImages | None = None) -> RenderInput:
    current = next((r for r in article.renders if r.attempt == article.render_attempt), None)
    # A picture this process just wrote is there: asking an object store would cost a trip.
    there = current is not None and (
        (images is not None and images.holds(current.image_path))
        or storage.is_file(storage.place(current.image_path))
    )
    if not there:
        raise InvalidArticle(f"render attempt {article.render_attempt} has no image on disk")
    return current
