"""Load the model runtimes a worker process needs, once, before it takes work."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from workers.devices import default_dtype, resolve_device
from workers.hub import is_local
from workers.profiles import Profile

logger = logging.getLogger("farm.workers")

STAGES = ("translate", "extract", "render", "score")


@dataclass
class Runtimes:
    """The loaded runtimes of one process, by stage name; ``None`` where not loaded."""

    profile: Profile
    translate: object | None = None
    extract: object | None = None
    render: object | None = None
    score: object | None = None


def load_runtimes(
    stages: Iterable[str],
    profile: Profile,
    device: str = "auto",
    render_options: Mapping[str, object] | None = None,
    extract_options: Mapping[str, object] | None = None,
) -> Runtimes:
    """Load the runtimes for ``stages``; any failure raises (a worker must not start half-ready).

    Args:
        stages: stage names whose models to load.
        profile: which weights to load.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        render_options: keyword options of ``Renderer.from_pretrained`` (``compile``,
            ``fp8``, ``memory_mode``, ...).
        extract_options: keyword options of ``Extractor.from_pretrained`` (``static_cache``,
            ``max_batch``, ...).

    Returns:
        The loaded runtimes.
    """
    quiet_library_logs()
    wanted = set(stages)
    unknown = wanted - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages: {', '.join(sorted(unknown))}")
    torch_device = resolve_device(device)
    dtype = default_dtype(torch_device)
    runtimes = Runtimes(profile=profile)
    options = {"render": dict(render_options or {}), "extract": dict(extract_options or {})}
    for stage in STAGES:
        if stage in wanted:
            started = time.perf_counter()
            loaded = _LOADERS[stage](profile, torch_device, dtype, **options.get(stage, {}))
            setattr(runtimes, stage, loaded)
            logger.info(
                "loaded %s model on %s in %.1fs", stage, torch_device, time.perf_counter() - started
            )
    return runtimes


def quiet_library_logs() -> None:
    """Silence the model libraries' per-call notices and progress bars (errors still show)."""
    # Per-call chatter (prompt truncation notices, weight-loading progress bars) would drown
    # the worker's own log at thousands of articles; real errors still come through.
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    diffusers.logging.set_verbosity_error()
    diffusers.logging.disable_progress_bar()


def revision_of(profile: Profile, model_id: str) -> dict:
    """``revision=`` for a hub repo id (the profile pins it), nothing for a local folder."""
    return {} if is_local(model_id) else {"revision": profile.revision}


def _translator(profile, device, dtype):
    from workers.translator import Translator

    model_id = profile.translator
    return Translator.from_pretrained(
        model_id, device=device, dtype=dtype, **revision_of(profile, model_id)
    )


def _extractor(profile, device, dtype, **options):
    from workers.extractor import Extractor

    model_id = profile.extractor
    options |= revision_of(profile, model_id)
    return Extractor.from_pretrained(model_id, device=device, dtype=dtype, **options)


def _renderer(profile, device, dtype, **options):
    from workers.renderer import Renderer

    return Renderer.from_pretrained(
        profile.renderer,
        lora=profile.lora,
        lora_weight_name=profile.lora_weight_name(),
        device=device,
        dtype=dtype,
        width=profile.width,
        height=profile.height,
        steps=profile.steps,
        **options,
        **revision_of(profile, profile.renderer),
    )


def _scorer(profile, device, _dtype):
    from workers.scorer import Scorer

    # Not the device's dtype: CLIP scores are compared against a threshold and each other, and
    # bf16 rounds them too coarsely for that. The scorer loads in float32 itself.
    return Scorer.from_pretrained(
        profile.scorer, device=device, **revision_of(profile, profile.scorer)
    )


_LOADERS = {
    "translate": _translator,
    "extract": _extractor,
    "render": _renderer,
    "score": _scorer,
}
