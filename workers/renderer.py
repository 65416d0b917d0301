"""FLUX rendering runtime: prompts and seeds in, product photos out."""

from __future__ import annotations

import time
from dataclasses import dataclass

import PIL.Image
import torch
from diffusers import FluxPipeline

from workers.devices import default_dtype

MAX_SEED = 2**63


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
            **kwargs: passed to the renderer (``guidance_scale``, ``max_sequence_length``) or
                else to ``FluxPipeline.from_pretrained``.

        Returns:
            The renderer.
        """
        device = torch.device(device)
        init_keys = ("guidance_scale", "max_sequence_length")
        init_kwargs = {key: kwargs.pop(key) for key in init_keys if key in kwargs}
        pipeline = FluxPipeline.from_pretrained(
            model_id, dtype=dtype or default_dtype(device), **kwargs
        )
        pipeline.to(device)
        if lora:
            pipeline.load_lora_weights(lora)
            # Fusing writes the LoRA into the base weights; unloading then drops the adapter
            # modules but keeps the fused weights, so sampling pays no per-step LoRA cost.
            pipeline.fuse_lora(lora_scale=lora_scale)
            pipeline.unload_lora_weights()
        pipeline.set_progress_bar_config(disable=True)
        return cls(pipeline, device, width, height, steps, **init_kwargs)

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
        # 3. Denoise and decode.
        output = self.pipeline(
            prompt=list(prompts),
            width=self.width,
            height=self.height,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            max_sequence_length=self.max_sequence_length,
            generator=generators,
            output_type="pil",
        )
        # 4. Return images in prompt order.
        return RenderResult(images=list(output.images), seconds=time.perf_counter() - start)
