"""The profile's models in the Hugging Face cache: what is there, and fetching what is not.

Workers never download at boot: ``farm models fetch`` puts exactly the files a profile loads
into the cache once (``REPO_FILES``), and a worker whose model is missing stops before it takes
work, naming the command that fetches it. Local folders (the ``tiny`` profile, or a model id
overridden by a path) are checked the same way, without a revision.

Each hub repo loads one commit: the one the lock file pins (:mod:`workers.lock`), else the
one its revision's ref names in the cache, resolved once at boot (:func:`model_commits`) so
that what a worker records is what it loaded.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from workers.profiles import REPO_FILES, Profile

COMMIT_ID = re.compile(r"[0-9a-f]{40}")
# Which models each stage loads.
STAGE_ROLES = {
    "translate": ("translator",),
    "extract": ("extractor",),
    "render": ("renderer", "lora"),
    "score": ("scorer",),
}


@dataclass
class ModelCheck:
    """What the cache holds of one model.

    Attributes:
        role: ``translator``, ``extractor``, ``renderer``, ``lora`` or ``scorer``.
        model_id: hub repo id or local folder.
        revision: the revision looked for: the locked commit, else the branch, tag or commit
            asked for (``local`` for a folder).
        folder: the snapshot (or local) folder, ``None`` when the repo is not cached at all.
        missing: required files that are not there.
        size: bytes of the files the farm loads from it.
        commit: the snapshot's commit when there is one (``local`` for a folder).
        locked: whether the lock file pins ``revision``.
    """

    role: str
    model_id: str
    revision: str
    folder: Path | None
    missing: list[str] = field(default_factory=list)
    size: int = 0
    commit: str | None = None
    locked: bool = False

    @property
    def present(self) -> bool:
        """Whether the model can be loaded from the cache."""
        return self.folder is not None and not self.missing


def size_text(size: float) -> str:
    """Bytes for people, one decimal: GiB, or MiB / KiB for the small (tiny models, a LoRA)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 2**10:.1f} KiB"


def hub_cache() -> Path:
    """The Hugging Face hub cache this process uses (``HF_HUB_CACHE``, or ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_local(model_id: str) -> bool:
    """Whether ``model_id`` names a local folder rather than a hub repo."""
    return Path(model_id).expanduser().is_dir() or model_id.startswith(("/", ".", "~"))


def repo_folder(cache: Path, repo_id: str) -> Path:
    """The cache folder of a model repo (``models--org--name``)."""
    return cache / f"models--{repo_id.replace('/', '--')}"


def snapshot_folder(repo_id: str, revision: str, cache: Path | None = None) -> Path | None:
    """The cached snapshot of ``repo_id`` at ``revision``, without touching the network.

    Args:
        repo_id: e.g. ``black-forest-labs/FLUX.1-schnell``.
        revision: a branch or tag (looked up in ``refs/``) or a commit id.
        cache: the hub cache; :func:`hub_cache` when omitted.

    Returns:
        The snapshot folder, or ``None`` when the cache does not hold that revision.
    """
    repo = repo_folder(cache or hub_cache(), repo_id)
    commit = revision
    if not COMMIT_ID.fullmatch(revision):
        ref = repo / "refs" / revision
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    folder = repo / "snapshots" / commit
    return folder if folder.is_dir() else None


def wanted(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether a repo file name matches one of the patterns."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def missing_files(folder: Path, role: str) -> list[str]:
    """Required files of a role's model that ``folder`` lacks (shards named by an index too).

    Args:
        folder: a snapshot or local model folder.
        role: which model it is (:data:`workers.profiles.REPO_FILES`).

    Returns:
        The missing file names, in a stable order.
    """
    spec = REPO_FILES[role]
    missing = [name for name in spec.required if not (folder / name).is_file()]
    for index in spec.required:
        if index.endswith(".index.json") and (folder / index).is_file():
            shards = set(json.loads((folder / index).read_text())["weight_map"].values())
            base = Path(index).parent
            missing += sorted(str(base / s) for s in shards if not (folder / base / s).is_file())
    if spec.weights and not any((folder / name).is_file() for name in spec.weights):
        missing.append(" or ".join(spec.weights))
    return missing


def loaded_files(folder: Path, role: str) -> list[Path]:
    """The files of ``folder`` that the farm loads for ``role``."""
    spec = REPO_FILES[role]
    patterns = spec.patterns + spec.weights
    return [
        path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and wanted(path.relative_to(folder).as_posix(), patterns)
    ]


def check_model(
    role: str, model_id: str, revision: str, cache: Path | None = None, locked: bool = False
) -> ModelCheck:
    """Check one model of a profile in the cache (or its local folder).

    Args:
        role: the model's role in the profile.
        model_id: hub repo id or local folder.
        revision: the revision the profile loads (ignored for a folder).
        cache: the hub cache; :func:`hub_cache` when omitted.
        locked: whether ``revision`` is a commit the lock file pins (for messages).

    Returns:
        What is there and what is missing.
    """
    if is_local(model_id):
        folder = Path(model_id).expanduser()
        check = ModelCheck(role, model_id, "local", folder if folder.is_dir() else None)
        check.commit = "local"
    else:
        folder = snapshot_folder(model_id, revision, cache)
        check = ModelCheck(role, model_id, revision, folder, locked=locked)
        check.commit = folder.name if folder else None
    if check.folder is None:
        return check
    check.missing = missing_files(check.folder, role)
    check.size = sum(path.stat().st_size for path in loaded_files(check.folder, role))
    return check


def check_profile(profile: Profile, stages=None, cache: Path | None = None) -> list[ModelCheck]:
    """Check every model a profile loads for ``stages`` (all four stages when omitted).

    Args:
        profile: the profile.
        stages: stage names whose models matter.
        cache: the hub cache; :func:`hub_cache` when omitted.

    Returns:
        One check per model, in the profile's role order.
    """
    roles = {role for stage in (stages or STAGE_ROLES) for role in STAGE_ROLES[stage]}
    return [
        check_model(role, model_id, profile.revision_for(model_id), cache,
                    locked=model_id in profile.locked)
        for role, model_id in profile.model_ids().items()
        if role in roles
    ]  # fmt: skip


def fetch_command(profile: Profile) -> str:
    """The command that fetches a profile's models into the cache."""
    return f"farm --profile {profile.name} models fetch"


def describe_missing(checks: list[ModelCheck], profile: Profile) -> str:
    """One message naming every missing model, where it was looked for and how to fetch it.

    Args:
        checks: from :func:`check_profile`.
        profile: the profile checked.

    Returns:
        The message, or ``""`` when nothing is missing.
    """
    lines = [
        f"{check.role} {check.model_id} ({_which(check, profile)}) "
        + (f"lacks {', '.join(check.missing)}" if check.folder else "is not there")
        for check in checks
        if not check.present
    ]
    if not lines:
        return ""
    where = "" if all(is_local(c.model_id) for c in checks) else f" in {hub_cache()}"
    return (
        f"models not found{where}: " + "; ".join(lines) + f". Fetch them with: "
        f"{fetch_command(profile)} (HF_HOME or HF_HUB_CACHE choose the cache)"
    )


def _which(check: ModelCheck, profile: Profile) -> str:
    """The revision a check looked for, in words: a locked commit says where it is locked."""
    if check.locked:
        return f"commit {check.revision}, locked in {profile.lock_file}"
    return check.revision


def resolve_commit(model_id: str, revision: str, cache: Path | None = None) -> str | None:
    """The commit a model loads, from the cache alone.

    Args:
        model_id: hub repo id or local folder.
        revision: branch, tag or commit of a hub repo.
        cache: the hub cache; :func:`hub_cache` when omitted.

    Returns:
        The commit id; ``local`` for a folder; ``None`` when the cache has no such ref.
    """
    if is_local(model_id):
        return "local"
    folder = snapshot_folder(model_id, revision, cache)
    return folder.name if folder else None


def model_commits(profile: Profile, roles=None, cache: Path | None = None) -> dict[str, dict]:
    """Role → ``{"repo", "commit"}`` of the models a profile loads, resolved in the cache.

    Args:
        profile: the profile (its locked commits, else its revisions).
        roles: the roles to resolve; all the profile loads when omitted.
        cache: the hub cache; :func:`hub_cache` when omitted.

    Returns:
        Plain data, recorded with every result: ``commit`` is a commit id, ``local`` for a
        folder, or ``None`` for a ref the cache lacks.
    """
    return {
        role: {"repo": model_id,
               "commit": resolve_commit(model_id, profile.revision_for(model_id), cache)}
        for role, model_id in profile.model_ids().items()
        if roles is None or role in roles
    }  # fmt: skip


def fetch_model(role: str, repo_id: str, revision: str) -> Path:
    """Download exactly the files the farm loads of one repo into the hub cache.

    Args:
        role: the model's role (which files: :data:`workers.profiles.REPO_FILES`).
        repo_id: the hub repo.
        revision: branch, tag or commit.

    Returns:
        The snapshot folder.
    """
    from huggingface_hub import HfApi, snapshot_download

    spec = REPO_FILES[role]
    patterns = list(spec.patterns)
    if spec.weights:
        # Several formats of the same weights may sit in a repo: take the first one there is.
        names = set(HfApi().list_repo_files(repo_id, revision=revision))
        patterns += [next((w for w in spec.weights if w in names), spec.weights[0])]
    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
