"""FLUX rendering runtime: prompts and seeds in, product photos out.

The GPU fast path is set up once, at load: bf16 weights resident on the card, the LoRA fused
into them, the transformer's repeated blocks compiled (``compile``) and their linear layers
in float8 (``fp8``, torchao, compute capability 8.9+) where :mod:`workers.fast_path` says it
pays, and where the card is small the T5 encoder streamed from host memory, or whole models
offloaded between uses (``memory_mode``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from dataclasses import dataclass

import PIL.Image
import torch
from diffusers import FluxPipeline

from workers.devices import default_dtype
from workers.fast_path import check_fp8_support, decide, fp8_layer
from workers.placement import STREAMED_ENCODER, placement_for

logger = logging.getLogger("farm.renderer")

MAX_SEED = 2**63
# The first diffusers release whose from_pretrained accepts dtype= (PR #14162); older ones
# drop it with a silenced warning and load FLUX in fp32, about 67 GB.
MIN_DIFFUSERS = "0.40.0"
WARM_UP_PROMPT = "a plain white cotton t-shirt"


@dataclass
class RenderResult:
    """Output of one :class:`Renderer` call.

    Args:
        images: one image per prompt, in prompt order.
        seconds: wall-clock time of the call.
    """

    images: list[PIL.Image.Image]
    seconds: float


class Renderer:
    """Renders a batch of prompts with a FLUX pipeline, one seed per prompt.

    Each image depends only on its own prompt and seed, so a prompt rendered alone or inside a
    batch gives the same picture (bit for bit on CPU).
    """

    def __init__(
        self,
        pipeline: FluxPipeline,
        device: torch.device,
        width: int,
        height: int,
        steps: int,
        guidance_scale: float = 0.0,
        max_sequence_length: int = 256,
    ) -> None:
        """Wire a loaded pipeline to a render shape.

        Args:
            pipeline: a FLUX pipeline already on ``device``.
            device: where the pipeline runs; the per-prompt generators live there too.
            width: image width in pixels, a multiple of 16.
            height: image height in pixels, a multiple of 16.
            steps: denoising steps (4 for FLUX.1-schnell).
            guidance_scale: 0 for schnell, which has no guidance embedding.
            max_sequence_length: T5 prompt length in tokens (at most 256 for schnell).
        """
        # The VAE downsamples by 8 and the transformer packs latents 2x2.
        multiple = getattr(pipeline, "vae_scale_factor", 8) * 2
        if width <= 0 or height <= 0 or width % multiple or height % multiple:
            raise ValueError(f"width and height must be positive multiples of {multiple}")
        if steps < 1:
            raise ValueError("steps must be at least 1")
        self.pipeline = pipeline
        self.device = torch.device(device)
        self.width = width
        self.height = height
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.max_sequence_length = max_sequence_length

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        lora: str | None,
        device: torch.device,
        dtype: torch.dtype | None = None,
        width: int = 1024,
        height: int = 1024,
        steps: int = 4,
        lora_scale: float = 1.0,
        *,
        lora_weight_name: str | None = None,
        compile: bool | str = False,
        fp8: bool | str = False,
        memory_mode: str = "auto",
        vae_tiling: bool = False,
        vae_slicing: bool = False,
        revision: str | None = None,
        lora_revision: str | None = None,
        **kwargs: object,
    ) -> Renderer:
        """Load a FLUX pipeline, bake an optional LoRA into its weights, and wrap it.

        Args:
            model_id: hub id or local folder of a FLUX pipeline.
            lora: hub id or local folder of a FLUX LoRA, or ``None``.
            device: where to run.
            dtype: weight dtype; defaults to bf16 on a GPU, fp32 on a CPU.
            width: image width in pixels.
            height: image height in pixels.
            steps: denoising steps.
            lora_scale: strength the LoRA is fused with.
            lora_weight_name: the LoRA's weights file in its repo; offline, diffusers cannot
                list a hub repo to find it, so it must be named.
            compile: compile the transformer's repeated blocks once, then render one warm-up
                image so that the first article does not pay for compiling; ``auto`` where
                it pays (:mod:`workers.fast_path`).
            fp8: quantise the blocks' linear layers to float8 (torchao); needs a CUDA GPU of
                compute capability 8.9 or newer, else ``ValueError``; ``auto`` where it can.
            memory_mode: ``auto`` (see :func:`~workers.placement.resolve_memory_mode`: sized
                from the model's local files) or a placement of
                :data:`~workers.placement.MEMORY_MODES`.
            vae_tiling: decode the image in tiles (less VRAM at large sizes).
            vae_slicing: decode a batch one image at a time (less VRAM for big batches).
            revision: hub revision of ``model_id`` (ignored for a local folder).
            lora_revision: hub revision of ``lora`` (``None`` for a local folder).
            **kwargs: passed to the renderer (``guidance_scale``, ``max_sequence_length``) or
                else to ``FluxPipeline.from_pretrained``.

        Returns:
            The renderer.
        """
        device = torch.device(device)
        dtype = dtype or default_dtype(device)
        path, plan = decide(
            device, compile, fp8,
            place=lambda fp8: placement_for(model_id, device, dtype, fp8, memory_mode, revision),
            placement_of=lambda plan: plan.placement,
        )  # fmt: skip
        placement, compile, fp8 = plan.placement, path.compile, path.fp8
        logger.info("renderer on %s, %s: %s", device, placement, path.describe())
        check_options(device, placement, compile=compile, fp8=fp8)
        init_keys = ("guidance_scale", "max_sequence_length")
        init_kwargs = {key: kwargs.pop(key) for key in init_keys if key in kwargs}
        pipeline = load_pipeline(model_id, device, dtype, plan.on_card, revision=revision, **kwargs)
        check_loaded_dtype(pipeline, dtype)
        fast_path = dict(compile=compile, fp8=fp8, vae_tiling=vae_tiling, vae_slicing=vae_slicing)
        prepare_pipeline(
            pipeline, device, placement, lora, lora_scale, lora_weight_name,
            lora_revision=lora_revision, **fast_path,
        )  # fmt: skip
        renderer = cls(pipeline, device, width, height, steps, **init_kwargs)
        if compile:
            seconds = renderer.warm_up()
            logger.warning("renderer: compiling the transformer's blocks took %.1f s at start-up",
                           seconds)  # fmt: skip
        return renderer

    def warm_up(self) -> float:
        """Render one throw-away image, so that compiling happens now and not on an article.

        Returns:
            Seconds the warm-up took.
        """
        return self([WARM_UP_PROMPT], [0]).seconds

    def check_inputs(self, prompts: list[str], seeds: list[int]) -> None:
        """Raise ``ValueError`` unless prompts and seeds form a valid batch.

        Args:
            prompts: one non-blank prompt per image.
            seeds: one integer seed in ``[0, 2**63)`` per prompt.
        """
        if not prompts:
            raise ValueError("no prompts given")
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        for prompt in prompts:
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError("prompts must be non-blank strings")
        for seed in seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
                raise ValueError(f"seed {seed!r} is not an integer in [0, 2**63)")

    def __call__(self, prompts: list[str], seeds: list[int]) -> RenderResult:
        """Render one image per prompt.

        Args:
            prompts: the prompts.
            seeds: one seed per prompt; the same prompt and seed give the same image.

        Returns:
            The images and the time taken.
        """
        start = time.perf_counter()
        # 1. Check inputs.
        self.check_inputs(prompts, seeds)
        # 2. One generator per prompt, so each image's noise depends only on its own seed.
        generators = [torch.Generator(device=self.device).manual_seed(seed) for seed in seeds]
        # 3. Denoise and decode; out of memory frees what this call held before it propagates,
        #    so the worker keeps serving and the stage's retry starts from a clean card.
        try:
            output = self.pipeline(
                prompt=list(prompts),
                width=self.width,
                height=self.height,
                num_inference_steps=self.steps,
                guidance_scale=self.guidance_scale,
                max_sequence_length=self.max_sequence_length,
                generator=generators,
                output_type="pt",
            )
            # 4. Quantise to 8 bits where the pixels are: a quarter of the bytes cross to the CPU.
            pixels = to_uint8(output.images)
        except torch.cuda.OutOfMemoryError:
            free_device_memory()
            raise
        # 5. Return images in prompt order.
        images = [PIL.Image.fromarray(picture) for picture in pixels]
        return RenderResult(images=images, seconds=time.perf_counter() - start)


def to_uint8(images: torch.Tensor):
    """Decoded images in ``[0, 1]`` (N, C, H, W) → uint8 pixels (N, H, W, C) on the CPU.

    The arithmetic is diffusers' own ``numpy_to_pil`` (float32, ``* 255``, round half to
    even), done on the images' device, so the pixels equal ``output_type="pil"``'s.

    Args:
        images: the pipeline's ``output_type="pt"`` images.

    Returns:
        A NumPy uint8 array.
    """
    scaled = (images.float() * 255).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).cpu().numpy()


def free_device_memory() -> None:
    """Release cached CUDA memory after a failed call (a no-op without CUDA)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prepare_pipeline(
    pipeline: FluxPipeline,
    device: torch.device,
    placement: str,
    lora: str | None = None,
    lora_scale: float = 1.0,
    lora_weight_name: str | None = None,
    *,
    lora_revision: str | None = None,
    compile: bool = False,
    fp8: bool = False,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
) -> None:
    """Apply the load-time fast path to a pipeline fresh from ``from_pretrained``.

    Args:
        pipeline: the FLUX pipeline fresh from :func:`load_pipeline`: on the card for ``gpu``
            (so fusing and quantising run there), else in host memory.
        device: the device the renderer runs on.
        placement: the result of :func:`~workers.placement.resolve_memory_mode`.
        lora: hub id or local folder of a LoRA to fuse, or ``None``.
        lora_scale: strength the LoRA is fused with.
        lora_weight_name: the LoRA's weights file, or ``None`` to let diffusers find it.
        lora_revision: the LoRA's hub revision (``None`` for a local folder).
        compile: compile the transformer's repeated blocks (they compile on the first call).
        fp8: quantise the transformer's linear layers to float8.
        vae_tiling: decode in tiles.
        vae_slicing: decode a batch one image at a time.
    """
    if lora:
        fuse_lora(pipeline, lora, lora_scale, weight_name=lora_weight_name, revision=lora_revision)
    if fp8:
        quantize_fp8(pipeline.transformer)
    place_pipeline(pipeline, device, placement)
    set_vae_memory(pipeline, tiling=vae_tiling, slicing=vae_slicing)
    pipeline.set_progress_bar_config(disable=True)
    if compile:
        compile_transformer(pipeline.transformer)


def load_pipeline(
    model_id: str, device: torch.device, dtype: torch.dtype, on_card: bool, **kwargs: object
) -> FluxPipeline:
    """Load a FLUX pipeline into host memory, or straight onto the card.

    Straight onto the card, diffusers memory-maps each safetensors file and copies it tensor
    by tensor to the card, so the process never holds the whole pipeline in host RAM (about
    34 GB in bf16, per GPU process). ``.to()``, LoRA loading and fusing, and float8
    quantisation work on such a pipeline as on any other.

    Args:
        model_id: hub id or local folder of a FLUX pipeline.
        device: the device the renderer runs on.
        dtype: the weight dtype.
        on_card: load onto ``device`` (a CUDA card) instead of into host memory.
        **kwargs: passed to ``FluxPipeline.from_pretrained``.

    Returns:
        The pipeline.
    """
    if not on_card:
        return FluxPipeline.from_pretrained(model_id, dtype=dtype, **kwargs)
    # A pipeline's device_map takes a device type ("cuda"), not "cuda:1", and loads onto the
    # current card: make that this renderer's card.
    current = contextlib.nullcontext() if device.index is None else torch.cuda.device(device)
    with current:
        return FluxPipeline.from_pretrained(model_id, dtype=dtype, device_map=device.type, **kwargs)


def check_loaded_dtype(pipeline: FluxPipeline, dtype: torch.dtype) -> None:
    """Raise ``ValueError`` unless the transformer was loaded in ``dtype``.

    A diffusers release that ignores ``dtype=`` loads fp32 silently; this stops it before
    the weights are moved to a card they do not fit on.

    Args:
        pipeline: the pipeline fresh from ``from_pretrained``.
        dtype: the dtype that was asked for.
    """
    loaded = pipeline.transformer.dtype
    if loaded != dtype:
        raise ValueError(
            f"asked diffusers for {dtype} weights but the transformer loaded in {loaded}; "
            f"diffusers {MIN_DIFFUSERS} or newer is needed (from_pretrained(dtype=...))"
        )


def check_options(device: torch.device, placement: str, compile: bool, fp8: bool) -> None:
    """Raise ``ValueError`` before anything is loaded when the options cannot work together.

    Args:
        device: the device the renderer runs on.
        placement: the result of :func:`~workers.placement.resolve_memory_mode`.
        compile: whether the transformer will be compiled.
        fp8: whether the transformer will be quantised to float8.
    """
    if placement == "sequential_offload" and (compile or fp8):
        raise ValueError("compile and fp8 do not work with sequential_offload (layer hooks)")
    if fp8:
        check_fp8_support(device)


def fuse_lora(
    pipeline: FluxPipeline,
    lora: str,
    scale: float = 1.0,
    weight_name: str | None = None,
    revision: str | None = None,
) -> None:
    """Bake a LoRA into the pipeline's weights and drop the adapter modules.

    Args:
        pipeline: the FLUX pipeline.
        lora: hub id or local folder of the LoRA.
        scale: strength the LoRA is fused with.
        weight_name: the weights file in the LoRA's repo or folder; ``None`` lets diffusers
            look for it, which it refuses to do for a hub id with ``HF_HUB_OFFLINE=1``.
        revision: the hub revision of ``lora`` (a commit pins it); ``None`` for a folder.
    """
    pipeline.load_lora_weights(lora, weight_name=weight_name, revision=revision)
    # fuse_lora fuses only the transformer unless told otherwise, and unloading drops what was
    # not fused: name every component the LoRA went into (a text encoder too, for some).
    components = [name for name, adapters in pipeline.get_list_adapters().items() if adapters]
    # Fusing writes the LoRA into the base weights; unloading then drops the adapter modules
    # but keeps the fused weights, so sampling pays no per-step LoRA cost.
    pipeline.fuse_lora(components=components, lora_scale=scale)
    pipeline.unload_lora_weights()


def quantize_fp8(transformer: torch.nn.Module) -> None:
    """Quantise the linear layers of the transformer's blocks to float8 in place (torchao).

    Weights are stored in float8 with one scale per row and activations are quantised on the
    fly, so the matmuls run on the float8 tensor cores (weight-only float8 saves memory but
    not time). Call :func:`check_fp8_support` first.

    Args:
        transformer: the FLUX transformer.
    """
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    quantize_(transformer, config, filter_fn=fp8_layer)


def place_pipeline(pipeline: FluxPipeline, device: torch.device, placement: str) -> None:
    """Put the pipeline where :func:`~workers.placement.resolve_memory_mode` said.

    Args:
        pipeline: the FLUX pipeline.
        device: the device the renderer runs on.
        placement: ``cpu`` or one of :data:`~workers.placement.MEMORY_MODES` but ``auto``.
    """
    if placement == "encoder_offload":
        stream_encoder(pipeline, device)
    elif placement == "model_offload":
        pipeline.enable_model_cpu_offload(device=device)
    elif placement == "sequential_offload":
        pipeline.enable_sequential_cpu_offload(device=device)
    else:
        pipeline.to(device)  # a no-op when it is there already


def stream_encoder(pipeline: FluxPipeline, device: torch.device) -> None:
    """Keep every component on ``device`` but the T5 encoder, which streams from host memory.

    diffusers' group offloading moves T5 to the card one block at a time as it runs; on a
    CUDA card the next block is copied on a side stream while the current one computes, so
    the encoder costs one pass of its weights over the bus per prompt, and the transformer,
    run once per step, never moves.

    Args:
        pipeline: the FLUX pipeline, in host memory.
        device: the device the renderer runs on.
    """
    from diffusers.hooks import apply_group_offloading

    for name, component in pipeline.components.items():
        if isinstance(component, torch.nn.Module) and name != STREAMED_ENCODER:
            component.to(device)
    apply_group_offloading(
        getattr(pipeline, STREAMED_ENCODER),
        onload_device=device,
        offload_type="block_level",
        num_blocks_per_group=1,
        use_stream=device.type == "cuda",
        # T5's blocks sit in its ``encoder`` stack, not at the model's top level, where
        # group offloading looks for them by default (it would move the whole model at once).
        block_modules=["encoder"],
    )


def set_vae_memory(pipeline: FluxPipeline, tiling: bool, slicing: bool) -> None:
    """Switch the VAE's tiled and sliced decoding on or off.

    Args:
        pipeline: the FLUX pipeline.
        tiling: decode in overlapping tiles.
        slicing: decode a batch one image at a time.
    """
    vae = pipeline.vae
    if tiling:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    if slicing:
        vae.enable_slicing()
    else:
        vae.disable_slicing()


def compile_transformer(transformer: torch.nn.Module) -> None:
    """Compile each repeated block of the transformer once (regional compilation).

    FLUX repeats two block types 19 and 38 times; compiling one block per type and reusing
    the code for the others takes seconds to a minute instead of many minutes for the whole
    model, for nearly the same speed-up.

    Args:
        transformer: the FLUX transformer.
    """
    if getattr(transformer, "_repeated_blocks", None) and hasattr(
        transformer, "compile_repeated_blocks"
    ):
        transformer.compile_repeated_blocks(fullgraph=True)
        return
    for blocks in (transformer.transformer_blocks, transformer.single_transformer_blocks):
        for block in blocks:
            block.compile(fullgraph=True)
