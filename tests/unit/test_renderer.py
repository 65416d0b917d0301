"""The FLUX renderer, run on a tiny random-weight FLUX.1-schnell pipeline on the CPU."""

import os

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # read when the Hugging Face libraries are first imported

from diffusers import DiffusionPipeline, FluxPipeline  # noqa: E402

from workers import tiny_image  # noqa: E402
from workers.renderer import Renderer, RenderResult  # noqa: E402

CPU = torch.device("cpu")
WIDTH, HEIGHT = 64, 48  # not square, so a swapped width and height shows


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-flux")
    flux, lora = root / "flux", root / "lora"
    flux.mkdir()
    lora.mkdir()
    tiny_image.build_tiny_flux(flux)
    tiny_image.build_tiny_flux_lora(lora, flux)
    return flux, lora


@pytest.fixture(scope="module")
def renderer(tiny_dirs):
    return Renderer.from_pretrained(
        str(tiny_dirs[0]), None, CPU, width=WIDTH, height=HEIGHT, steps=2
    )


@pytest.fixture(scope="module")
def lora_renderer(tiny_dirs):
    flux, lora = tiny_dirs
    return Renderer.from_pretrained(str(flux), str(lora), CPU, width=WIDTH, height=HEIGHT, steps=2)


def pixels(result: RenderResult) -> list[np.ndarray]:
    return [np.asarray(image, dtype=np.int16) for image in result.images]


def test_the_tiny_flux_folder_loads_as_a_flux_pipeline(tiny_dirs):
    assert isinstance(DiffusionPipeline.from_pretrained(tiny_dirs[0]), FluxPipeline)


def test_images_have_the_configured_size(renderer):
    result = renderer(["a red linen dress", "blue denim jeans"], [1, 2])
    assert [image.size for image in result.images] == [(WIDTH, HEIGHT)] * 2
    assert all(image.mode == "RGB" for image in result.images)
    assert result.seconds > 0


def test_the_same_prompt_and_seed_give_identical_pixels(renderer):
    first = pixels(renderer(["a red linen dress"], [7]))[0]
    second = pixels(renderer(["a red linen dress"], [7]))[0]
    np.testing.assert_array_equal(first, second)


def test_a_different_seed_gives_different_pixels(renderer):
    first = pixels(renderer(["a red linen dress"], [7]))[0]
    other = pixels(renderer(["a red linen dress"], [8]))[0]
    assert np.abs(first - other).mean() > 5


def test_an_image_does_not_depend_on_its_batch_companions_or_position(renderer):
    first = pixels(renderer(["a red linen dress", "blue denim jeans"], [1, 2]))
    other = pixels(renderer(["a green wool coat", "a red linen dress"], [9, 1]))
    np.testing.assert_array_equal(first[0], other[1])


def test_a_batch_of_two_matches_two_single_calls(renderer):
    batch = pixels(renderer(["a red linen dress", "blue denim jeans"], [1, 2]))
    singles = [
        pixels(renderer([p], [s]))[0]
        for p, s in [("a red linen dress", 1), ("blue denim jeans", 2)]
    ]
    for together, alone in zip(batch, singles, strict=True):
        # CPU BLAS sums differently for 1-3 rows than for more (the timestep embedding has one
        # row per image), so a rare pixel may round one level apart; the noise itself is equal.
        difference = np.abs(together - alone)
        assert difference.max() <= 1
        assert (difference > 0).mean() < 0.01


def test_the_fused_lora_changes_the_output(renderer, lora_renderer):
    base = pixels(renderer(["a red linen dress"], [3]))[0]
    styled = pixels(lora_renderer(["a red linen dress"], [3]))[0]
    assert np.abs(base - styled).mean() > 1


def test_the_fused_lora_matches_the_lora_applied_as_an_adapter(tiny_dirs, lora_renderer):
    flux, lora = tiny_dirs
    pipeline = FluxPipeline.from_pretrained(flux)
    pipeline.load_lora_weights(str(lora))
    pipeline.set_progress_bar_config(disable=True)
    adapter = Renderer(pipeline, CPU, WIDTH, HEIGHT, steps=2)
    fused = pixels(lora_renderer(["a red linen dress"], [3]))[0]
    unfused = pixels(adapter(["a red linen dress"], [3]))[0]
    assert np.abs(fused - unfused).max() <= 1


def test_fusing_leaves_no_lora_layers_behind(lora_renderer):
    names = [name for name, _ in lora_renderer.pipeline.transformer.named_modules()]
    assert not any("lora" in name for name in names)


@pytest.mark.parametrize(
    ("prompts", "seeds"),
    [
        ([], []),
        (["a dress"], [1, 2]),
        (["a dress", "  "], [1, 2]),
        (["a dress"], [-1]),
        (["a dress"], [2**63]),
        (["a dress"], [1.5]),
        (["a dress"], [True]),
    ],
)
def test_check_inputs_rejects_bad_batches(renderer, prompts, seeds):
    with pytest.raises(ValueError):
        renderer.check_inputs(prompts, seeds)


def test_check_inputs_accepts_the_largest_seed(renderer):
    renderer.check_inputs(["a dress"], [2**63 - 1])


@pytest.mark.parametrize(("width", "height"), [(60, 64), (64, 40), (0, 64)])
def test_sizes_that_are_not_multiples_of_16_are_rejected(renderer, width, height):
    with pytest.raises(ValueError):
        Renderer(renderer.pipeline, CPU, width, height, steps=2)
