"""The farm's own runtimes on real-shape random-weight models: speed per image and per article.

Builds FLUX.1-schnell (transformer, T5-XXL, CLIP-L, VAE), Phi-3-mini, CLIP ViT-L/14 and
opus-mt-de-en at their real sizes with random weights directly on the GPU (no download),
wraps them in the farm's ``Translator``, ``Extractor``, ``Renderer`` and ``Scorer``, and
reports seconds per image with the split between text encoding, denoising, VAE decoding and
CLIP scoring, images and articles per hour and peak VRAM, for the renderer modes ``eager``,
``compile`` (regional compilation of the repeated blocks) and ``fp8`` (float8 linear layers,
on top of the compiled blocks when ``compile`` ran first) at batch sizes 1, 2 and 4; and
batched constrained extraction against one article at a time.

Random weights give noise images and gibberish text, but the same shapes, so the same work.
``--tiny`` runs the same code with the tiny profile's models on a CPU in seconds (a smoke
test; its numbers say nothing about a GPU). The last line is ``images_per_hour: N`` for the
fastest render configuration measured.

The render modes are measured first, then the render stage with its PNG writes, then the
text stages (whose static-cache compile is skipped once ``--budget-seconds`` has passed), so
a call cut short keeps the render figures; each figure is printed as it is measured. Peak VRAM
is reported per worker role: the role's peak with the other role's resident weights taken off.

    python -m bench.gpu [--modes eager,compile,fp8] [--batch-sizes 1,2,4] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.catalog import synthetic_rows
from bench.gpu_models import ModelSpec, Parts, build_parts, parameter_count, real_spec, tiny_spec
from bench.gpu_timing import RenderTiming, peak_memory, reset_peak_memory, time_render
from bench.stream import SIDES, Side, articles, run_side
from tasks.registry import role_concurrency
from tasks.settings import Settings
from workers.extractor import Extractor
from workers.profiles import build_tiny_profile
from workers.prompts import clip_prompt, generation_prompt
from workers.renderer import Renderer, check_fp8_support, compile_transformer, quantize_fp8
from workers.scorer import Scorer
from workers.tiny_image import FASHION_CORPUS
from workers.translator import Translator

MODES = ("eager", "compile", "fp8")
# The models each worker role keeps resident (tasks.registry.ROLES): attributes of Parts.
ROLE_MODELS = {"gpu": ("pipeline", "clip"), "text": ("marian", "phi3")}
STAGE_ARTICLES = 8  # articles per side of the render-stage measurement
GIB = 2**30


@dataclass
class TextTiming:
    """Seconds per article of the text stages."""

    translate: float
    lines_per_article: float
    extract_batched: float
    extract_single: float
    extract_batch: int
    extract_static: float | None  # batched, with a static KV cache (compiled on CUDA)
    static_same: bool  # whether it extracted the same attributes (bf16 kernels may differ)
    peak_bytes: int | None  # most memory allocated during the text stages (None on a CPU)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line.

    Args:
        argv: arguments without the program name; ``None`` for ``sys.argv``.

    Returns:
        The options, with the ``--tiny`` defaults filled in.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU (CI)")
    parser.add_argument("--modes", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--batch-sizes", default="1,2,4")
    parser.add_argument("--repeats", type=int, help="timed calls per configuration")
    parser.add_argument("--extract-batch", type=int, help="articles in the batched extraction")
    parser.add_argument("--translate-articles", type=int, default=16)
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=360.0,
        help="skip configurations once this much time has passed",
    )
    parser.add_argument("--model-cache", type=Path, default=Path.home() / ".cache/fashion-farm")
    args = parser.parse_args(argv)
    # fp8 on a CPU only shows the refusal; compiling on a CPU takes minutes, so it is opt-in.
    args.modes = args.modes or ("eager,fp8" if args.tiny else ",".join(MODES))
    args.modes = [mode for mode in MODES if mode in args.modes.split(",")]
    args.batch_sizes = sorted({int(size) for size in args.batch_sizes.split(",")})
    args.repeats = args.repeats or (1 if args.tiny else 2)
    args.extract_batch = args.extract_batch or (2 if args.tiny else 8)
    if args.tiny:
        args.translate_articles = min(args.translate_articles, 2)
    return args


def device_and_dtype(tiny: bool) -> tuple[torch.device, torch.dtype]:
    """Where the benchmark runs.

    Args:
        tiny: CPU smoke test.

    Returns:
        (device, dtype): the CPU in fp32 for ``--tiny``, else the first GPU in bf16.
    """
    if tiny:
        return torch.device("cpu"), torch.float32
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU on this machine; run with --tiny for the CPU smoke test")
    return torch.device("cuda"), torch.bfloat16


def describe(spec: ModelSpec, parts: Parts, device: torch.device, dtype: torch.dtype) -> None:
    """Print the machine and the models built.

    Args:
        spec: the model spec.
        parts: the built models.
        device: their device.
        dtype: their dtype.
    """
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU)"
    print(f"device: {name}, {str(dtype).removeprefix('torch.')}, torch {torch.__version__}")
    sizes = {
        "FLUX transformer": parts.pipeline.transformer,
        "T5 encoder": parts.pipeline.text_encoder_2,
        "Phi-3": parts.phi3,
        "CLIP": parts.clip,
        "Marian": parts.marian,
    }
    listed = ", ".join(f"{key} {_millions(parameter_count(m))}" for key, m in sizes.items())
    print(f"models ({spec.name}, random weights): {listed}")
    if device.type == "cuda":
        print(f"weights resident: {torch.cuda.memory_allocated(device) / GIB:.1f} GiB")


def _millions(count: int) -> str:
    return f"{count / 1e6:.1f}M" if count >= 1e5 else f"{count / 1e3:.1f}k"


def quiet_libraries() -> None:
    """Silence per-call library chatter (prompt truncation notices, progress bars)."""
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    diffusers.logging.set_verbosity_error()


def time_text_stages(
    parts: Parts, spec: ModelSpec, device: torch.device, args, deadline: float
) -> TextTiming:
    """Translate a batch of articles; extract one at a time, then as one batch, on the same
    texts; then that batch with a static KV cache unless ``deadline`` has passed.

    Args:
        parts: the built models.
        spec: the model spec (tokenizers, translation length).
        device: where the models run.
        args: the options.
        deadline: ``time.monotonic()`` after which the static-cache compile is skipped.

    Returns:
        The timings, each printed as it is measured.
    """
    reset_peak_memory(device)
    translator = Translator(
        parts.marian, spec.marian_tokenizer, device, max_new_tokens=spec.translation_tokens
    )
    german = [row.source_text for row in synthetic_rows(args.translate_articles)]
    translator(german[:1])  # warm-up
    translated = translator(german)
    lines = sum(len(text.splitlines()) for text in german) / len(german)
    print(f"translation: {translated.seconds / len(german):.4f} s/article ({lines:.1f} lines)",
          flush=True)  # fmt: skip
    extractor = Extractor(parts.phi3, spec.phi3_tokenizer, device, max_batch=1)
    english = [FASHION_CORPUS[i % len(FASHION_CORPUS)] for i in range(args.extract_batch)]
    extractor.warm_up(english[0])
    # One at a time and batched over the same texts: the ratio is batching's alone.
    single = extractor(english)
    extractor.max_batch = args.extract_batch
    batched = extractor(english)
    timing = TextTiming(
        translate=translated.seconds / len(german),
        lines_per_article=lines,
        extract_batched=batched.seconds / len(english),
        extract_single=single.seconds / len(english),
        extract_batch=len(english),
        extract_static=None,
        static_same=False,
        peak_bytes=None,
    )
    print_extraction(timing)
    if time.monotonic() > deadline:
        print("  static KV cache: skipped, time budget spent", flush=True)
    else:
        static = time_static_cache(extractor, english)
        if static is not None:
            timing.extract_static = static.seconds / len(english)
            timing.static_same = static.attributes == batched.attributes
            print_static(timing)
    timing.peak_bytes = peak_memory(device)
    return timing


def print_extraction(text: TextTiming) -> None:
    """The extraction line: one article at a time against one batch, same texts."""
    ratio = text.extract_single / text.extract_batched
    print(
        f"extraction: one at a time {text.extract_single:.3f} s/article, batch of "
        f"{text.extract_batch} {text.extract_batched:.3f} s/article: batching {ratio:.2f}x",
        flush=True,
    )


def print_static(text: TextTiming) -> None:
    """The static KV cache's line."""
    print(
        f"extraction, batch of {text.extract_batch} with a static KV cache (compiled on "
        f"CUDA): {text.extract_static:.3f} s/article, "
        f"{text.extract_batched / text.extract_static:.2f}x the dynamic cache, "
        f"{'the same' if text.static_same else 'different'} attributes",
        flush=True,
    )


def time_static_cache(extractor: Extractor, english: list[str]):
    """The same batch again with a static KV cache, compiled (on CUDA) off the clock.

    Args:
        extractor: the extractor, already set to the batch size.
        english: the batch.

    Returns:
        The extraction result, or None when compiling or running failed (printed; the
        render figures still follow).
    """
    extractor.static_cache = True
    try:
        extractor.warm_up(english[0])
        return extractor(english)
    except Exception as error:  # an experiment must not cost the benchmark's main figure
        print(f"  static KV cache failed: {type(error).__name__}: {error}", flush=True)
        return None
    finally:
        extractor.static_cache = False


def apply_mode(mode: str, renderer: Renderer, applied: list[str]) -> str:
    """Switch the renderer into ``mode``, on top of the modes applied before.

    Args:
        mode: ``eager``, ``compile`` or ``fp8``.
        renderer: the farm's renderer.
        applied: modes applied so far (updated).

    Returns:
        The label of the resulting configuration. Raises ``ValueError`` when not possible.
    """
    transformer = renderer.pipeline.transformer
    if mode == "compile":
        compile_transformer(transformer)
    elif mode == "fp8":
        check_fp8_support(renderer.device)
        quantize_fp8(transformer)
    applied.append(mode)
    return "+".join(m for m in applied if m != "eager") or "eager"


def time_render_modes(
    renderer: Renderer, scorer: Scorer, prompts: list[tuple[str, str]], args, deadline: float
) -> tuple[list[RenderTiming], list[str]]:
    """Time every mode at every batch size, skipping what fails or runs out of time.

    Args:
        renderer: the farm's renderer.
        scorer: the farm's scorer.
        prompts: (generation prompt, CLIP prompt) pairs, at least the largest batch.
        args: the options.
        deadline: ``time.monotonic()`` after which configurations are skipped.

    Returns:
        (timings, notes on what was skipped and why); each is printed as it comes.
    """
    timings, notes, applied = [], _Notes(), []
    for mode in args.modes:
        if time.monotonic() > deadline:
            notes.append(f"{mode}: skipped, time budget spent")
            continue
        try:
            label = apply_mode(mode, renderer, applied)
        except ValueError as error:
            notes.append(f"{mode}: skipped, {error}")
            continue
        for batch in args.batch_sizes:
            if time.monotonic() > deadline:
                notes.append(f"{label} batch {batch}: skipped, time budget spent")
                continue
            try:
                timing = time_render(label, renderer, scorer, prompts[:batch], args.repeats)
            except Exception as error:  # e.g. out of memory, a compiler error: report, go on
                notes.append(f"{label} batch {batch}: failed, {type(error).__name__}: {error}")
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            timings.append(timing)
            print_render(timing, flush=True)
    return timings, notes


class _Notes(list):
    """Notes on what was skipped, each printed as it is added."""

    def append(self, note: str) -> None:
        print(f"  {note}", flush=True)
        super().append(note)


def print_render(timing: RenderTiming, flush: bool = False) -> None:
    """One line per render configuration.

    Args:
        timing: its figures.
        flush: flush stdout.
    """
    split = ", ".join(f"{stage} {seconds:.3f}" for stage, seconds in timing.split.items())
    peak = "n/a (CPU)" if timing.peak_bytes is None else f"{timing.peak_bytes / GIB:.1f} GiB"
    print(
        f"  {timing.mode:<12} batch {timing.batch}: {timing.seconds_per_image:.3f} s/image "
        f"({split}) | CLIP score {timing.score_seconds_per_image:.4f} s/image | "
        f"{timing.images_per_hour:.0f} images/h | peak VRAM {peak}",
        flush=flush,
    )


def time_render_stage(renderer: Renderer, prompts: list[tuple[str, str]]) -> dict[str, Side]:
    """The farm's render stage with its PNG writes, as ``bench.stream`` runs it.

    Caller threads feed one model executor; the PNG is written on the model thread
    (``inline``) or by the caller while the next article renders (``streamed``).

    Args:
        renderer: the farm's renderer, in the configuration to measure (already warm).
        prompts: (generation prompt, CLIP prompt) pairs, cycled over the articles.

    Returns:
        Side → seconds per article and the renderer's idle time between renders.
    """
    threads = role_concurrency("gpu", Settings())
    chosen = [prompts[index % len(prompts)][0] for index in range(STAGE_ARTICLES)]
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as scratch:
        return {
            side: run_side(side, renderer, articles(chosen, side), Path(scratch), threads)
            for side in SIDES
        }


def render_prompts(count: int) -> list[tuple[str, str]]:
    """The farm's render and CLIP prompts, over attributes written from the fashion corpus.

    The renders come before the text stages (a call cut short keeps them), so their prompts
    do not wait for an extraction; a prompt's length, not its words, sets the work.

    Args:
        count: prompts wanted.

    Returns:
        (generation prompt, CLIP prompt) pairs.
    """
    prompts = []
    for index in range(count):
        text = FASHION_CORPUS[index % len(FASHION_CORPUS)].rstrip(".")
        head, _, rest = text.partition(" with ")
        attrs = {
            "product_type": head,
            "key_visual_features": rest or head,
            "color_material_details": text,
            "design_aspects": rest or text,
        }
        prompts.append((generation_prompt(attrs), clip_prompt(attrs)))
    return prompts


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers, as they are stored now (fp8 included)."""
    return sum(tensor_bytes(tensor) for tensor in [*module.parameters(), *module.buffers()])


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor stores: a tensor subclass (torchao's float8 weights) its inner tensors'."""
    data = tensor.data if isinstance(tensor, torch.nn.Parameter) else tensor
    if type(data) is not torch.Tensor and hasattr(data, "__tensor_flatten__"):
        names, _ = data.__tensor_flatten__()
        return sum(tensor_bytes(getattr(data, name)) for name in names)
    return data.numel() * data.element_size()


def role_weights(parts: Parts, role: str) -> int:
    """Bytes of the weights a worker role keeps resident."""
    modules = [getattr(parts, name) for name in ROLE_MODELS[role]]
    return sum(
        sum(weight_bytes(part) for part in module.components.values()
            if isinstance(part, torch.nn.Module))
        if hasattr(module, "components") else weight_bytes(module)
        for module in modules
    )  # fmt: skip


def print_role_peaks(parts: Parts, timings: list[RenderTiming], text: TextTiming) -> None:
    """Peak VRAM per worker role: its measured peak less the other role's resident weights.

    All models share the benchmark's one card; a role's own process holds only its own.
    """
    render_peaks = [t.peak_bytes for t in timings if t.peak_bytes is not None]
    if not render_peaks or text.peak_bytes is None:
        print("peak VRAM per worker role: n/a (CPU)", flush=True)
        return
    gpu = max(render_peaks) - role_weights(parts, "text")
    text_role = text.peak_bytes - role_weights(parts, "gpu")
    print(
        f"peak VRAM per worker role: gpu (render + score) {gpu / GIB:.1f} GiB, "
        f"text (translate + extract) {text_role / GIB:.1f} GiB",
        flush=True,
    )


def report_render(timings: list[RenderTiming], stage: dict[str, Side]) -> RenderTiming:
    """Print the render modes against the first, and the render stage; return the fastest.

    Args:
        timings: every render configuration measured.
        stage: the render stage's figures, ``inline`` and ``streamed``.
    """
    first = {t.batch: t for t in timings if t.mode == timings[0].mode}
    for timing in timings:
        base = first.get(timing.batch)
        if timing.mode != timings[0].mode and base is not None:
            speedup = base.seconds_per_image / timing.seconds_per_image
            print(f"{timing.mode} vs {base.mode}, batch {timing.batch}: {speedup:.2f}x")
    best = min(timings, key=lambda t: t.seconds_per_image)
    inline, streamed = stage["inline"], stage["streamed"]
    print(
        f"render stage with PNG writes ({timings[-1].mode}): PNG on the model thread "
        f"{inline.seconds_per_article:.3f} s/article, renderer idle "
        f"{inline.idle_fraction:.1%} of render time; PNG by the message's thread "
        f"{streamed.seconds_per_article:.3f} s/article, idle {streamed.idle_fraction:.1%}"
    )
    gpu_seconds = best.seconds_per_image + best.score_seconds_per_image
    print(
        f"fastest: {best.mode} batch {best.batch}; render + score on one GPU: "
        f"{3600 / gpu_seconds:.0f} articles/h",
        flush=True,
    )
    return best


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark.

    Args:
        argv: command-line arguments.

    Returns:
        The exit code.
    """
    args = parse_args(argv)
    quiet_libraries()
    started = time.monotonic()
    device, dtype = device_and_dtype(args.tiny)
    profile = build_tiny_profile(args.model_cache)
    spec = tiny_spec(profile) if args.tiny else real_spec(profile)
    parts = build_parts(spec, device, dtype)
    print(f"built models in {time.monotonic() - started:.1f}s")
    describe(spec, parts, device, dtype)
    renderer = Renderer(parts.pipeline, device, spec.width, spec.height, spec.steps)
    scorer = Scorer(parts.clip, spec.clip_processor, device)
    prompts = render_prompts(max(args.batch_sizes))
    print(
        f"render + score, {spec.width}x{spec.height}, {spec.steps} steps, "
        f"{args.repeats} timed calls each (seconds per image):",
        flush=True,
    )
    deadline = started + args.budget_seconds
    timings, _notes = time_render_modes(renderer, scorer, prompts, args, deadline)
    if not timings:
        raise SystemExit("no render configuration could be measured")
    best = report_render(timings, time_render_stage(renderer, prompts))
    text = time_text_stages(parts, spec, device, args, deadline)
    print_role_peaks(parts, timings, text)
    print(f"images_per_hour: {best.images_per_hour:.1f}")
    print(f"total {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
