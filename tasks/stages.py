"""The four stages as plain functions: an article row and a model runtime in, outputs out.

Nothing here knows about Celery or sessions. Each function reads the columns it needs from
the article, calls its runtime, writes its files, and returns the columns to store. The base
task (``tasks.base``) claims the article before and stores the outputs after.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from db.models import Article, ArticleStatus, Render
from tasks import outputs
from tasks.exceptions import InvalidArticle, TransientStageError
from tasks.handoff import RecentImages, read_rgb
from workers.prompts import clip_prompt, generation_prompt


@dataclass(frozen=True)
class StageContext:
    """What a stage may use besides the article: its model, the profile and where files go."""

    runtime: object
    profile: object
    output_dir: Path
    worker: str
    min_clip_score: float | None = None  # the farm's default; a batch's own threshold wins
    max_attempts: int = 1
    images_per_call: int = 1  # images per renderer call when a render task has several articles
    images: RecentImages | None = None  # this process's just-written images, for the score stage


@dataclass
class StageOutput:
    """Columns to write on the article (and its render row), and the status to move to."""

    values: dict = field(default_factory=dict)
    render: dict | None = None
    status: ArticleStatus | None = None
    then: str | None = None  # a stage to start again after storing (regeneration)


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


def translate_batch(articles: list[Article], ctx: StageContext) -> list[StageOutput]:
    """German source texts → English translations, in one call of the runtime.

    Args:
        articles: the articles, each claimed for this stage.
        ctx: the stage's context.

    Returns:
        One output per article, in order.
    """
    result = ctx.runtime([article.source_text for article in articles])
    return [StageOutput(values={"translation": text}) for text in result.texts]


def translate(article: Article, ctx: StageContext) -> StageOutput:
    """German source text → English translation."""
    return translate_batch([article], ctx)[0]


def extract_batch(articles: list[Article], ctx: StageContext) -> list[StageOutput | InvalidArticle]:
    """English texts → attributes JSON and the two prompts, in one call of the runtime.

    Args:
        articles: the articles, each claimed for this stage.
        ctx: the stage's context.

    Returns:
        One item per article, in order: its output, or the :class:`InvalidArticle` that
        fails it alone (an empty translation) while the others go on.
    """
    usable = [bool((article.translation or "").strip()) for article in articles]
    texts = [article.translation for article, ok in zip(articles, usable, strict=True) if ok]
    found = iter(ctx.runtime(texts).attributes if texts else [])
    return [
        _extracted(next(found))
        if ok
        else InvalidArticle("the translation is empty; nothing to extract from")
        for ok in usable
    ]


def extract(article: Article, ctx: StageContext) -> StageOutput:
    """English text → attributes JSON and the two prompts."""
    return _single(extract_batch([article], ctx)[0])


def _extracted(attributes: dict) -> StageOutput:
    return StageOutput(
        values={
            "attributes": attributes,
            "generation_prompt": generation_prompt(attributes),
            "clip_prompt": clip_prompt(attributes),
        }
    )


def render_batch(articles: list[Article], ctx: StageContext) -> list[StageOutput | Exception]:
    """Generation prompts → one image per article's current attempt, saved to disk.

    The articles go through the renderer ``ctx.images_per_call`` at a time (FLUX at 1024² is
    compute-bound at one image per call), and each image is encoded and written on a
    background thread while the next one renders, so PNG encoding stays off the GPU's path.

    Args:
        articles: the articles, each claimed for this stage.
        ctx: the stage's context.

    Returns:
        One item per article, in order: its output, or what stops it alone: the renderer's
        error for the articles of a call that failed (CUDA out of memory, say), or the
        :class:`TransientStageError` of an image that could not be written.
    """
    seeds = [render_seed(article.key, article.render_attempt) for article in articles]
    step = max(1, ctx.images_per_call)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="farm-png") as writer:
        done: list[Future | Exception] = []
        for start in range(0, len(articles), step):
            chunk, chunk_seeds = articles[start : start + step], seeds[start : start + step]
            try:
                result = ctx.runtime([article.generation_prompt for article in chunk], chunk_seeds)
            except (RuntimeError, ValueError) as error:
                # The renderer's own errors (CUDA out of memory, an input it refuses) stay with
                # this call's articles; anything else, a time limit say, ends the batch.
                done += [error] * len(chunk)
                continue
            seconds = result.seconds / len(chunk)
            done += [
                writer.submit(_saved, article, image, seed, seconds, ctx)
                for article, image, seed in zip(chunk, result.images, chunk_seeds, strict=True)
            ]
        return [item.result() if isinstance(item, Future) else item for item in done]


def render(article: Article, ctx: StageContext) -> StageOutput:
    """Generation prompt → one image for the article's current attempt, saved to disk."""
    return _single(render_batch([article], ctx)[0])


def _saved(article: Article, image, seed: int, seconds: float, ctx: StageContext):
    attempt = article.render_attempt
    path = outputs.attempt_image_path(ctx.output_dir, article.batch_id, article.file_stem, attempt)
    try:
        outputs.save_png(image, path)
        if ctx.images is not None:
            ctx.images.keep(path, image)
    except OSError as error:
        failure = TransientStageError(f"cannot write image {path}: {error.strerror or error}")
        failure.__cause__ = error
        return failure
    profile = ctx.profile
    return StageOutput(
        render={
            "attempt": attempt,
            "seed": seed,
            "model_id": profile.renderer,
            "lora": profile.lora,
            "width": profile.width,
            "height": profile.height,
            "steps": profile.steps,
            "image_path": str(path),
            "seconds": seconds,
            "worker": ctx.worker,
        }
    )


def score_batch(articles: list[Article], ctx: StageContext) -> list[StageOutput | Exception]:
    """Current attempts' images vs CLIP prompts → scores, in one runtime call; publishes.

    Below the threshold (the batch's, else the farm's) an article is rendered again with the
    next attempt's seed, up to ``max_attempts``; after that it needs review, its best image kept.

    Args:
        articles: the articles, each claimed for this stage.
        ctx: the stage's context.

    Returns:
        One item per article, in order: its output, or the error that stops it alone
        (:class:`InvalidArticle` without an image, :class:`TransientStageError` when its
        outputs cannot be written).
    """
    currents = [_current_render(article) for article in articles]
    ready = [(a, c) for a, c in zip(articles, currents, strict=True) if isinstance(c, Render)]
    images = [_picture(Path(current.image_path), ctx) for _, current in ready]
    prompts = [article.clip_prompt for article, _ in ready]
    values = iter(ctx.runtime(images, prompts).scores if ready else [])
    results = []
    for article, current in zip(articles, currents, strict=True):
        if not isinstance(current, Render):
            results.append(current)
            continue
        try:
            results.append(_scored(article, current, float(next(values)), ctx))
        except TransientStageError as error:
            results.append(error)
    return results


def score(article: Article, ctx: StageContext) -> StageOutput:
    """Current attempt's image vs CLIP prompt → score; publishes the best image and its JSON."""
    return _single(score_batch([article], ctx)[0])


def _single(output: StageOutput | Exception) -> StageOutput:
    if isinstance(output, Exception):
        raise output
    return output


def _picture(path: Path, ctx: StageContext) -> Image.Image:
    return ctx.images.load(path) if ctx.images is not None else read_rgb(path)


def _current_render(article: Article) -> Render | InvalidArticle:
    current = next((r for r in article.renders if r.attempt == article.render_attempt), None)
    if current is None or not Path(current.image_path).is_file():
        return InvalidArticle(f"render attempt {article.render_attempt} has no image on disk")
    return current


def _scored(article: Article, current: Render, value: float, ctx: StageContext) -> StageOutput:
    scored = [
        (r.clip_score, r)
        for r in article.renders
        if r.clip_score is not None and article.attempt_base <= r.attempt != current.attempt
    ]
    scored.append((value, current))
    best_score, best = max(scored, key=lambda pair: pair[0])
    final = _publish(article, ctx, best, best_score)
    output = StageOutput(
        values={"clip_score": best_score, "image_path": str(final)},
        render={"attempt": current.attempt, "clip_score": value},
    )
    threshold = article.batch.min_clip_score if article.batch else None
    threshold = ctx.min_clip_score if threshold is None else threshold
    if threshold is not None and value < threshold:
        if article.render_attempt - article.attempt_base + 1 < ctx.max_attempts:
            output.values["render_attempt"] = article.render_attempt + 1
            output.status = ArticleStatus.extracted
            output.then = "render"
        else:
            output.status = ArticleStatus.needs_review
    return output


def _publish(article: Article, ctx: StageContext, best, best_score: float) -> Path:
    folder = outputs.batch_dir(ctx.output_dir, article.batch_id)
    image_path = folder / f"{article.file_stem}.png"
    try:
        outputs.publish_file(Path(best.image_path), image_path)
        record = _record(article, ctx, best, best_score, image_path)
        outputs.write_json(folder / f"{article.file_stem}.json", record)
    except OSError as error:
        raise TransientStageError(
            f"cannot write outputs in {folder}: {error.strerror or error}"
        ) from error
    return image_path


def _record(article: Article, ctx: StageContext, best, best_score: float, image_path: Path) -> dict:
    profile = ctx.profile
    return {
        "sample_id": article.key,
        "original_description": article.source_text,
        "generation_prompt": article.generation_prompt,
        "clip_prompt": article.clip_prompt,
        "clip_score": best_score,
        "image_path": str(image_path),
        "translation": article.translation,
        "attributes": article.attributes,
        "seed": best.seed,
        "attempt": best.attempt,
        "source": {
            "file": article.source_file,
            "sheet": article.source_sheet,
            "row": article.source_row,
        },
        "models": {
            "profile": profile.name,
            "translator": profile.translator,
            "extractor": profile.extractor,
            "renderer": best.model_id,
            "lora": best.lora,
            "scorer": profile.scorer,
        },
    }
