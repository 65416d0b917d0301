"""``farm doctor``: what a worker on this machine will do with a profile's models, and why.

It reads only what is cheap to read (the device, its memory, the models' files in the cache)
and decides the renderer's placement with the same function the renderer uses, so what it
prints is what a worker would do. ``try_models`` then loads every model and runs one article
through all four, for a machine's first check.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workers.devices import default_dtype, resolve_device
from workers.hub import check_profile, describe_missing, size_text
from workers.profiles import Profile

SAMPLE_TEXT = "Ein rotes Sommerkleid aus Baumwolle mit kurzen Ärmeln und rundem Ausschnitt."


@dataclass
class Examination:
    """What ``farm doctor`` found: facts to print, and problems that stop a worker."""

    facts: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def host_memory() -> tuple[int, int]:
    """This machine's (total, available) memory in bytes."""
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page


def device_facts(device: torch.device) -> list[tuple[str, str]]:
    """The device, its memory and what it supports (bf16, fp8, compile)."""
    from workers.fast_path import check_fp8_support

    total, available = host_memory()
    facts = [
        ("torch / diffusers", f"{torch.__version__} / {importlib.metadata.version('diffusers')}"),
        ("transformers", importlib.metadata.version("transformers")),
        ("host memory", f"{size_text(available)} available of {size_text(total)}"),
        ("device", str(device)),
    ]
    if device.type == "cuda":
        free, whole = torch.cuda.mem_get_info(device)
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
        facts += [
            ("card", f"{torch.cuda.get_device_name(device)} (compute capability {capability})"),
            ("card memory", f"{size_text(free)} free of {size_text(whole)}"),
        ]
    facts.append(("dtype", str(default_dtype(device)).removeprefix("torch.")))
    try:
        check_fp8_support(device)
        facts.append(("fp8 (FARM_RENDER_FP8)", "available"))
    except ValueError as error:
        facts.append(("fp8 (FARM_RENDER_FP8)", f"unavailable: {error}"))
    facts.append(("compile (FARM_RENDER_COMPILE)", compile_support(device)))
    return facts


def compile_support(device: torch.device) -> str:
    """Whether ``torch.compile`` can generate kernels for ``device``, in words."""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "unavailable: triton is not installed"
        return "available (triton found)"
    return "available (C++ kernels on the CPU; little to gain there)"


def examine(profile: Profile, settings) -> Examination:
    """Collect the facts about this machine, the profile's models and the renderer's placement.

    Args:
        profile: the profile a worker would load.
        settings: the farm's settings (device, render options).

    Returns:
        The facts, and the problems that would stop a worker at boot.
    """
    report = Examination()
    try:
        device = resolve_device(settings.device)
    except ValueError as error:
        report.problems.append(str(error))
        return report
    report.facts += device_facts(device)
    checks = check_profile(profile)
    for check in checks:
        state = f"present, {size_text(check.size)}" if check.present else "MISSING"
        report.facts.append((check.role, f"{check.model_id} ({check.revision}): {state}"))
    missing = describe_missing(checks, profile)
    if missing:
        report.problems.append(missing)
        return report
    report.facts += placement_facts(profile, settings, device, checks)
    return report


def shares_the_card(settings, device) -> bool:
    """Whether the worker role's text models sit on the card beside the image models."""
    return device.type == "cuda" and settings.worker_role == "all"


def text_on_card(settings, device, text_checks) -> tuple[int, str]:
    """The card memory the role's text models take beside the renderer, and the extractor's
    fast path in words.

    Args:
        settings: the farm's settings (role, text batch, static cache switch).
        device: the worker's device.
        text_checks: the translator's and extractor's model checks.

    Returns:
        (bytes: their weights, and the static KV cache a warm-up allocates before the
        renderer loads; 0 where they are not on the card), the fast path in words.
    """
    from workers.extractor import STATIC_CACHE_TOKENS
    from workers.fast_path import decide_static_cache
    from workers.placement import kv_cache_bytes, model_bytes

    dtype, batch = default_dtype(device), settings.text_batch()
    static, reason = decide_static_cache(device, settings.extract_static_cache)
    words = f"static KV cache {('off', 'on')[static]} ({reason}); {batch} articles per call"
    if not shares_the_card(settings, device):
        return 0, words
    held = sum(model_bytes(check.folder, dtype) for check in text_checks)
    if static:
        extractor = next(check.folder for check in text_checks if check.role == "extractor")
        held += kv_cache_bytes(extractor, dtype, batch * STATIC_CACHE_TOKENS)
    return held, words


def placement_facts(profile: Profile, settings, device, checks) -> list[tuple[str, str]]:
    """Where the renderer's weights will live, why, and the host memory loading needs.

    A worker of role ``all`` on a card loads the text models first, so the renderer is
    placed on what they leave free; the decision here does the same.
    """
    from workers.fast_path import decide
    from workers.placement import explain_placement, host_bytes_at_start

    folder = next(check.folder for check in checks if check.role == "renderer")
    dtype, mode = default_dtype(device), settings.render_memory_mode
    text = [check for check in checks if check.role in ("translator", "extractor")]
    held, extract_path = text_on_card(settings, device, text)
    path, (placement, sizes, reason) = decide(
        device, settings.render_compile, settings.render_fp8,
        place=lambda fp8: explain_placement(Path(folder), device, dtype, fp8, mode, held),
        placement_of=lambda explained: explained[0],
    )  # fmt: skip
    text_models = sum(check.size for check in text)
    where = f"on the card beside the renderer ({size_text(held)})" if held else "not on its card"
    return [
        ("worker role", f"{settings.worker_role} (FARM_WORKER_ROLE): text models {where}"),
        ("renderer components", ", ".join(f"{n} {size_text(s)}" for n, s in sizes.items())),
        ("memory mode", f"{placement}: {reason}"),
        ("render fast path", f"{str(dtype).removeprefix('torch.')} weights; {path.describe()}"),
        ("extract fast path", extract_path),
        (
            "host memory at start-up",
            f"{size_text(host_bytes_at_start(placement, sizes))} per render worker",
        ),
        ("text models (files)", size_text(text_models)),
    ]


def try_models(profile: Profile, settings) -> list[tuple[str, str]]:
    """Load every model of the profile and run one sample article through all four.

    The models load as the worker role (``FARM_WORKER_ROLE``) holds them: a worker of role
    ``all`` on a card keeps its text models there while the image models load beside them;
    otherwise the text models are freed first, as a text worker and a GPU worker each hold
    their own. The text stages' rate is measured on a full batch of distinct descriptions.

    Args:
        profile: the profile.
        settings: the farm's settings (device, role, batch size, output folder, render options).

    Returns:
        Facts: load times, the text rate, each stage's time, the score and the image's path.
    """
    from workers.devices import release_memory
    from workers.loader import load_runtimes
    from workers.prompts import clip_prompt, generation_prompt

    started = time.perf_counter()
    # The extractor loads with the worker's options: its rate depends on the batch and cache.
    text = load_runtimes(
        ("translate", "extract"), profile, settings.device, None, settings.extract_options()
    )
    facts = [("loaded the text models", f"{time.perf_counter() - started:.1f} s")]
    facts.append(("text stages", describe_text_rate(text, settings.text_batch())))
    english = text.translate([SAMPLE_TEXT])
    attributes = text.extract(english.texts)
    attrs = attributes.attributes[0]
    if not shares_the_card(settings, resolve_device(settings.device)):
        del text
        release_memory()
    started = time.perf_counter()
    options = settings.render_options()
    images = load_runtimes(("render", "score"), profile, settings.device, options)
    facts.append(("loaded the image models", f"{time.perf_counter() - started:.1f} s"))
    image = images.render([generation_prompt(attrs)], [0])
    score = images.score(image.images, [clip_prompt(attrs)])
    out = Path(settings.output_dir) / "doctor.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    image.images[0].save(out)
    return facts + [
        ("translate", f"{english.seconds:.2f} s: {english.texts[0]!r}"),
        ("extract", f"{attributes.seconds:.2f} s: {attrs}"),
        ("render", f"{image.seconds:.2f} s, {image.images[0].size[0]}x{image.images[0].size[1]}"),
        ("score", f"{score.seconds:.2f} s: CLIP {score.scores[0]:.2f}"),
        ("image", str(out)),
    ]


def text_rate(runtimes, batch_size: int) -> tuple[float, float]:
    """Time one full batch of distinct descriptions through translation and extraction.

    Args:
        runtimes: loaded runtimes with ``translate`` and ``extract``.
        batch_size: articles per model call, as the worker batches them.

    Returns:
        (seconds for the batch, articles per hour of one process at that pace).
    """
    # Distinct texts: the runtimes read each distinct text once per call.
    texts = [f"{SAMPLE_TEXT} Artikel {number}." for number in range(1, batch_size + 1)]
    started = time.perf_counter()
    english = runtimes.translate(texts)
    runtimes.extract(english.texts)
    seconds = time.perf_counter() - started
    return seconds, 3600 * batch_size / seconds


def describe_text_rate(runtimes, batch_size: int) -> str:
    """:func:`text_rate` in words: the batch's time and the rate it sets."""
    seconds, rate = text_rate(runtimes, batch_size)
    return (
        f"{batch_size} articles translated and extracted in {seconds:.1f} s: about "
        f"{rate:,.0f} articles/hour per process"
    )
