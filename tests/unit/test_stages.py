"""The plain stage functions with the tiny models, no Celery and no database."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from db.models import Article, Render
from tasks import outputs, stages
from tasks.exceptions import InvalidArticle, TransientStageError
from tasks.handoff import RecentImages
from workers.extractor import Attributes
from workers.loader import load_runtimes


@pytest.fixture(scope="module")
def runtimes(tiny_profile):
    return load_runtimes(("translate", "extract", "render", "score"), tiny_profile, "cpu")


def make_article(**columns) -> Article:
    values = {
        "id": 1,
        "batch_id": "b1",
        "key": "SKU-1",
        "file_stem": "SKU-1",
        "source_file": "c.csv",
        "source_sheet": "csv",
        "source_row": 2,
        "source_text": "Damen-Bluse\nLeichte Bluse aus Viskose.",
        "render_attempt": 1,
        "attempt_base": 1,
    } | columns
    article = Article(**values)
    article.renders = []
    return article


def context(runtimes, stage, tmp_path):
    return stages.StageContext(
        runtime=getattr(runtimes, stage),
        profile=runtimes.profile,
        output_dir=tmp_path,
        worker="test@host",
    )


def extracted_article(runtimes, tmp_path, **columns) -> Article:
    article = make_article(**columns)
    translated = stages.translate(article, context(runtimes, "translate", tmp_path))
    article.translation = translated.values["translation"]
    for name, value in stages.extract(
        article, context(runtimes, "extract", tmp_path)
    ).values.items():
        setattr(article, name, value)
    return article


def test_render_seeds_depend_only_on_key_and_attempt():
    assert stages.render_seed("SKU-1", 1) == stages.render_seed("SKU-1", 1)
    assert stages.render_seed("SKU-1", 1) != stages.render_seed("SKU-1", 2)
    assert stages.render_seed("SKU-1", 1) != stages.render_seed("SKU-2", 1)
    assert 0 <= stages.render_seed("x", 7) < 2**63


def test_the_same_article_and_attempt_render_identical_bytes_and_another_attempt_does_not(
    runtimes, tmp_path
):
    article = extracted_article(runtimes, tmp_path)
    ctx = context(runtimes, "render", tmp_path)
    first = stages.render(article, ctx).render
    first_bytes = Path(first["image_path"]).read_bytes()
    again = stages.render(article, ctx).render
    assert again["seed"] == first["seed"]
    assert Path(again["image_path"]).read_bytes() == first_bytes

    article.render_attempt = 2
    second = stages.render(article, ctx).render
    assert second["seed"] != first["seed"]
    assert second["image_path"] != first["image_path"]
    assert Path(second["image_path"]).read_bytes() != first_bytes


def test_score_publishes_the_best_attempt_with_its_json(runtimes, tmp_path):
    article = extracted_article(runtimes, tmp_path)
    ctx = context(runtimes, "render", tmp_path)
    rendered = stages.render(article, ctx).render
    article.renders = [Render(**rendered)]

    scored = stages.score(article, context(runtimes, "score", tmp_path))

    image = runtimes.score  # compute the expected score with the runtime itself
    from PIL import Image

    with Image.open(rendered["image_path"]) as picture:
        expected = image([picture.convert("RGB")], [article.clip_prompt]).scores[0]
    assert scored.render == {"attempt": 1, "clip_score": pytest.approx(expected)}
    assert scored.values["clip_score"] == pytest.approx(expected)
    record = json.loads((tmp_path / "b1" / "SKU-1.json").read_text())
    assert record["sample_id"] == "SKU-1"
    assert record["seed"] == rendered["seed"]
    assert record["clip_prompt"] == article.clip_prompt
    assert record["models"]["renderer"] == runtimes.profile.renderer
    assert (tmp_path / "b1" / "SKU-1.png").read_bytes() == Path(rendered["image_path"]).read_bytes()


def test_the_score_stage_takes_the_image_its_process_just_rendered_from_memory(
    runtimes, tmp_path, monkeypatch
):
    images = RecentImages()
    article = extracted_article(runtimes, tmp_path)
    render_ctx = context(runtimes, "render", tmp_path)
    rendered = stages.render(article, replace(render_ctx, images=images)).render
    article.renders = [Render(**rendered)]
    from_disk = stages.score(article, context(runtimes, "score", tmp_path))

    def no_decoding(*args, **kwargs):
        raise AssertionError("the image was decoded from disk again")

    monkeypatch.setattr(stages.Image, "open", no_decoding)
    score_ctx = replace(context(runtimes, "score", tmp_path), images=images)
    from_memory = stages.score(article, score_ctx)

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
    ctx = context(runtimes, "render", tmp_path)
    first = stages.render(article, ctx).render
    article.render_attempt = 2
    second = stages.render(article, ctx).render
    article.renders = [Render(**first, clip_score=1e9), Render(**second)]

    scored = stages.score(article, context(runtimes, "score", tmp_path))

    assert scored.values["clip_score"] == 1e9
    assert (tmp_path / "b1" / "SKU-1.png").read_bytes() == Path(first["image_path"]).read_bytes()


def test_score_without_an_image_on_disk_is_an_invalid_article(runtimes, tmp_path):
    article = extracted_article(runtimes, tmp_path)
    article.renders = [
        Render(attempt=1, seed=1, image_path=str(tmp_path / "missing.png"), clip_score=None)
    ]
    with pytest.raises(InvalidArticle, match="no image on disk"):
        stages.score(article, context(runtimes, "score", tmp_path))


def test_an_unwritable_output_folder_is_a_transient_error(runtimes, tmp_path):
    article = extracted_article(runtimes, tmp_path)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be")
    ctx = stages.StageContext(runtimes.render, runtimes.profile, blocked, "test@host")
    with pytest.raises(TransientStageError, match="cannot write image"):
        stages.render(article, ctx)


@pytest.mark.parametrize("key", ["../../etc/passwd", "a/b", "Jacke: rot?", ".hidden", "x" * 300])
def test_unsafe_keys_become_safe_distinct_file_names(key):
    stem = outputs.safe_stem(key)
    assert "/" not in stem and not stem.startswith(".")
    assert len(stem) <= 100
    assert stem != outputs.safe_stem(key + "!")


def test_safe_keys_are_kept_as_they_are():
    assert outputs.safe_stem("SKU-123_a.b") == "SKU-123_a.b"


def test_clip_statistics_match_the_python_statistics_module():
    import statistics

    scores = [21.5, 30.25, 25.0, 19.0]
    stats = outputs.clip_statistics(scores)
    assert stats["Total Samples"] == 4
    assert stats["Mean"] == statistics.fmean(scores)
    assert stats["Median"] == statistics.median(scores)
    assert stats["Min"] == 19.0 and stats["Max"] == 30.25


def test_tiny_runtimes_load_on_the_cpu(runtimes):
    assert runtimes.render is not None and runtimes.score is not None
    assert torch.get_default_dtype() == torch.float32
    assert SimpleNamespace(**vars(runtimes.profile)).width == 64


def test_a_batch_of_articles_translates_as_each_would_alone(runtimes, tmp_path):
    ctx = context(runtimes, "translate", tmp_path)
    articles = [
        make_article(id=i, source_text=text)
        for i, text in enumerate(
            ["Rock", "Damen-Bluse\nLeichte Bluse aus Viskose.", "Schwarze Jeans mit Gürtel"]
        )
    ]
    together = [output.values for output in stages.translate_batch(articles, ctx)]
    alone = [stages.translate(article, ctx).values for article in articles]
    assert together == alone and len(together) == 3


def test_a_batch_extraction_fails_only_the_article_without_text(runtimes, tmp_path):
    ctx = context(runtimes, "extract", tmp_path)
    articles = [
        make_article(id=1, translation="Light viscose blouse"),
        make_article(id=2, translation="  "),
        make_article(id=3, translation="Black jeans with a belt"),
    ]
    first, empty, third = stages.extract_batch(articles, ctx)
    assert isinstance(empty, InvalidArticle)
    for output in (first, third):
        assert set(output.values) == {"attributes", "generation_prompt", "clip_prompt"}
        Attributes.model_validate(output.values["attributes"])


def test_a_batch_render_gives_each_article_its_own_seed_and_file_and_scores_them_together(
    runtimes, tmp_path
):
    articles = [extracted_article(runtimes, tmp_path, id=n, key=f"K-{n}", file_stem=f"K-{n}")
                for n in (1, 2, 3)]  # fmt: skip
    rendered = stages.render_batch(articles, context(runtimes, "render", tmp_path))
    for article, output in zip(articles, rendered, strict=True):
        assert output.render["seed"] == stages.render_seed(article.key, 1)
        assert Path(output.render["image_path"]).name.startswith(f"{article.file_stem}.")
        article.renders = [Render(**output.render)]
    articles[1].renders[0].image_path = str(tmp_path / "missing.png")

    first, missing, third = stages.score_batch(articles, context(runtimes, "score", tmp_path))

    assert isinstance(missing, InvalidArticle)
    for article, output in ((articles[0], first), (articles[2], third)):
        with Image.open(article.renders[0].image_path) as picture:
            alone = runtimes.score([picture.convert("RGB")], [article.clip_prompt]).scores[0]
        assert output.render["clip_score"] == pytest.approx(alone, abs=1e-3)
        assert (tmp_path / "b1" / f"{article.file_stem}.json").is_file()


class CountingRenderer:
    """The tiny renderer, counting its calls and failing the calls numbered in ``fail_on``."""

    def __init__(self, renderer, fail_on: tuple[int, ...] = ()):
        self.renderer, self.fail_on, self.calls = renderer, fail_on, []

    def __call__(self, prompts, seeds):
        self.calls.append(len(prompts))
        if len(self.calls) in self.fail_on:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return self.renderer(prompts, seeds)


def test_a_render_batch_streams_one_image_per_call_and_writes_what_one_big_call_writes(
    runtimes, tmp_path
):
    articles = [extracted_article(runtimes, tmp_path, id=n, key=f"K-{n}", file_stem=f"K-{n}")
                for n in (1, 2, 3)]  # fmt: skip
    pictures = {}
    for per_call in (1, 3):
        renderer = CountingRenderer(runtimes.render)
        ctx = stages.StageContext(
            renderer, runtimes.profile, tmp_path / f"per-call-{per_call}", "test@host",
            images_per_call=per_call,
        )  # fmt: skip
        outputs_ = stages.render_batch(articles, ctx)
        assert renderer.calls == ([1, 1, 1] if per_call == 1 else [3])
        pictures[per_call] = []
        for output in outputs_:
            with Image.open(output.render["image_path"]) as picture:
                pictures[per_call].append(np.asarray(picture.convert("RGB"), dtype=int))
    for streamed, together in zip(pictures[1], pictures[3], strict=True):
        # As in test_renderer: CPU BLAS may round a rare pixel one level apart in a batch.
        difference = np.abs(streamed - together)
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_a_renderer_call_that_fails_mid_batch_fails_only_its_own_article(runtimes, tmp_path):
    articles = [extracted_article(runtimes, tmp_path, id=n, key=f"K-{n}", file_stem=f"K-{n}")
                for n in (1, 2, 3)]  # fmt: skip
    renderer = CountingRenderer(runtimes.render, fail_on=(2,))
    ctx = stages.StageContext(renderer, runtimes.profile, tmp_path, "test@host")
    first, failed, third = stages.render_batch(articles, ctx)
    assert isinstance(failed, torch.cuda.OutOfMemoryError) and renderer.calls == [1, 1, 1]
    attempts = tmp_path / "b1" / "attempts"
    assert sorted(path.name for path in attempts.iterdir()) == ["K-1.1.png", "K-3.1.png"]
    for output in (first, third):
        with Image.open(output.render["image_path"]) as picture:
            assert picture.size == (runtimes.profile.width, runtimes.profile.height)


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


def test_an_error_that_is_not_the_renderers_own_ends_the_batch(runtimes, tmp_path):
    class OutOfTime(Exception):  # like Celery's soft time limit, raised into the call
        pass

    def renderer(prompts, seeds):
        raise OutOfTime()

    articles = [extracted_article(runtimes, tmp_path, id=n, key=f"K-{n}", file_stem=f"K-{n}")
                for n in (1, 2)]  # fmt: skip
    ctx = stages.StageContext(renderer, runtimes.profile, tmp_path, "test@host")
    with pytest.raises(OutOfTime):
        stages.render_batch(articles, ctx)
