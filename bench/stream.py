"""PNG writes on or off the renderer's path: the farm's render stage one article per call vs
a streamed batch.

A GPU renders while the host's CPU waits, so a renderer that takes a fixed time per image and
leaves the CPU free stands in for it here: it returns photo-like studio pictures (1024x1024 by
default) so that PNG encoding costs what it costs on real images. The farm's own render stage
(``tasks.stages.render_batch``, writing real PNG files) runs the same articles

* ``inline``: one article per call, as a render task does with ``FARM_GPU_BATCH_SIZE=1``:
  each image is encoded and written before the next one renders;
* ``streamed``: ``--batch`` articles per call, as with ``FARM_GPU_BATCH_SIZE=B``: each image
  is encoded and written on a background thread while the next one renders.

Rounds are interleaved and the side going first alternates. It also prints the time to encode
and write one picture alone, and the score stage's time per article (with a scorer that costs
nothing) when it decodes each PNG again vs when it takes the images the render stage of the
same process kept (``tasks.handoff``). The last line is ``render_stream_speedup: X``, inline seconds
per article over streamed seconds per article.

    python -m bench.stream [--render-seconds S] [--articles N] [--batch B] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import PIL.Image
from PIL import ImageDraw, ImageFilter

from bench import fake_runtimes
from bench.fake_runtimes import SleepingRenderer, bench_profile
from db.models import Article, Render
from tasks import outputs, stages
from tasks.handoff import RecentImages

PICTURES = 4
PROMPT = "a red linen summer dress, studio product photo"


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
    parser.add_argument("--render-seconds", type=float, default=0.8, help="per image")
    parser.add_argument("--size", type=int, default=1024, help="picture width and height")
    parser.add_argument("--articles", type=int, default=32, help="articles per round and side")
    parser.add_argument("--batch", type=int, default=4, help="articles per streamed call")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="CI size: 8 articles, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.articles, args.rounds = 8, 1
    return args


def articles(prompts: list[str], tag: str) -> list[Article]:
    """Articles ready to render, one per prompt (their rows are never stored).

    Args:
        prompts: their generation prompts.
        tag: part of every key (and so of every seed), e.g. the round.

    Returns:
        The articles.
    """
    made = []
    for index, prompt in enumerate(prompts):
        key = f"{tag}-SKU-{index:05d}"
        made.append(
            Article(id=index + 1, batch_id=tag, key=key, file_stem=key, render_attempt=1,
                    generation_prompt=prompt)
        )  # fmt: skip
    return made


def run_side(side: str, renderer, chosen: list[Article], batch: int, folder: Path) -> float:
    """Render and write every article; return seconds per article.

    Args:
        side: ``inline`` or ``streamed``.
        renderer: the fixed-time renderer.
        chosen: the articles.
        batch: articles per call on the streamed side.
        folder: the output folder.

    Returns:
        Wall-clock seconds per article.
    """
    ctx = stages.StageContext(renderer, bench_profile("stream"), folder / side, "bench@stream")
    size = 1 if side == "inline" else batch
    started = time.perf_counter()
    for start in range(0, len(chosen), size):
        for output in stages.render_batch(chosen[start : start + size], ctx):
            if isinstance(output, Exception):
                raise output
    return (time.perf_counter() - started) / len(chosen)


def score_seconds(pictures, chosen: list[Article], batch: int, folder: Path, keep: bool) -> float:
    """Seconds per article of the score stage, each batch scored right after it rendered.

    Args:
        pictures: what the (instant) renderer hands out.
        chosen: the articles.
        batch: articles per render and score call.
        folder: the output folder.
        keep: whether the render stage keeps its images for the score stage
            (:mod:`tasks.handoff`), as in a worker process, or the score stage decodes them.

    Returns:
        Wall-clock seconds per article of the score calls alone, with a scorer that costs
        nothing (what is left is reading the images and publishing the outputs).
    """
    images = RecentImages() if keep else None
    side = folder / ("kept" if keep else "decoded")
    render = stages.StageContext(
        SleepingRenderer(0, pictures), bench_profile("stream"), side, "bench@stream", images=images
    )
    score = replace(render, runtime=fake_runtimes.score)
    spent = 0.0
    for start in range(0, len(chosen), batch):
        part = chosen[start : start + batch]
        for article, output in zip(part, stages.render_batch(part, render), strict=True):
            article.renders = [Render(**output.render)]
        started = time.perf_counter()
        stages.score_batch(part, score)
        spent += time.perf_counter() - started
    return spent / len(chosen)


def png_seconds(pictures: list[PIL.Image.Image], folder: Path) -> float:
    """Seconds to encode and write one picture, alone on the CPU.

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
        f"{args.size}x{args.size} pictures, {args.render_seconds}s per image, "
        f"streamed batches of {args.batch}",
        flush=True,
    )
    totals = {"inline": 0.0, "streamed": 0.0}
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as scratch:
        folder = Path(scratch)
        print(f"PNG encode + write alone: {png_seconds(pictures, folder):.3f} s/picture")
        for number in range(args.rounds):
            chosen = articles([PROMPT] * args.articles, f"round-{number + 1}")
            order = ("inline", "streamed") if number % 2 == 0 else ("streamed", "inline")
            for side in order:
                per_article = run_side(side, renderer, chosen, args.batch, folder)
                totals[side] += per_article / args.rounds
                print(f"round {number + 1} {side}: {per_article:.3f} s/article", flush=True)
        chosen = articles([PROMPT] * args.articles, "score")
        decoded, kept = (
            score_seconds(pictures, chosen, args.batch, folder, keep) for keep in (False, True)
        )
        print(
            f"score stage, scorer free: {decoded:.4f} s/article decoding each PNG, "
            f"{kept:.4f} s/article with the images the render stage kept"
        )
    for side, seconds in totals.items():
        print(f"{side}: {seconds:.3f} s/article ({seconds - args.render_seconds:+.3f} s)")
    print(f"render_stream_speedup: {totals['inline'] / totals['streamed']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
