"""Load the model runtimes a worker process needs, once, before it takes work.

Each hub repo loads the one commit resolved as the process starts (the lock file's, else
the one its revision's ref names in the cache); :attr:`Runtimes.model_commits` keeps them as
plain data, which the stages record with their results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from workers.devices import default_dtype, resolve_device
from workers.hub import STAGE_ROLES, model_commits
from workers.profiles import Profile

logger = logging.getLogger("farm.workers")

STAGES = ("translate", "extract", "render", "score")


@dataclass
class Runtimes:
    """The loaded runtimes of one process, by stage name; ``None`` where not loaded.

    ``model_commits`` is role → ``{"repo": id or folder, "commit": id or "local"}`` of the
    models loaded (:func:`workers.hub.model_commits`); empty for runtimes of a factory.
    """

    profile: Profile
    translate: object | None = None
    extract: object | None = None
    render: object | None = None
    score: object | None = None
    model_commits: dict[str, dict] = field(default_factory=dict)


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
    roles = {role for stage in wanted for role in STAGE_ROLES[stage]}
    commits = model_commits(profile, roles)
    runtimes = Runtimes(profile=profile, model_commits=commits)
    options = {"render": dict(render_options or {}), "extract": dict(extract_options or {})}
    for stage in STAGES:
        if stage in wanted:
            started = time.perf_counter()
            loaded = _LOADERS[stage](
                profile, commits, torch_device, dtype, **options.get(stage, {})
            )
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


def revision_of(commits: Mapping[str, dict], role: str, profile: Profile) -> dict:
    """``revision=`` for a hub repo: the commit resolved for it; nothing for a local folder.

    Args:
        commits: from :func:`workers.hub.model_commits`.
        role: the model's role.
        profile: the profile; its revision stands in for a commit the cache could not name
            (the load then fails, saying what is missing).

    Returns:
        Keyword arguments for the model's ``from_pretrained``.
    """
    entry = commits[role]
    if entry["commit"] == "local":
        return {}
    return {"revision": entry["commit"] or profile.revision_for(entry["repo"])}


def _translator(profile, commits, device, dtype):
    from workers.translator import Translator

    return Translator.from_pretrained(
        profile.translator,
        device=device,
        dtype=dtype,
        **revision_of(commits, "translator", profile),
    )


def _extractor(profile, commits, device, dtype, **options):
    from workers.extractor import Extractor
    from workers.fast_path import decide_static_cache

    static, reason = decide_static_cache(device, options.get("static_cache", False))
    logger.info("extractor on %s: static KV cache %s (%s)", device, ("off", "on")[static], reason)
    options["static_cache"] = static
    options |= revision_of(commits, "extractor", profile)
    return Extractor.from_pretrained(profile.extractor, device=device, dtype=dtype, **options)


def _renderer(profile, commits, device, dtype, **options):
    from workers.renderer import Renderer

    lora_revision = revision_of(commits, "lora", profile).get("revision") if profile.lora else None
    return Renderer.from_pretrained(
        profile.renderer,
        lora=profile.lora,
        lora_weight_name=profile.lora_weight_name(),
        lora_revision=lora_revision,
        device=device,
        dtype=dtype,
        width=profile.width,
        height=profile.height,
        steps=profile.steps,
        **options,
        **revision_of(commits, "renderer", profile),
    )


def _scorer(profile, commits, device, _dtype):
    from workers.scorer import Scorer

    # Not the device's dtype: CLIP scores are compared against a threshold and each other, and
    # bf16 rounds them too coarsely for that. The scorer loads in float32 itself.
    return Scorer.from_pretrained(
        profile.scorer, device=device, **revision_of(commits, "scorer", profile)
    )


_LOADERS = {
    "translate": _translator,
    "extract": _extractor,
    "render": _renderer,
    "score": _scorer,
}
