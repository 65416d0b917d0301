"""The plain stage functions with the tiny models, no Celery, no executor and no database."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from db.models import ArticleStatus
from tasks import handoff, outputs, stages
from tasks.exceptions import InvalidArticle, TransientStageError
from tasks.handoff import RecentImages, read_rgb
from workers.extractor import Attributes
from workers.loader import load_runtimes


@pytest.fixture(scope="module")
def runtimes(tiny_profile):
    return load_runtimes(("translate", "extract", "render", "score"), tiny_profile, "cpu")


def make_article(**columns) -> stages.ArticleInput:
    values = {
        "id": 1,
        "batch_id": "b1",
        "key": "SKU-1",
        "file_stem": "SKU-1",
        "source_file": "c.csv",
        "source_sheet": "csv",
        "source_row": 2,
        "source_text": "Damen-Bluse\nLeichte Bluse aus Viskose.",
    } | columns
    return stages.ArticleInput(**values)


def context(runtimes, output_dir: Path, **fields) -> stages.StageContext:
    return stages.StageContext(
        profile=runtimes.profile, output_dir=output_dir, worker="test@host", **fields
    )


def run_stage(runtimes, name: str, article, ctx) -> stages.StageOutput:
    """One article through one stage as its task runs it: prepare, one model call, finish."""
    prepare = getattr(stages, f"prepare_{name}")
    call = getattr(stages, f"call_{name}")
    finish = getattr(stages, f"finish_{name}")
    (output,) = call(getattr(runtimes, name), [prepare(article, ctx)])
    return finish(article, output, ctx)


def extracted_article(runtimes, tmp_path, **columns) -> stages.ArticleInput:
    article = make_article(**columns)
    ctx = context(runtimes, tmp_path)
    translated = run_stage(runtimes, "translate", article, ctx)
    article = replace(article, **translated.values)
    extracted = run_stage(runtimes, "extract", article, ctx)
    return replace(article, **extracted.values)


def as_render(row: dict, clip_score: float | None = None) -> stages.RenderInput:
    """The render row a finished render stage describes, as the score stage reads it back."""
    return stages.RenderInput(
        attempt=row["attempt"],
        seed=row["seed"],
        image_path=row["image_path"],
        model_id=row["model_id"],
        lora=row["lora"],
        clip_score=clip_score,
    )


def rendered_article(runtimes, tmp_path, ctx=None, **columns) -> stages.ArticleInput:
    """An extracted article with its current attempt rendered (and not yet scored)."""
    article = extracted_article(runtimes, tmp_path, **columns)
    row = run_stage(runtimes, "render", article, ctx or context(runtimes, tmp_path)).render
    return replace(article, renders=(as_render(row),))


def score_alone(runtimes, image_path: str, text: str) -> float:
    return runtimes.score([read_rgb(Path(image_path))], [text]).scores[0]


def test_render_seeds_depend_only_on_key_and_attempt():
    assert stages.render_seed("SKU-1", 1) == stages.render_seed("SKU-1", 1)
    assert stages.render_seed("SKU-1", 1) != stages.render_seed("SKU-1", 2)
    assert stages.render_seed("SKU-1", 1) != stages.render_seed("SKU-2", 1)
    assert 0 <= stages.render_seed("x", 7) < 2**63


def test_an_article_input_is_built_from_its_row_and_its_render_rows():
    render = {
        "attempt": 1,
        "seed": 5,
        "image_path": "a.png",
        "model_id": "m",
        "lora": None,
        "clip_score": 20.5,
    }
    row = {"id": 3, "key": "K", "batch_id": "b", "file_stem": "K", "source_text": "Rock"}
    article = stages.ArticleInput.from_row(row, (render,))
    assert article.renders == (stages.RenderInput(**render),)
    assert (article.id, article.key, article.render_attempt) == (3, "K", 1)


def test_the_same_article_and_attempt_render_identical_bytes_and_another_attempt_does_not(
    runtimes, tmp_path
):
    article = extracted_article(runtimes, tmp_path)
    ctx = context(runtimes, tmp_path)
    first = run_stage(runtimes, "render", article, ctx).render
    first_bytes = Path(first["image_path"]).read_bytes()
    again = run_stage(runtimes, "render", article, ctx).render
    assert again["seed"] == first["seed"] == stages.render_seed(article.key, 1)
    assert Path(again["image_path"]).read_bytes() == first_bytes

    second = run_stage(runtimes, "render", replace(article, render_attempt=2), ctx).render
    assert second["attempt"] == 2 and second["seed"] != first["seed"]
    assert second["image_path"] != first["image_path"]
    assert Path(second["image_path"]).read_bytes() != first_bytes


def test_a_render_row_describes_the_profile_worker_and_image(runtimes, tmp_path):
    article = extracted_article(runtimes, tmp_path)
    row = run_stage(runtimes, "render", article, context(runtimes, tmp_path)).render
    profile = runtimes.profile
    assert row["model_id"] == profile.renderer and row["lora"] == profile.lora
    assert (row["width"], row["height"], row["steps"]) == (
        profile.width,
        profile.height,
        profile.steps,
    )
    assert row["worker"] == "test@host" and row["seconds"] >= 0
    expected = outputs.attempt_image_path(tmp_path, "b1", "SKU-1", 1)
    assert row["image_path"] == str(expected)
    with Image.open(expected) as picture:
        assert picture.size == (profile.width, profile.height)


def test_score_names_the_best_attempt_and_writes_nothing_before_the_store(runtimes, tmp_path):
    article = rendered_article(runtimes, tmp_path)
    (rendered,) = article.renders

    scored = run_stage(runtimes, "score", article, context(runtimes, tmp_path))

    expected = score_alone(runtimes, rendered.image_path, article.clip_prompt)
    assert scored.render == {"attempt": 1, "clip_score": pytest.approx(expected)}
    assert scored.values["clip_score"] == pytest.approx(expected)
    assert scored.values["best_attempt"] == 1
    assert scored.values["image_path"] == str(tmp_path / "b1" / "SKU-1.png")
    assert scored.status == ArticleStatus.done and scored.then is None and scored.publish
    # Published from the stored row once the store took it (tasks.publish), not here.
    assert not (tmp_path / "b1" / "SKU-1.png").exists()
    assert not (tmp_path / "b1" / "SKU-1.json").exists()


def test_the_score_stage_takes_the_image_its_process_just_rendered_from_memory(
    runtimes, tmp_path, monkeypatch
):
    images = RecentImages()
    article = rendered_article(runtimes, tmp_path, context(runtimes, tmp_path, images=images))
    from_disk = run_stage(runtimes, "score", article, context(runtimes, tmp_path))

    def no_decoding(*args, **kwargs):
        raise AssertionError("the image was decoded from disk again")

    monkeypatch.setattr(handoff.Image, "open", no_decoding)
    from_memory = run_stage(runtimes, "score", article, context(runtimes, tmp_path, images=images))

    assert images.hits == 1
    assert from_memory.values["clip_score"] == from_disk.values["clip_score"]


def test_a_kept_image_whose_file_changed_on_disk_is_read_from_disk(tmp_path):
    images = RecentImages(capacity=2)
    path = tmp_path / "a.png"
    kept = Image.new("RGB", (4, 4), (10, 20, 30))
    outputs.save_png(kept, path)
    images.keep(path, kept)
    assert images.load(path) is kept

    newer = Image.new("RGB", (4, 5), (200, 0, 0))
    outputs.save_png(newer, path)  # another copy of the task wrote it since

    assert images.load(path).getpixel((0, 0)) == (200, 0, 0)
    assert images.hits == 1
    images.keep(path, newer)
    for name in ("b.png", "c.png"):  # the oldest goes once more than two are kept
        outputs.save_png(kept, tmp_path / name)
        images.keep(tmp_path / name, kept)
    assert images.load(tmp_path / "c.png") is kept
    assert images.load(path) is not newer and images.hits == 2


def test_score_keeps_an_earlier_better_attempt_as_the_article_image(runtimes, tmp_path):
    article = extracted_article(runtimes, tmp_path)
    ctx = context(runtimes, tmp_path)
    first = run_stage(runtimes, "render", article, ctx).render
    article = replace(article, render_attempt=2)
    second = run_stage(runtimes, "render", article, ctx).render
    article = replace(article, renders=(as_render(first, clip_score=1e9), as_render(second)))

    scored = run_stage(runtimes, "score", article, ctx)

    assert scored.values["clip_score"] == 1e9
    expected = score_alone(runtimes, second["image_path"], article.clip_prompt)
    assert scored.render == {"attempt": 2, "clip_score": pytest.approx(expected)}
    assert scored.values["best_attempt"] == 1


def test_score_ignores_attempts_from_before_the_articles_attempt_base(runtimes, tmp_path):
    article = extracted_article(runtimes, tmp_path, render_attempt=2, attempt_base=2)
    ctx = context(runtimes, tmp_path)
    old = run_stage(runtimes, "render", replace(article, render_attempt=1), ctx).render
    current = run_stage(runtimes, "render", article, ctx).render
    article = replace(article, renders=(as_render(old, clip_score=1e9), as_render(current)))

    scored = run_stage(runtimes, "score", article, ctx)

    expected = score_alone(runtimes, current["image_path"], article.clip_prompt)
    assert scored.values["clip_score"] == pytest.approx(expected)
    assert scored.values["best_attempt"] == 2


def test_score_without_an_image_on_disk_is_an_invalid_article(runtimes, tmp_path):
    article = extracted_article(runtimes, tmp_path)
    missing = stages.RenderInput(1, 1, str(tmp_path / "missing.png"), "m", None, None)
    article = replace(article, renders=(missing,))
    with pytest.raises(InvalidArticle, match="no image on disk"):
        stages.prepare_score(article, context(runtimes, tmp_path))
    with pytest.raises(InvalidArticle, match="no image on disk"):
        stages.prepare_score(replace(article, renders=()), context(runtimes, tmp_path))


def test_an_unwritable_output_folder_is_a_transient_error_for_render(runtimes, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be")
    article = extracted_article(runtimes, tmp_path)
    with pytest.raises(TransientStageError, match="cannot write image"):
        run_stage(runtimes, "render", article, context(runtimes, blocked))


def test_a_score_below_the_threshold_renders_the_next_attempt_then_needs_review(runtimes, tmp_path):
    ctx = context(runtimes, tmp_path, min_clip_score=1e9, max_attempts=2)
    first = rendered_article(runtimes, tmp_path)

    again = run_stage(runtimes, "score", first, ctx)

    assert again.then == "render" and again.status == ArticleStatus.extracted
    assert again.values["render_attempt"] == 2
    assert again.publish and again.values["best_attempt"] == 1  # published meanwhile

    second = replace(first, render_attempt=2)
    row = run_stage(runtimes, "render", second, ctx).render
    scored_first = replace(first.renders[0], clip_score=again.render["clip_score"])
    second = replace(second, renders=(scored_first, as_render(row)))

    last = run_stage(runtimes, "score", second, ctx)

    assert last.status == ArticleStatus.needs_review and last.then is None
    assert "render_attempt" not in last.values
    best = max(again.render["clip_score"], last.render["clip_score"])
    assert last.values["clip_score"] == best


def test_the_batchs_own_threshold_wins_over_the_farms(runtimes, tmp_path):
    article = rendered_article(runtimes, tmp_path)
    farm_too_high = context(runtimes, tmp_path, min_clip_score=1e9, max_attempts=3)
    assert run_stage(runtimes, "score", article, farm_too_high).then == "render"

    passes = run_stage(runtimes, "score", replace(article, min_clip_score=-1e9), farm_too_high)
    assert passes.status == ArticleStatus.done and passes.then is None

    batch_too_high = context(runtimes, tmp_path, min_clip_score=-1e9, max_attempts=3)
    fails = run_stage(runtimes, "score", replace(article, min_clip_score=1e9), batch_too_high)
    assert fails.then == "render"


def test_a_batch_of_articles_translates_as_each_would_alone(runtimes, tmp_path):
    ctx = context(runtimes, tmp_path)
    articles = [
        make_article(id=i, source_text=text)
        for i, text in enumerate(
            ["Rock", "Damen-Bluse\nLeichte Bluse aus Viskose.", "Schwarze Jeans mit Gürtel"]
        )
    ]
    inputs = [stages.prepare_translate(article, ctx) for article in articles]
    together = stages.call_translate(runtimes.translate, inputs)
    alone = [stages.call_translate(runtimes.translate, [text])[0] for text in inputs]
    assert together == alone and len(together) == 3
    finished = [stages.finish_translate(a, t, ctx) for a, t in zip(articles, together, strict=True)]
    assert [output.values for output in finished] == [{"translation": t} for t in alone]


def test_an_empty_translation_fails_only_its_own_article_of_an_extraction_batch(runtimes, tmp_path):
    ctx = context(runtimes, tmp_path)
    articles = [
        make_article(id=1, translation="Light viscose blouse"),
        make_article(id=2, translation="  "),
        make_article(id=3, translation="Black jeans with a belt"),
        make_article(id=4, translation=None),
    ]
    inputs, invalid = [], []
    for article in articles:
        try:
            inputs.append((article, stages.prepare_extract(article, ctx)))
        except InvalidArticle:
            invalid.append(article.id)
    assert invalid == [2, 4]

    attributes = stages.call_extract(runtimes.extract, [text for _, text in inputs])
    assert len(attributes) == 2
    for (article, _), found in zip(inputs, attributes, strict=True):
        output = stages.finish_extract(article, found, ctx)
        assert set(output.values) == {"attributes", "generation_prompt", "clip_prompt"}
        Attributes.model_validate(output.values["attributes"])


@pytest.mark.parametrize(
    ("best", "attempt", "expected"),
    [
        (25.0, 1, ArticleStatus.done),  # at or above: done, whatever the newest scored
        (24.0, 3, ArticleStatus.done),
        (20.0, 1, ArticleStatus.extracted),  # below, attempts left: render again
        (20.0, 3, ArticleStatus.needs_review),  # below, none left
    ],
)
def test_one_verdict_judges_the_best_score_against_the_threshold(best, attempt, expected):
    assert stages.verdict(best, 24.0, attempt, 1, 3) == expected
    assert stages.verdict(best, None, attempt, 1, 3) == ArticleStatus.done


def test_a_batch_of_scores_gives_each_article_what_it_would_get_alone(runtimes, tmp_path):
    ctx = context(runtimes, tmp_path)
    articles = [
        rendered_article(runtimes, tmp_path, id=n, key=f"K-{n}", file_stem=f"K-{n}")
        for n in (1, 2, 3)
    ]
    inputs = [stages.prepare_score(article, ctx) for article in articles]

    together = stages.call_score(runtimes.score, inputs)

    for article, value in zip(articles, together, strict=True):
        alone = score_alone(runtimes, article.renders[0].image_path, article.clip_prompt)
        assert value == pytest.approx(alone, abs=1e-3)
        assert stages.finish_score(article, value, ctx).values["clip_score"] == value


def test_tiny_runtimes_load_on_the_cpu(runtimes):
    assert runtimes.render is not None and runtimes.score is not None
    assert torch.get_default_dtype() == torch.float32
    assert runtimes.profile.width == 64


@pytest.mark.parametrize("key", ["../../etc/passwd", "a/b", "Jacke: rot?", ".hidden", "x" * 300])
def test_unsafe_keys_become_safe_distinct_file_names(key):
    stem = outputs.safe_stem(key)
    assert "/" not in stem and not stem.startswith(".")
    assert len(stem) <= 100
    assert stem != outputs.safe_stem(key + "!")


def test_safe_keys_are_kept_as_they_are():
    assert outputs.safe_stem("SKU-123_a.b") == "SKU-123_a.b"


def test_clip_statistics_match_the_python_statistics_module():
    scores = [21.5, 30.25, 25.0, 19.0]
    stats = outputs.clip_statistics(scores)
    assert stats["Total Samples"] == 4
    assert stats["Mean"] == statistics.fmean(scores)
    assert stats["Median"] == statistics.median(scores)
    assert stats["Min"] == 19.0 and stats["Max"] == 30.25


def test_publishing_links_the_attempt_image_and_replaces_an_older_one(tmp_path):
    first, second = tmp_path / "a.1.png", tmp_path / "a.2.png"
    first.write_bytes(b"first attempt")
    second.write_bytes(b"second attempt")
    target = tmp_path / "out" / "a.png"
    outputs.publish_file(first, target)
    assert target.stat().st_ino == first.stat().st_ino
    outputs.publish_file(second, target)
    assert target.read_bytes() == b"second attempt" and first.read_bytes() == b"first attempt"
    outputs.publish_file(second, target)  # the same best attempt again
    assert target.stat().st_ino == second.stat().st_ino
    assert sorted(path.name for path in target.parent.iterdir()) == ["a.png"]


def test_publishing_copies_where_the_file_system_has_no_hard_links(tmp_path, monkeypatch):
    source = tmp_path / "a.1.png"
    source.write_bytes(b"pixels")

    def no_links(*_args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(outputs.os, "link", no_links)
    target = tmp_path / "out" / "a.png"
    outputs.publish_file(source, target)
    assert target.read_bytes() == b"pixels" and target.stat().st_ino != source.stat().st_ino
    assert sorted(path.name for path in target.parent.iterdir()) == ["a.png"]


def test_the_views_of_a_row_in_one_batch_reach_the_text_models_once(runtimes, tmp_path):
    seen: list[list[str]] = []

    def translator(texts):
        seen.append(list(texts))
        return runtimes.translate(texts)

    def extractor(texts):
        seen.append(list(texts))
        return runtimes.extract(texts)

    rock, bluse = "Roter Rock aus Wolle", "Bluse aus Seide"
    english = stages.call_translate(translator, [rock, bluse, rock, rock])
    assert seen == [[rock, bluse]]
    assert english[0] == english[2] == english[3] == stages.call_translate(translator, [rock])[0]
    found = stages.call_extract(extractor, [english[0], english[1], english[0]])
    assert seen[-1] == [english[0], english[1]]
    assert found[0] == found[2] and found[0] is not found[2]


def test_each_stage_records_the_commits_of_the_models_it_loaded_beside_its_result(
    runtimes, tmp_path
):
    commits = {
        "translator": {"repo": "org/translator", "commit": "1" * 40},
        "extractor": {"repo": "org/extractor", "commit": "2" * 40},
        "renderer": {"repo": "org/renderer", "commit": "3" * 40},
        "lora": {"repo": "/models/lora", "commit": "local"},
        "scorer": {"repo": "org/scorer", "commit": "5" * 40},
    }
    ctx = context(runtimes, tmp_path, model_commits=commits)
    article = make_article()
    for name in ("translate", "extract"):
        article = replace(article, **run_stage(runtimes, name, article, ctx).values)
    assert article.model_commits == {role: commits[role] for role in ("translator", "extractor")}

    rendered = run_stage(runtimes, "render", article, ctx).render
    assert rendered["model_commits"] == {role: commits[role] for role in ("renderer", "lora")}
    columns = ("attempt", "seed", "image_path", "model_id", "lora", "model_commits")
    render = stages.RenderInput(**{key: rendered[key] for key in columns}, clip_score=None)
    scored = run_stage(runtimes, "score", replace(article, renders=(render,)), ctx).render
    assert scored["model_commits"] == {
        role: commits[role] for role in ("renderer", "lora", "scorer")
    }
