"""Timing tools of the GPU benchmark: per-stage clocks on a pipeline's models, peak memory,
and the timed calls of the farm's runtimes."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from workers.renderer import Renderer
from workers.scorer import Scorer


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock reading covers it (no-op on a CPU).

    Args:
        device: the device the models run on.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageClock:
    """Adds up the time spent in chosen modules' forward passes, per stage name.

    Args:
        device: the device the modules run on (synchronised around every timed call).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self._started: dict[int, float] = {}
        self._handles: list = []

    def attach(self, module: torch.nn.Module, stage: str) -> None:
        """Time every forward pass of ``module`` as part of ``stage``.

        Args:
            module: the module.
            stage: the stage name its time adds to.
        """

        def before(mod, _args):
            synchronize(self.device)
            self._started[id(mod)] = time.perf_counter()

        def after(mod, _args, _output):
            synchronize(self.device)
            self.seconds[stage] += time.perf_counter() - self._started.pop(id(mod))

        self._handles += [module.register_forward_pre_hook(before)]
        self._handles += [module.register_forward_hook(after)]

    def reset(self) -> None:
        """Forget the time taken so far."""
        self.seconds.clear()

    def detach(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def render_clock(renderer: Renderer) -> StageClock:
    """A clock on the renderer's text encoders, transformer and VAE decoder.

    Args:
        renderer: the farm's renderer.

    Returns:
        The attached clock; stages ``encode``, ``denoise`` and ``decode``.
    """
    pipeline = renderer.pipeline
    clock = StageClock(renderer.device)
    clock.attach(pipeline.text_encoder, "encode")
    clock.attach(pipeline.text_encoder_2, "encode")
    clock.attach(pipeline.transformer, "denoise")
    clock.attach(pipeline.vae.decoder, "decode")
    return clock


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement (no-op on a CPU).

    Args:
        device: the device.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int | None:
    """Most memory allocated since the last reset.

    Args:
        device: the device.

    Returns:
        Bytes, or ``None`` on a CPU.
    """
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


@dataclass
class RenderTiming:
    """Per-image figures of one render configuration."""

    mode: str
    batch: int
    seconds_per_image: float
    split: dict[str, float] = field(default_factory=dict)
    score_seconds_per_image: float = 0.0
    peak_bytes: int | None = None

    @property
    def images_per_hour(self) -> float:
        """Rendered images per hour at this speed."""
        return 3600.0 / self.seconds_per_image


def time_render(
    mode: str,
    renderer: Renderer,
    scorer: Scorer,
    prompts: list[tuple[str, str]],
    repeats: int,
) -> RenderTiming:
    """Render and score one batch: one untimed warm-up call, then ``repeats`` timed calls.

    Args:
        mode: label of the configuration (``eager``, ``compile``, ...).
        renderer: the farm's renderer.
        scorer: the farm's scorer.
        prompts: (generation prompt, CLIP prompt) per image of the batch.
        repeats: timed calls.

    Returns:
        Seconds per image, split by stage, CLIP seconds per image and peak memory.
    """
    generation = [prompt for prompt, _ in prompts]
    clip_texts = [text for _, text in prompts]
    seeds = list(range(len(prompts)))
    scorer(renderer(generation, seeds).images, clip_texts)  # compiles a new shape, if any
    clock = render_clock(renderer)
    reset_peak_memory(renderer.device)
    rendering = scoring = 0.0
    try:
        for _ in range(repeats):
            result = renderer(generation, seeds)
            rendering += result.seconds
            scoring += scorer(result.images, clip_texts).seconds
    finally:
        clock.detach()
    images = repeats * len(prompts)
    split = {stage: seconds / images for stage, seconds in clock.seconds.items()}
    split["other"] = rendering / images - sum(split.values())
    return RenderTiming(
        mode=mode,
        batch=len(prompts),
        seconds_per_image=rendering / images,
        split=split,
        score_seconds_per_image=scoring / images,
        peak_bytes=peak_memory(renderer.device),
    )
