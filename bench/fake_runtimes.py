"""Runtimes of a known cost, for benchmarks of the farm's own machinery.

Worker processes load them through the ``FARM_RUNTIME_FACTORY`` hook
(``bench.fake_runtimes:zero_cost``, ``:fixed_render`` or ``:costed``); each takes the same
arguments and returns the same result types as the real runtime it stands in for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

import PIL.Image

from bench import cards, costs
from tasks.settings import Settings
from workers.extractor import ExtractionResult
from workers.loader import Runtimes
from workers.profiles import Profile
from workers.renderer import RenderResult
from workers.scorer import ScoreResult
from workers.translator import TranslationResult

RENDER_SECONDS_ENV = "BENCH_RENDER_SECONDS"
# Read by `costed`: the cost table, the profile of this process, a factor on every cost, and
# the folder of the simulated cards' locks and call logs.
COST_TABLE_ENV = "BENCH_COST_TABLE"
COST_PROFILE_ENV = "BENCH_COST_PROFILE"
TIME_SCALE_ENV = "BENCH_TIME_SCALE"
CARDS_DIR_ENV = "BENCH_CARDS_DIR"
IMAGE_SIZE = 16
ATTRIBUTES = {
    "product_type": "dress",
    "key_visual_features": "knee length, A-line cut",
    "color_material_details": "red linen",
    "design_aspects": "round neck, hidden side zip",
}


def bench_profile(name: str) -> Profile:
    """The profile recorded on renders made by benchmark runtimes.

    Args:
        name: the factory's name, so that rows show which fake made them.

    Returns:
        A profile naming no real model.
    """
    return Profile(
        name=f"bench-{name}",
        translator="bench",
        extractor="bench",
        renderer="bench",
        lora=None,
        scorer="bench",
        width=IMAGE_SIZE,
        height=IMAGE_SIZE,
        steps=0,
    )


def translate(texts: list[str]) -> TranslationResult:
    """Return every text unchanged, instantly."""
    return TranslationResult(texts=list(texts), seconds=0.0)


def extract(texts: list[str]) -> ExtractionResult:
    """Return the same attributes for every text, instantly."""
    return ExtractionResult(attributes=[dict(ATTRIBUTES) for _ in texts], seconds=0.0)


def score(images: list, texts: list[str]) -> ScoreResult:
    """Score every pair 30.0, instantly."""
    return ScoreResult(scores=[30.0] * len(images), seconds=0.0)


class SleepingRenderer:
    """A renderer that takes a fixed time per image and returns small grey images, or the
    pictures it was given.

    Args:
        seconds_per_image: how long each image takes (0 for none).
        pictures: handed out in turn by seed instead of grey images, when given.
    """

    def __init__(
        self, seconds_per_image: float, pictures: list[PIL.Image.Image] | None = None
    ) -> None:
        if seconds_per_image < 0:
            raise ValueError("seconds_per_image must not be negative")
        self.seconds_per_image = seconds_per_image
        self.pictures = pictures

    def __call__(self, prompts: list[str], seeds: list[int]) -> RenderResult:
        """Render one image per prompt.

        Args:
            prompts: the prompts.
            seeds: one seed per prompt; it sets the grey level (or picks the picture).

        Returns:
            The images and the time taken.
        """
        start = time.perf_counter()
        if self.seconds_per_image:
            time.sleep(self.seconds_per_image * len(prompts))
        if self.pictures:
            images = [self.pictures[seed % len(self.pictures)] for seed in seeds]
        else:
            images = [
                PIL.Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (seed % 256,) * 3) for seed in seeds
            ]
        return RenderResult(images=images, seconds=time.perf_counter() - start)


def _runtimes(name: str, stages: Iterable[str], renderer: SleepingRenderer) -> Runtimes:
    wanted = set(stages)
    every = {"translate": translate, "extract": extract, "render": renderer, "score": score}
    chosen = {stage: runtime for stage, runtime in every.items() if stage in wanted}
    return Runtimes(profile=bench_profile(name), **chosen)


def zero_cost(stages: Iterable[str], settings: Settings) -> Runtimes:
    """Runtimes that cost nothing, to measure what the farm itself costs per article.

    Args:
        stages: the stages this worker serves.
        settings: the farm's settings (unused: nothing is loaded).

    Returns:
        The runtimes for ``stages``.
    """
    return _runtimes("zero-cost", stages, SleepingRenderer(0.0))


def fixed_render(stages: Iterable[str], settings: Settings) -> Runtimes:
    """Zero-cost text stages and a renderer that takes ``BENCH_RENDER_SECONDS`` per image.

    Args:
        stages: the stages this worker serves.
        settings: the farm's settings (unused: nothing is loaded).

    Returns:
        The runtimes for ``stages``.
    """
    seconds = float(os.environ.get(RENDER_SECONDS_ENV, "0.5"))
    return _runtimes("fixed-render", stages, SleepingRenderer(seconds))


class CostedCalls:
    """Model calls that take what the cost table says, on this process's card.

    Args:
        table: stage → cost, for this process's profile.
        scale: factor on every cost.
        folder: the scratch folder of the card locks and logs (None: no card).
        card: this process's card (None: on the CPU).
    """

    def __init__(self, table: dict, scale: float, folder: str | None, card: str | None) -> None:
        self.table, self.scale, self.folder, self.card = table, scale, folder, card

    def take(self, stage: str, count: int) -> float:
        """Hold the card for one call of ``stage`` over ``count`` inputs; its seconds."""
        if stage not in self.table:
            raise ValueError(f"the cost profile has no {stage!r} stage")
        seconds = self.table[stage].seconds(count) * self.scale
        start, end = cards.hold(self.folder, self.card, stage, seconds, count)
        return end - start

    def translate(self, texts: list[str]) -> TranslationResult:
        """Translation at its cost: every text unchanged."""
        return TranslationResult(texts=list(texts), seconds=self.take("translate", len(texts)))

    def extract(self, texts: list[str]) -> ExtractionResult:
        """Extraction at its cost: the same attributes for every text."""
        seconds = self.take("extract", len(texts))
        return ExtractionResult(attributes=[dict(ATTRIBUTES) for _ in texts], seconds=seconds)

    def render(self, prompts: list[str], seeds: list[int]) -> RenderResult:
        """Rendering at its cost: a small grey image per prompt."""
        seconds = self.take("render", len(prompts))
        images = [
            PIL.Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (seed % 256,) * 3) for seed in seeds
        ]
        return RenderResult(images=images, seconds=seconds)

    def score(self, images: list, texts: list[str]) -> ScoreResult:
        """Scoring at its cost: 30.0 for every pair."""
        return ScoreResult(scores=[30.0] * len(images), seconds=self.take("score", len(images)))


def costed(stages: Iterable[str], settings: Settings) -> Runtimes:
    """Runtimes whose every call takes its cost from the cost table, holding this process's card.

    The profile is ``BENCH_COST_PROFILE`` (``h100``), the table ``BENCH_COST_TABLE``
    (``bench/costs.toml``) and every cost is multiplied by ``BENCH_TIME_SCALE`` (1). A process
    pinned to a card (``CUDA_VISIBLE_DEVICES``, the launcher sets it) holds that card's lock
    in ``BENCH_CARDS_DIR`` for each call, so two processes on one card take turns; one
    without a card, or without the folder, only sleeps.

    Args:
        stages: the stages this worker serves.
        settings: the farm's settings (unused: nothing is loaded).

    Returns:
        The runtimes for ``stages``.
    """
    table = costs.profile_costs(
        os.environ.get(COST_PROFILE_ENV, "h100"), os.environ.get(COST_TABLE_ENV, costs.TABLE)
    )
    calls = CostedCalls(
        table,
        float(os.environ.get(TIME_SCALE_ENV, "1")),
        os.environ.get(CARDS_DIR_ENV),
        os.environ.get("CUDA_VISIBLE_DEVICES") or None,
    )
    wanted = set(stages)
    every = {
        "translate": calls.translate,
        "extract": calls.extract,
        "render": calls.render,
        "score": calls.score,
    }
    chosen = {stage: runtime for stage, runtime in every.items() if stage in wanted}
    return Runtimes(profile=bench_profile("costed"), **chosen)
