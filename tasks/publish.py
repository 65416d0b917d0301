"""Publishing an article: its stored best attempt's picture and JSON under its own name.

The score stage stores the best attempt first, under its lease; a stage that lost its lease
stores nothing and so publishes nothing. Then the picture is written from the *stored* row,
never from what the stage computed: two publishers that overlap (a late one and a newer
one) each check after writing that the attempt they wrote is still the stored best, and
write again when it is not, so the last file written is always the stored best. What a
crash or a full disk left unpublished, the reaper publishes (:func:`publish_pending`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine

from db import published
from tasks import outputs, storage
from tasks.storage import Place

logger = logging.getLogger("farm.publish")

# A best attempt stored this long ago and still unpublished: its own stage is not coming.
PUBLISH_GRACE_SECONDS = 30.0
# Publishers that overlap converge within a write or two; more means something else is wrong.
MAX_PASSES = 5


def publish(engine: Engine, article_id: int, output_dir: Path, profile) -> bool:
    """Write the article's stored best picture and JSON, until what is written is the best.

    Args:
        engine: the farm's database.
        article_id: the article.
        output_dir: the farm's output root.
        profile: the worker's :class:`workers.profiles.Profile` (the JSON's model names
            where a stage recorded none; the commits come from the stored rows).

    Returns:
        True once the stored best is published; False when the article has none.

    Raises:
        OSError: a file could not be written (the reaper tries again later).
    """
    for _ in range(MAX_PASSES):
        with engine.connect() as connection:
            rows = published.stored_best(connection, [article_id])
        if not rows:
            return False
        row = rows[0]
        write_published(row, output_dir, profile)
        if published.mark_published(engine, article_id, row["best_attempt"]):
            return True
    logger.warning("article %s: its best attempt kept changing while publishing", article_id)
    return False


def publish_pending(
    engine: Engine, output_dir: Path, profile, grace_seconds: float = PUBLISH_GRACE_SECONDS
) -> int:
    """Publish every article whose stored best differs from what was last published.

    Args:
        engine: the farm's database.
        output_dir: the farm's output root.
        profile: the worker's profile (model names for the JSON).
        grace_seconds: leave articles stored more recently alone: their stage publishes them.

    Returns:
        How many were published.
    """
    with engine.connect() as connection:
        rows = published.stored_best(connection, grace_seconds=grace_seconds)
    done = 0
    for row in rows:
        try:
            done += publish(engine, row["id"], output_dir, profile)
        except OSError as error:
            logger.warning("article %s: cannot publish yet (%s)", row["id"], error)
    if done:
        logger.warning("publisher: %d articles published again", done)
    return done


def write_published(row: dict, output_dir: Path | str, profile) -> Place:
    """Write one stored row's best picture and its JSON record, atomically each.

    Args:
        row: from :func:`db.published.stored_best`.
        output_dir: the farm's output root.
        profile: the worker's profile (model names for the JSON).

    Returns:
        The published picture's path.
    """
    image_path = outputs.published_image_path(
        output_dir, row["batch_id"], row["file_stem"], row["view"]
    )
    outputs.publish_file(storage.place(row["attempt_path"]), image_path)
    outputs.write_json(image_path.with_suffix(".json"), _record(row, profile, image_path))
    return image_path


def _record(row: dict, profile, image_path: Place) -> dict:
    return {
        "sample_id": row["key"],
        "view": row["view"],
        "original_description": row["source_text"],
        "generation_prompt": row["generation_prompt"],
        "clip_prompt": row["clip_prompt"],
        "clip_score": row["clip_score"],
        "image_path": str(image_path),
        "translation": row["translation"],
        "attributes": row["attributes"],
        "seed": row["seed"],
        "attempt": row["best_attempt"],
        "source": {
            "file": row["source_file"],
            "sheet": row["source_sheet"],
            "row": row["source_row"],
        },
        "models": _models(row, profile),
    }


def _models(row: dict, profile) -> dict:
    """Per model, ``{"repo", "commit"}`` as the worker of its stage recorded it.

    A row stored before commits were recorded names the repo (the publishing worker's, for
    the text models and the scorer) with ``commit`` None; ``lora`` is None without a LoRA.
    """
    text, image = row.get("model_commits") or {}, row.get("render_commits") or {}
    stored = {"translator": text, "extractor": text, "renderer": image, "lora": image,
              "scorer": image}  # fmt: skip
    fallback = {
        "translator": getattr(profile, "translator", None),
        "extractor": getattr(profile, "extractor", None),
        "renderer": row["model_id"],
        "lora": row["lora"],
        "scorer": getattr(profile, "scorer", None),
    }
    models = {"profile": getattr(profile, "name", None)}
    for role, repo in fallback.items():
        recorded = stored[role].get(role)
        models[role] = recorded or (None if repo is None else {"repo": repo, "commit": None})
    return models
