"""The FLUX renderer, run on a tiny random-weight FLUX.1-schnell pipeline on the CPU."""

import os

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # read when the Hugging Face libraries are first imported

from diffusers import DiffusionPipeline, FluxPipeline  # noqa: E402

from workers import tiny_image  # noqa: E402
from workers.renderer import (  # noqa: E402
    Renderer,
    RenderResult,
    check_options,
    place_pipeline,
    to_uint8,
)

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


LORA_REPO = "aihpi/flux-fashion-lora"
LORA_FILE = "flux-fashion-lora.safetensors"


@pytest.fixture
def offline_lora_cache(tiny_dirs, tmp_path, monkeypatch):
    """The tiny LoRA as the only weights file of a hub-cached ``aihpi/flux-fashion-lora``."""
    import huggingface_hub.constants
    from diffusers.loaders import lora_base

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / ("models--" + LORA_REPO.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / LORA_FILE).write_bytes(
        (tiny_dirs[1] / "pytorch_lora_weights.safetensors").read_bytes()
    )
    # The libraries read these variables at import, so the environment alone moves nothing
    # in this process: patch the constants they read at call time as well.
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(lora_base, "HF_HUB_OFFLINE", True)
    return LORA_REPO


def test_an_offline_lora_repo_loads_by_id_when_its_weight_name_is_given(
    tiny_dirs, offline_lora_cache, lora_renderer
):
    runtime = Renderer.from_pretrained(
        str(tiny_dirs[0]), offline_lora_cache, CPU, width=WIDTH, height=HEIGHT, steps=2,
        lora_weight_name=LORA_FILE,
    )  # fmt: skip
    ours = pixels(runtime(["a red linen dress"], [3]))[0]
    np.testing.assert_array_equal(ours, pixels(lora_renderer(["a red linen dress"], [3]))[0])


def test_an_offline_lora_repo_loads_the_commit_it_is_pinned_to_and_no_other(
    tiny_dirs, offline_lora_cache, lora_renderer, tmp_path
):
    commit = tmp_path / "hub" / f"models--{LORA_REPO.replace('/', '--')}" / "refs" / "main"
    runtime = Renderer.from_pretrained(
        str(tiny_dirs[0]), offline_lora_cache, CPU, width=WIDTH, height=HEIGHT, steps=2,
        lora_weight_name=LORA_FILE, lora_revision=commit.read_text(),
    )  # fmt: skip
    ours = pixels(runtime(["a red linen dress"], [3]))[0]
    np.testing.assert_array_equal(ours, pixels(lora_renderer(["a red linen dress"], [3]))[0])
    with pytest.raises(Exception, match=LORA_FILE):  # not in that commit: none is cached
        Renderer.from_pretrained(
            str(tiny_dirs[0]), offline_lora_cache, CPU, width=WIDTH, height=HEIGHT, steps=2,
            lora_weight_name=LORA_FILE, lora_revision="f" * 40,
        )  # fmt: skip


def test_an_offline_lora_repo_without_a_weight_name_is_refused_by_diffusers(
    tiny_dirs, offline_lora_cache
):
    with pytest.raises(ValueError, match="offline mode, you must specify a `weight_name`"):
        Renderer.from_pretrained(str(tiny_dirs[0]), offline_lora_cache, CPU, width=64, height=64)


def clip_embedding(pipeline: FluxPipeline, prompt: str) -> torch.Tensor:
    """The pooled CLIP prompt embedding: the only thing FLUX takes from its CLIP encoder."""
    return pipeline.encode_prompt(prompt, None, device=CPU, max_sequence_length=32)[1]


def test_a_lora_with_text_encoder_weights_is_fused_into_the_text_encoder_too(tiny_dirs, renderer):
    flux = tiny_dirs[0]
    lora = flux.parent / "lora-with-text-encoder"
    lora.mkdir()
    tiny_image.build_tiny_flux_lora_with_text_encoder(lora, flux)
    fused = Renderer.from_pretrained(str(flux), str(lora), CPU, width=WIDTH, height=HEIGHT)
    adapter = FluxPipeline.from_pretrained(flux)
    adapter.load_lora_weights(str(lora))
    prompt = "a red linen dress"
    ours = clip_embedding(fused.pipeline, prompt)
    assert (ours - clip_embedding(renderer.pipeline, prompt)).abs().max() > 0.1
    torch.testing.assert_close(ours, clip_embedding(adapter, prompt), atol=1e-5, rtol=1e-5)
    assert not any("lora" in name for name, _ in fused.pipeline.text_encoder.named_modules())


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


# --- the GPU fast path's options, exercised on the CPU -------------------------------------

GIB = 2**30
CUDA = torch.device("cuda")  # a device object only: nothing here touches a GPU


@pytest.mark.parametrize("option", ["compile", "fp8"])
def test_compile_and_fp8_refuse_sequential_offload(option):
    with pytest.raises(ValueError, match="sequential_offload"):
        check_options(CUDA, "sequential_offload", **{"compile": False, "fp8": False, option: True})


def test_fp8_without_cuda_fails_at_load_with_a_clear_message(tiny_dirs):
    with pytest.raises(ValueError, match="fp8 needs a CUDA GPU of compute capability 8.9"):
        Renderer.from_pretrained(str(tiny_dirs[0]), None, CPU, width=64, height=64, fp8=True)


def test_a_gpu_memory_mode_on_the_cpu_fails_at_load(tiny_dirs):
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Renderer.from_pretrained(str(tiny_dirs[0]), None, CPU, memory_mode="model_offload")


class _RecordingPipeline:
    def __init__(self):
        self.calls = []

    def to(self, device):
        self.calls.append(("to", device))

    def enable_model_cpu_offload(self, device):
        self.calls.append(("model_offload", device))

    def enable_sequential_cpu_offload(self, device):
        self.calls.append(("sequential_offload", device))


@pytest.mark.parametrize(
    ("placement", "call"),
    [("cpu", "to"), ("gpu", "to"), ("model_offload", "model_offload"),
     ("sequential_offload", "sequential_offload")],
)  # fmt: skip
def test_each_placement_calls_its_diffusers_method(placement, call):
    pipeline = _RecordingPipeline()
    place_pipeline(pipeline, CUDA, placement)
    assert pipeline.calls == [(call, CUDA)]


def test_a_streamed_t5_encoder_renders_the_same_image_as_one_in_place(tiny_dirs, renderer):
    streamed = Renderer.from_pretrained(
        str(tiny_dirs[0]), None, CPU, width=WIDTH, height=HEIGHT, steps=2
    )
    # On the CPU the stream is host to host; the hooks and the pipeline's call are the same.
    place_pipeline(streamed.pipeline, CPU, "encoder_offload")

    hooked = streamed.pipeline.text_encoder_2.encoder.block[0]
    assert getattr(hooked, "_diffusers_hook", None) is not None
    assert getattr(streamed.pipeline.transformer, "_diffusers_hook", None) is None
    prompt, seed = "a red linen dress", 3
    assert streamed([prompt], [seed]).images[0].tobytes() == (
        renderer([prompt], [seed]).images[0].tobytes()
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_card_encoder_offload_keeps_the_transformer_there_and_t5_in_host_memory(tiny_dirs):
    streamed = Renderer.from_pretrained(
        str(tiny_dirs[0]), None, CUDA, width=WIDTH, height=HEIGHT, steps=2,
        memory_mode="encoder_offload",
    )  # fmt: skip
    result = streamed(["a red linen dress"], [3])

    pipeline = streamed.pipeline
    assert result.images[0].size == (WIDTH, HEIGHT)
    assert {p.device.type for p in pipeline.transformer.parameters()} == {"cuda"}
    assert {p.device.type for p in pipeline.text_encoder_2.encoder.block.parameters()} == {"cpu"}


def test_vae_tiling_and_slicing_are_switched_on_by_the_options(tiny_dirs):
    sliced = Renderer.from_pretrained(
        str(tiny_dirs[0]), None, CPU, width=WIDTH, height=HEIGHT, steps=2,
        vae_tiling=True, vae_slicing=True,
    )  # fmt: skip
    assert sliced.pipeline.vae.use_tiling and sliced.pipeline.vae.use_slicing
    result = sliced(["a red linen dress"], [7])
    assert result.images[0].size == (WIDTH, HEIGHT)


def test_the_plain_renderer_neither_tiles_nor_slices(renderer):
    assert not renderer.pipeline.vae.use_tiling and not renderer.pipeline.vae.use_slicing


def test_the_loader_passes_render_options_through(tiny_profile):
    from workers.loader import load_runtimes

    with pytest.raises(ValueError, match="fp8"):
        load_runtimes(("render",), tiny_profile, "cpu", render_options={"fp8": True})


def test_compiled_blocks_render_the_same_pixels_as_eager(tiny_dirs, renderer):
    compiled = Renderer.from_pretrained(
        str(tiny_dirs[0]), None, CPU, width=WIDTH, height=HEIGHT, steps=2, compile=True
    )
    transformer = compiled.pipeline.transformer
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    assert all(block._compiled_call_impl is not None for block in blocks)
    first = pixels(compiled(["a red linen dress"], [7]))[0]
    eager = pixels(renderer(["a red linen dress"], [7]))[0]
    assert np.abs(first - eager).max() <= 1


def test_out_of_memory_frees_device_memory_and_propagates(tiny_dirs, monkeypatch):
    from workers import renderer as renderer_module

    runtime = Renderer.from_pretrained(
        str(tiny_dirs[0]), None, CPU, width=WIDTH, height=HEIGHT, steps=1
    )
    freed = []
    monkeypatch.setattr(renderer_module, "free_device_memory", lambda: freed.append(True))

    def exhausted(**_):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")

    runtime.pipeline = exhausted
    with pytest.raises(torch.cuda.OutOfMemoryError):
        runtime(["a red shirt"], [1])
    assert freed == [True]


def test_the_renderer_gives_the_pixels_of_the_pipelines_own_pil_output(renderer):
    ours = pixels(renderer(["a red linen dress"], [5]))[0]
    theirs = renderer.pipeline(
        prompt=["a red linen dress"],
        width=renderer.width,
        height=renderer.height,
        num_inference_steps=renderer.steps,
        guidance_scale=renderer.guidance_scale,
        max_sequence_length=renderer.max_sequence_length,
        generator=[torch.Generator().manual_seed(5)],
        output_type="pil",
    ).images[0]
    np.testing.assert_array_equal(ours, np.asarray(theirs, dtype=np.int16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_eight_bit_conversion_rounds_as_diffusers_does(dtype):
    from diffusers.image_processor import VaeImageProcessor

    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    images[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.5 / 255, 1.5 / 255])  # edges, half steps
    expected = [np.asarray(p) for p in VaeImageProcessor.numpy_to_pil(
        VaeImageProcessor.pt_to_numpy(images))]  # fmt: skip
    np.testing.assert_array_equal(to_uint8(images), np.stack(expected))


# --- the dtype the weights are loaded in ----------------------------------------------------


def test_a_pipeline_loaded_in_another_dtype_than_requested_is_refused(tiny_dirs, monkeypatch):
    original = FluxPipeline.from_pretrained

    def ignoring_dtype(cls, *args, dtype=None, **kwargs):
        return original(*args, **kwargs)  # what diffusers < MIN_DIFFUSERS does: fp32

    monkeypatch.setattr(FluxPipeline, "from_pretrained", classmethod(ignoring_dtype))
    with pytest.raises(ValueError, match=r"torch\.bfloat16.*torch\.float32"):
        Renderer.from_pretrained(
            str(tiny_dirs[0]), None, CPU, dtype=torch.bfloat16, width=64, height=64
        )


def test_pyproject_requires_a_diffusers_that_accepts_dtype_and_it_is_installed():
    import importlib.metadata
    import re
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.version import Version

    from workers.renderer import MIN_DIFFUSERS

    # tomllib is 3.11+ and the project supports 3.10: find the dependency's quoted string.
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    (line,) = re.findall(r'^\s*"(diffusers[^"]*)"', pyproject, flags=re.MULTILINE)
    specifiers = Requirement(line).specifier
    lower = [Version(spec.version) for spec in specifiers if spec.operator == ">="]
    assert lower and lower[0] >= Version(MIN_DIFFUSERS)
    assert Version(importlib.metadata.version("diffusers")) >= Version(MIN_DIFFUSERS)


# --- placement and loading on a GPU, with CUDA pretended on the CPU -------------------------


@pytest.fixture
def pretend_cuda(monkeypatch):
    """Make the renderer believe in a CUDA card with ``free`` GiB; record what it asks for."""
    from workers import renderer as renderer_module

    calls = {"free": 80 * GIB}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (calls["free"], 0))
    original = FluxPipeline.from_pretrained

    def recording(cls, model_id, **kwargs):
        calls["from_pretrained"] = kwargs
        loaded = {key: kwargs[key] for key in ("dtype", "revision") if key in kwargs}
        return original(model_id, **loaded)  # on the CPU: there is no card

    def prepare(pipeline, device, placement, *args, **kwargs):
        calls["placement"] = placement

    monkeypatch.setattr(FluxPipeline, "from_pretrained", classmethod(recording))
    monkeypatch.setattr(renderer_module, "prepare_pipeline", prepare)
    return calls


@pytest.mark.parametrize(("free", "expected"), [(20 * GIB, "gpu"), (3 * GIB, "sequential_offload")])
def test_auto_placement_is_sized_from_the_models_own_files(tiny_dirs, pretend_cuda, free, expected):
    pretend_cuda["free"] = free  # the tiny pipeline is a few MB: only the headroom matters
    Renderer.from_pretrained(
        str(tiny_dirs[0]), None, CUDA, dtype=torch.float32, width=64, height=64
    )
    assert pretend_cuda["placement"] == expected


def test_a_gpu_placement_loads_the_weights_straight_onto_the_card(tiny_dirs, pretend_cuda):
    Renderer.from_pretrained(
        str(tiny_dirs[0]), None, CUDA, dtype=torch.float32, width=64, height=64
    )
    assert pretend_cuda["placement"] == "gpu"
    assert pretend_cuda["from_pretrained"]["device_map"] == "cuda"


@pytest.mark.parametrize(
    ("mode", "free"),
    [("model_offload", 80 * GIB), ("sequential_offload", 80 * GIB), ("auto", 3 * GIB)],
)
def test_offload_placements_load_the_weights_into_host_memory(tiny_dirs, pretend_cuda, mode, free):
    pretend_cuda["free"] = free
    Renderer.from_pretrained(
        str(tiny_dirs[0]), None, CUDA, dtype=torch.float32, width=64, height=64, memory_mode=mode
    )
    assert pretend_cuda["placement"] != "gpu"
    assert "device_map" not in pretend_cuda["from_pretrained"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_card_the_pipeline_loads_there_without_a_copy_in_host_memory(tiny_dirs, monkeypatch):
    original, loaded_on = FluxPipeline.from_pretrained, {}

    def spying(cls, *args, **kwargs):
        pipeline = original(*args, **kwargs)
        for name, component in pipeline.components.items():
            if isinstance(component, torch.nn.Module):
                tensors = [*component.parameters(), *component.buffers()]
                loaded_on[name] = {tensor.device.type for tensor in tensors}
        return pipeline

    monkeypatch.setattr(FluxPipeline, "from_pretrained", classmethod(spying))
    runtime = Renderer.from_pretrained(
        str(tiny_dirs[0]), str(tiny_dirs[1]), CUDA, width=WIDTH, height=HEIGHT, steps=2,
        memory_mode="gpu",
    )  # fmt: skip
    # Every tensor was on the card when from_pretrained returned: none went through the CPU.
    assert set(loaded_on) == {"transformer", "text_encoder", "text_encoder_2", "vae"}
    assert all(devices == {"cuda"} for devices in loaded_on.values()), loaded_on
    assert runtime(["a red linen dress"], [3]).images[0].size == (WIDTH, HEIGHT)
