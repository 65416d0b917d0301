"""The CLIP scorer, run on a tiny random-weight CLIP model on the CPU."""

import dataclasses
import math
import os

import numpy as np
import PIL.Image
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # read when the Hugging Face libraries are first imported

from transformers import CLIPModel  # noqa: E402

from workers import devices, loader, tiny_image  # noqa: E402
from workers.profiles import DEFAULT  # noqa: E402
from workers.scorer import Scorer  # noqa: E402

CPU = torch.device("cpu")
TEXTS = ["a red linen dress", "blue denim jeans, 98% cotton", "black leather ankle boots (EU 38)"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-clip")
    tiny_image.build_tiny_clip(folder)
    return folder


@pytest.fixture(scope="module")
def scorer(clip_dir):
    return Scorer.from_pretrained(str(clip_dir), CPU)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    sizes = [(64, 64), (48, 80), (100, 36)]
    return [PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def test_scores_are_one_finite_float_per_pair(scorer, images):
    result = scorer(images, TEXTS)
    assert len(result.scores) == len(images)
    assert all(isinstance(score, float) and math.isfinite(score) for score in result.scores)
    assert result.seconds > 0


def test_scores_equal_the_diagonal_of_clip_logits_per_image(scorer, images):
    inputs = scorer.processor(text=TEXTS, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = scorer.model(**inputs).logits_per_image
    expected = [logits[i, i].item() for i in range(len(images))]
    assert scorer(images, TEXTS).scores == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_a_batch_scores_the_same_as_one_pair_at_a_time(scorer, images):
    batch = scorer(images, TEXTS).scores
    single = [scorer([image], [text]).scores[0] for image, text in zip(images, TEXTS, strict=True)]
    assert batch == pytest.approx(single, rel=1e-4, abs=1e-4)


def test_different_texts_give_different_scores(scorer, images):
    scores = scorer([images[0]] * 2, TEXTS[:2]).scores
    assert scores[0] != scores[1]


def test_texts_longer_than_77_tokens_are_truncated(scorer, images):
    long_text = " ".join(["a pleated wool skirt with brass buttons"] * 40)
    result = scorer(images[:1], [long_text])
    assert math.isfinite(result.scores[0])


def test_grayscale_images_are_scored(scorer, images):
    result = scorer([images[0].convert("L")], TEXTS[:1])
    assert math.isfinite(result.scores[0])


@pytest.mark.parametrize(
    ("count", "texts"),
    [
        (0, []),
        (2, ["a dress"]),
        (1, [" "]),
        (1, [None]),
    ],
)
def test_check_inputs_rejects_bad_batches(scorer, images, count, texts):
    with pytest.raises(ValueError):
        scorer.check_inputs(images[:count], texts)


def test_check_inputs_rejects_something_that_is_not_an_image(scorer):
    with pytest.raises(ValueError):
        scorer.check_inputs([np.zeros((8, 8, 3), dtype=np.uint8)], ["a dress"])


def test_the_loaded_scorer_runs_in_float32_even_where_the_other_models_get_bf16(
    clip_dir, images, monkeypatch
):
    # What a GPU's default dtype is; the loader reads it through its own import.
    monkeypatch.setattr(devices, "default_dtype", lambda device: torch.bfloat16)
    monkeypatch.setattr(loader, "default_dtype", lambda device: torch.bfloat16)
    profile = dataclasses.replace(DEFAULT, name="tiny-clip", scorer=str(clip_dir))

    scorer = loader.load_runtimes(["score"], profile, "cpu").score

    assert {parameter.dtype for parameter in scorer.model.parameters()} == {torch.float32}
    reference = CLIPModel.from_pretrained(str(clip_dir), dtype=torch.float32).eval()
    inputs = scorer.processor(text=TEXTS, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = reference(**inputs).logits_per_image.diagonal().tolist()
    assert scorer(images, TEXTS).scores == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_a_scorer_given_a_bf16_model_scores_in_float32(clip_dir, images):
    model = CLIPModel.from_pretrained(str(clip_dir), dtype=torch.bfloat16).eval()

    scorer = Scorer(model, Scorer.from_pretrained(str(clip_dir), CPU).processor, CPU)

    assert {parameter.dtype for parameter in scorer.model.parameters()} == {torch.float32}
