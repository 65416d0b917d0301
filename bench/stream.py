"""How long the card waits between renders: PNG written on the model thread vs by the message.

One GPU-queue worker process holds several render messages at once, each on a thread of its
own, and one :class:`workers.executor.ModelExecutor` makes their model calls one at a time
(render batch size 1). This benchmark runs that in one process without Celery: caller
threads (as many as a GPU worker process holds messages, ``role_concurrency("gpu")``) each
take an article, hand its render input to the real executor and, on the ``streamed`` side,
write its PNG themselves with the farm's own ``tasks.stages.finish_render`` (the shipped
``tasks.outputs.save_png``) while the executor already renders the next article. On the
``inline`` side the model call itself renders and then runs ``finish_render``, so every PNG
is written on the model thread before the next render starts.

The renderer stands in for a GPU: it sleeps ``--render-seconds`` (0.6 s) per image, leaving
the CPU free as a card does, and returns real 1024x1024 RGB pictures with the make-up of a
product photo (:func:`studio_photo`), so PNG encoding costs what it costs on such images.
Each render call's start and end are recorded on the model thread; the card's idle time is
the sum of the gaps between consecutive renders, reported as a fraction of the time spent
rendering (the design's target is 5 % or less). Rounds are interleaved and the side going
first alternates. The last two lines are ``render_idle_fraction_inline: X`` and
``render_idle_fraction: X`` (streamed).

    python -m bench.stream [--render-seconds S] [--size N] [--articles N] [--rounds R]
                           [--threads T] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import PIL.Image
from PIL import ImageDraw, ImageFilter

from bench.fake_runtimes import SleepingRenderer, bench_profile
from tasks import outputs, stages
from tasks.handoff import RecentImages
from tasks.registry import STAGES, role_concurrency
from tasks.settings import Settings
from workers.executor import ModelExecutor

PICTURES = 4
PROMPT = "a red linen summer dress, studio product photo"
SIDES = ("inline", "streamed")
TARGET = 0.05


def studio_photo(seed: int, size: int) -> PIL.Image.Image:
    """A picture with the make-up of a product photo: a light studio backdrop with a soft
    falloff, a garment-shaped, textured, shaded subject and its shadow.

    Args:
        seed: chooses colour, shape and texture.
        size: width and height in pixels.

    Returns:
        An RGB image.
    """
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1.0, 1.0, size)
    falloff = 1.0 - 0.12 * (axis[None, :] ** 2 + axis[:, None] ** 2)
    backdrop = np.clip(235 * falloff[..., None] + rng.normal(0, 1.5, (size, size, 3)), 0, 255)
    picture = PIL.Image.fromarray(backdrop.astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    colour = tuple(int(c) for c in rng.integers(30, 200, 3))
    left, top = size * rng.uniform(0.25, 0.35), size * rng.uniform(0.1, 0.2)
    right, bottom = size - left, size * rng.uniform(0.8, 0.9)
    draw.ellipse((left, bottom - size * 0.03, right, bottom + size * 0.04), fill=(190,) * 3)
    draw.rounded_rectangle((left, top, right, bottom), radius=size // 12, fill=colour)
    picture = picture.filter(ImageFilter.GaussianBlur(size / 300))
    weave = rng.normal(0, 6, (size, size, 1)) * (np.asarray(picture) < 200).any(-1, keepdims=True)
    shading = 1.0 - 0.25 * np.clip(axis[None, :, None], 0, 1)
    pixels = np.asarray(picture, dtype=np.float64) * shading + weave
    return PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line.

    Args:
        argv: arguments without the program name; ``None`` for ``sys.argv``.

    Returns:
        The options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--render-seconds", type=float, default=0.6, help="per image")
    parser.add_argument("--size", type=int, default=1024, help="picture width and height")
    parser.add_argument("--articles", type=int, default=20, help="articles per round and side")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        default=role_concurrency("gpu", Settings()),
        help="caller threads (messages one GPU worker process holds at once)",
    )
    parser.add_argument("--quick", action="store_true", help="CI size: 8 articles, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.articles, args.rounds = 8, 1
    if args.articles < 2 or args.threads < 1:
        parser.error("--articles must be at least 2 and --threads at least 1")
    return args


def articles(prompts: list[str], tag: str) -> list[stages.ArticleInput]:
    """Articles ready to render, one per prompt, as a render task loads them after its claim.

    Args:
        prompts: their generation prompts.
        tag: part of every key (and so of every seed and file name), e.g. the round.

    Returns:
        The articles.
    """
    made = []
    for index, prompt in enumerate(prompts):
        key = f"{tag}-SKU-{index:05d}"
        made.append(
            stages.ArticleInput(id=index + 1, key=key, batch_id=tag, file_stem=key,
                                source_text="-", generation_prompt=prompt)
        )  # fmt: skip
    return made


class RenderClock:
    """The start and end of every render call, taken on the model thread."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def render(self, renderer, inputs: list) -> list[stages.RenderedImage]:
        """``tasks.stages.call_render``, timed."""
        started = time.perf_counter()
        made = stages.call_render(renderer, inputs)
        with self._lock:
            self.spans.append((started, time.perf_counter()))
        return made


def idle_and_busy(spans: list[tuple[float, float]]) -> tuple[float, float]:
    """The card's idle time between renders and its time rendering.

    Args:
        spans: (start, end) of each render call.

    Returns:
        (seconds of the gaps between consecutive renders, seconds rendering). The wait for
        the first render and the time after the last are not gaps: no render was due.
    """
    ordered = sorted(spans)
    busy = sum(end - start for start, end in ordered)
    idle = sum(max(0.0, nxt[0] - prev[1]) for prev, nxt in zip(ordered, ordered[1:], strict=False))
    return idle, busy


@dataclass(frozen=True)
class Side:
    """One side of one round."""

    seconds_per_article: float
    idle: float  # seconds between renders
    busy: float  # seconds rendering

    @property
    def idle_fraction(self) -> float:
        """Idle time between renders as a fraction of render time."""
        return self.idle / self.busy if self.busy else float("nan")


def _inline_call(clock: RenderClock, renderer, ctx: stages.StageContext, inputs: list) -> list:
    # The model thread renders, then writes every PNG before it takes the next input.
    made = clock.render(renderer, [model_input for _, model_input in inputs])
    return [stages.finish_render(a, m, ctx) for (a, _), m in zip(inputs, made, strict=True)]


def run_side(
    side: str, renderer, chosen: list[stages.ArticleInput], folder: Path, threads: int
) -> Side:
    """Render and write every article with caller threads feeding one model executor.

    Args:
        side: ``inline`` (PNG written in the model call) or ``streamed`` (by the caller).
        renderer: a renderer runtime, ``(prompts, seeds) -> RenderResult``.
        chosen: the articles.
        folder: the output folder.
        threads: caller threads, as many as a GPU worker process holds messages.

    Returns:
        Wall-clock seconds per article and the card's idle and busy time.
    """
    settings = Settings()
    profile = bench_profile("stream")
    ctx = stages.StageContext(profile, folder / side, "bench@stream", images=RecentImages())
    clock = RenderClock()
    render = STAGES["render"]
    size = render.batch_size(settings)
    executor = ModelExecutor(max_wait=settings.batch_wait_seconds)

    def one(article: stages.ArticleInput) -> stages.StageOutput:
        model_input = render.prepare(article, ctx)
        if side == "inline":
            call = partial(_inline_call, clock, renderer, ctx)
            return executor.submit("render", call, (article, model_input), size).result()
        made = executor.submit("render", partial(clock.render, renderer), model_input, size)
        return render.finish(article, made.result(), ctx)

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix=f"bench-{side}") as pool:
            done = list(pool.map(one, chosen))
    finally:
        executor.stop()
    seconds = (time.perf_counter() - started) / len(chosen)
    if not all(Path(output.render["image_path"]).is_file() for output in done):
        raise RuntimeError(f"{side}: an image was not written")
    return Side(seconds, *idle_and_busy(clock.spans))


def png_seconds(pictures: list[PIL.Image.Image], folder: Path) -> float:
    """Seconds to encode and write one picture with ``tasks.outputs.save_png``, alone.

    Args:
        pictures: the pictures.
        folder: where to write them.

    Returns:
        The mean over the pictures.
    """
    started = time.perf_counter()
    for index, picture in enumerate(pictures):
        outputs.save_png(picture, folder / "alone" / f"{index}.png")
    return (time.perf_counter() - started) / len(pictures)


def run_rounds(args, renderer, folder: Path) -> dict[str, list[Side]]:
    """Interleaved rounds; the side going first alternates.

    Args:
        args: the options.
        renderer: the fixed-time renderer.
        folder: the output folder.

    Returns:
        Side → its result in each round.
    """
    results: dict[str, list[Side]] = {side: [] for side in SIDES}
    for number in range(args.rounds):
        order = SIDES if number % 2 == 0 else tuple(reversed(SIDES))
        for side in order:
            chosen = articles([PROMPT] * args.articles, f"r{number + 1}-{side}")
            result = run_side(side, renderer, chosen, folder, args.threads)
            results[side].append(result)
            print(
                f"round {number + 1} {side}: {result.seconds_per_article:.3f} s/article, "
                f"card idle {result.idle_fraction:.1%} of render time",
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark.

    Args:
        argv: command-line arguments.

    Returns:
        The exit code.
    """
    args = parse_args(argv)
    pictures = [studio_photo(seed, args.size) for seed in range(PICTURES)]
    renderer = SleepingRenderer(args.render_seconds, pictures)
    print(
        f"stream: {args.rounds} rounds x {args.articles} articles per side, "
        f"{args.size}x{args.size} pictures, {args.render_seconds}s per render (sleep), "
        f"{args.threads} caller threads, one model executor, render batch 1",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as scratch:
        folder = Path(scratch)
        print(f"PNG encode + write alone: {png_seconds(pictures, folder):.3f} s/picture")
        results = run_rounds(args, renderer, folder)
    fractions = {}
    for side, taken in results.items():
        idle, busy = sum(r.idle for r in taken), sum(r.busy for r in taken)
        fractions[side] = idle / busy
        per_article = sum(r.seconds_per_article for r in taken) / len(taken)
        print(
            f"{side}: {per_article:.3f} s/article, card idle {fractions[side]:.1%} of render "
            f"time ({1000 * idle / (len(taken) * (args.articles - 1)):.1f} ms between renders)"
        )
    verdict = "met" if fractions["streamed"] <= TARGET else "missed"
    print(f"target: idle at most {TARGET:.0%} of render time, streamed: {verdict}")
    print(f"render_idle_fraction_inline: {fractions['inline']:.4f}")
    print(f"render_idle_fraction: {fractions['streamed']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
