"""Model profiles: which weights each runtime loads, and the image shape they render.

``default`` names the real Hugging Face models, each with the revision and the files of its
repository that the farm loads. ``tiny`` names the same four architectures at toy sizes with
random weights, built on this machine in seconds and laid out as a Hugging Face cache under the
real repository ids and file names (:mod:`workers.hub_mirror`), so that the whole farm runs (and
is tested) without any download. Tiny images are noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

ROLES = ("translator", "extractor", "renderer", "lora", "scorer")
DEFAULT_REVISION = "main"


@dataclass(frozen=True)
class RepoFiles:
    """What the farm needs of one model repository.

    Attributes:
        patterns: ``fnmatch`` patterns of the files to fetch (everything else in the repo,
            such as FLUX's single-file checkpoint, is left on the hub).
        required: files that must be present for the model to load.
        weights: alternative weight files, in order of preference; one must be present.
        weight_name: the one weights file to name when loading (a LoRA repo: offline,
            diffusers refuses to guess it).
    """

    patterns: tuple[str, ...]
    required: tuple[str, ...]
    weights: tuple[str, ...] = ()
    weight_name: str | None = None


# The files of the real repositories that the farm loads, per role.
REPO_FILES = {
    "translator": RepoFiles(
        patterns=(
            "config.json",
            "generation_config.json",
            "tokenizer_config.json",
            "vocab.json",
            "source.spm",
            "target.spm",
        ),
        required=("config.json", "vocab.json", "source.spm", "target.spm"),
        weights=("model.safetensors", "pytorch_model.bin"),
    ),
    "extractor": RepoFiles(
        patterns=(
            "config.json",
            "generation_config.json",
            "model*.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
            "tokenizer.model",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "added_tokens.json",
            "chat_template.jinja",
        ),
        required=("config.json", "tokenizer.json", "model.safetensors.index.json"),
    ),
    "renderer": RepoFiles(
        # The diffusers folders only: the repo's root also holds the same weights again as
        # single-file checkpoints (flux1-schnell.safetensors, ae.safetensors), 24 GB more.
        patterns=(
            "model_index.json",
            "scheduler/*",
            "text_encoder/*",
            "text_encoder_2/*",
            "tokenizer/*",
            "tokenizer_2/*",
            "transformer/*",
            "vae/*",
        ),
        required=(
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder_2/config.json",
            "text_encoder_2/model.safetensors.index.json",
            "transformer/config.json",
            "transformer/diffusion_pytorch_model.safetensors.index.json",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ),
    ),
    "lora": RepoFiles(
        patterns=("flux-fashion-lora.safetensors",),
        required=("flux-fashion-lora.safetensors",),
        weight_name="flux-fashion-lora.safetensors",
    ),
    "scorer": RepoFiles(
        patterns=(
            "config.json",
            "preprocessor_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "vocab.json",
            "merges.txt",
        ),
        required=("config.json", "preprocessor_config.json", "tokenizer_config.json"),
        weights=("model.safetensors", "pytorch_model.bin"),
    ),
}


@dataclass(frozen=True)
class Profile:
    """Model ids (hub ids or local folders), revisions and render shape for one profile.

    Attributes:
        revision: the revision of every hub repo not named in ``revisions``.
        revisions: repo id → branch, tag or commit (``FARM_MODEL_REVISIONS``).
        locked: repo id → the commit the lock file pins it to; wins over both revisions.
        lock_file: the lock file ``locked`` was read from, for messages; ``None`` without one.
    """

    name: str
    translator: str
    extractor: str
    renderer: str
    lora: str | None
    scorer: str
    width: int
    height: int
    steps: int
    revision: str = DEFAULT_REVISION
    revisions: Mapping[str, str] = field(default_factory=dict)
    locked: Mapping[str, str] = field(default_factory=dict)
    lock_file: str | None = None

    def revision_for(self, model_id: str) -> str:
        """The revision to load of a hub repo: its locked commit, else its own revision.

        Args:
            model_id: a hub repo id of this profile.

        Returns:
            A commit id, branch or tag.
        """
        return self.locked.get(model_id) or self.asked_revision(model_id)

    def asked_revision(self, model_id: str) -> str:
        """The revision the settings ask for of a hub repo, whatever the lock file pins."""
        return self.revisions.get(model_id, self.revision)

    def model_ids(self) -> dict[str, str]:
        """Role → model id (hub id or local folder), for every model the profile loads.

        Returns:
            The ids in :data:`ROLES` order, without the LoRA when there is none.
        """
        ids = {role: getattr(self, role) for role in ROLES}
        return {role: model_id for role, model_id in ids.items() if model_id}

    def lora_weight_name(self) -> str | None:
        """The LoRA file to load by name: offline, diffusers refuses to guess it in a repo.

        Returns:
            The real LoRA repo's weights file (also in a folder holding it), or ``None``
            for no LoRA or a folder of another layout (diffusers then finds the file).
        """
        name = REPO_FILES["lora"].weight_name
        if not self.lora or (Path(self.lora).is_dir() and not (Path(self.lora) / name).is_file()):
            return None
        return name


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

    The tiny models are the mirror of :func:`workers.hub_mirror.write_tiny_mirror`; the
    profile names their snapshot folders, so no Hugging Face setting is needed to use them.

    Args:
        cache_dir: folder under which the tiny models are cached.

    Returns:
        A profile whose ids are local folders.
    """
    from workers.hub_mirror import tiny_mirror_folders

    folders = tiny_mirror_folders(Path(cache_dir))
    return Profile(
        name="tiny",
        **{role: str(folder) for role, folder in folders.items()},
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
