"""Model profiles: which weights each runtime loads, and the image shape they render.

``default`` names the real Hugging Face models. ``tiny`` names the same four architectures at
toy sizes with random weights, built on this machine in seconds and cached, so that the whole
farm runs (and is tested) without any download. Tiny images are noise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from workers.cache import build_once

# Bump when the tiny builders change, so stale caches are rebuilt instead of reused.
TINY_VERSION = "v1"


@dataclass(frozen=True)
class Profile:
    """Model ids (hub ids or local folders) and render shape for one profile."""

    name: str
    translator: str
    extractor: str
    renderer: str
    lora: str | None
    scorer: str
    width: int
    height: int
    steps: int


DEFAULT = Profile(
    name="default",
    translator="Helsinki-NLP/opus-mt-de-en",
    extractor="microsoft/Phi-3-mini-4k-instruct",
    renderer="black-forest-labs/FLUX.1-schnell",
    lora="aihpi/flux-fashion-lora",
    scorer="openai/clip-vit-large-patch14",
    width=1024,
    height=1024,
    steps=4,
)

PROFILE_NAMES = ("default", "tiny")


def build_tiny_profile(cache_dir: Path) -> Profile:
    """Build (once) and return the tiny random-weight profile.

    Args:
        cache_dir: folder under which the tiny models are cached.

    Returns:
        A profile whose ids are local folders.
    """
    from workers import tiny_image, tiny_text

    root = Path(cache_dir) / "tiny" / TINY_VERSION
    flux = build_once(root / "flux", tiny_image.build_tiny_flux)
    return Profile(
        name="tiny",
        translator=str(build_once(root / "marian", tiny_text.build_tiny_marian)),
        extractor=str(build_once(root / "phi3", tiny_text.build_tiny_phi3)),
        renderer=str(flux),
        lora=str(build_once(root / "lora", lambda out: tiny_image.build_tiny_flux_lora(out, flux))),
        scorer=str(build_once(root / "clip", tiny_image.build_tiny_clip)),
        width=64,
        height=64,
        steps=2,
    )


def resolve_profile(name: str, cache_dir: Path, **overrides: object) -> Profile:
    """Return the named profile with any non-empty overrides applied.

    Args:
        name: ``default`` or ``tiny``.
        cache_dir: where tiny models are built and cached.
        **overrides: Profile fields to replace (``None`` values are ignored).

    Returns:
        The profile.
    """
    if name not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}")
    profile = DEFAULT if name == "default" else build_tiny_profile(cache_dir)
    changes = {key: value for key, value in overrides.items() if value is not None}
    return replace(profile, **changes)
