"""A Hugging Face cache holding the tiny models under the real repo ids and file names.

``farm models mirror --tiny DIR`` writes it; with ``HF_HOME=DIR HF_HUB_OFFLINE=1`` the
``default`` profile then loads the tiny random-weight models through exactly the code that
loads the real ones from a pre-seeded cache (repo ids, revisions, sharded checkpoints, the
LoRA's file name). The layout is the hub cache's own: ``hub/models--org--name/`` with
``blobs/`` named by content hash, ``snapshots/<commit>/`` of relative links, ``refs/main``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from workers.cache import build_once
from workers.hub import repo_folder, snapshot_folder
from workers.profiles import DEFAULT, DEFAULT_REVISION, ROLES

# Bump when the tiny builders change, so stale caches are rebuilt instead of reused.
TINY_VERSION = "v4"
# How many shards the real repos split these checkpoints into (file names follow from it).
SHARDS = {
    ("extractor", "model.safetensors"): 2,
    ("renderer", "text_encoder_2/model.safetensors"): 2,
    ("renderer", "transformer/diffusion_pytorch_model.safetensors"): 3,
}


def write_repo(cache: Path, repo_id: str, source: Path, revision: str = DEFAULT_REVISION) -> Path:
    """Store the files of ``source`` as one snapshot of ``repo_id`` in a hub cache.

    Args:
        cache: the hub cache folder (``$HF_HOME/hub``).
        repo_id: the repo id to store it under.
        source: a folder of model files.
        revision: the ref that points at the snapshot.

    Returns:
        The snapshot folder.
    """
    files = sorted(path for path in source.rglob("*") if path.is_file())
    digests = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}
    listing = "".join(f"{p.relative_to(source).as_posix()} {d}\n" for p, d in digests.items())
    # A commit id made from the content: the same models give the same snapshot.
    commit = hashlib.sha1(listing.encode()).hexdigest()
    repo = repo_folder(cache, repo_id)
    snapshot = repo / "snapshots" / commit
    for path, digest in digests.items():
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


def shard_safetensors(path: Path, shards: int) -> None:
    """Split one safetensors checkpoint into ``shards`` files plus an index, as the hub has them.

    ``model.safetensors`` becomes ``model-00001-of-00002.safetensors`` ... and
    ``model.safetensors.index.json``, the names ``save_pretrained`` gives large checkpoints.

    Args:
        path: the checkpoint; removed once split.
        shards: how many files to write.
    """
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    names = list(tensors)
    per_shard = math.ceil(len(names) / shards)
    stem = path.name.removesuffix(".safetensors")
    weight_map, total = {}, 0
    for index in range(shards):
        part = {name: tensors[name] for name in names[index * per_shard : (index + 1) * per_shard]}
        shard_name = f"{stem}-{index + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, path.parent / shard_name, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, shard_name)
        total += sum(t.numel() * t.element_size() for t in part.values())
    index_file = path.parent / f"{path.name}.index.json"
    index_file.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    path.unlink()


def build_tiny_models(out: Path) -> None:
    """Build the four tiny models and the tiny LoRA into ``out/<role>``, with real file names.

    Args:
        out: an empty folder.
    """
    from workers import tiny_image, tiny_text
    from workers.loader import quiet_library_logs

    quiet_library_logs()  # no progress bars of the saves in a demo's output
    builders = {
        "translator": tiny_text.build_tiny_marian,
        "extractor": tiny_text.build_tiny_phi3,
        "renderer": tiny_image.build_tiny_flux,
        "scorer": tiny_image.build_tiny_clip,
    }
    for role, builder in builders.items():
        (out / role).mkdir()
        builder(out / role)
    (out / "lora").mkdir()
    tiny_image.build_tiny_flux_lora(out / "lora", out / "renderer")
    lora = out / "lora" / "pytorch_lora_weights.safetensors"
    lora.rename(out / "lora" / "flux-fashion-lora.safetensors")
    for (role, name), shards in SHARDS.items():
        shard_safetensors(out / role / name, shards)


def write_tiny_mirror(hf_home: Path) -> dict[str, Path]:
    """Write the tiny models into ``hf_home/hub`` under the default profile's repo ids.

    Args:
        hf_home: a folder to use as ``HF_HOME``.

    Returns:
        Role → snapshot folder.
    """
    cache = Path(hf_home) / "hub"
    with tempfile.TemporaryDirectory(prefix="farm-tiny-") as scratch:
        build_tiny_models(Path(scratch))
        return {
            role: write_repo(cache, getattr(DEFAULT, role), Path(scratch) / role) for role in ROLES
        }


def tiny_mirror_home(cache_dir: Path) -> Path:
    """Build (once) the tiny mirror under ``cache_dir`` and return its ``HF_HOME`` folder."""
    return build_once(Path(cache_dir) / "tiny" / TINY_VERSION, write_tiny_mirror)


def tiny_mirror_folders(cache_dir: Path) -> dict[str, Path]:
    """Role → snapshot folder of the tiny mirror kept under ``cache_dir`` (built once).

    Args:
        cache_dir: the farm's model cache.

    Returns:
        The folders, loadable as they are by the runtimes.
    """
    cache = tiny_mirror_home(cache_dir) / "hub"
    return {
        role: snapshot_folder(getattr(DEFAULT, role), DEFAULT_REVISION, cache) for role in ROLES
    }


def copy_tiny_mirror(cache_dir: Path, hf_home: Path) -> list[str]:
    """Put the tiny mirror's repos into ``hf_home/hub`` (``farm models mirror --tiny``).

    Each repo folder is copied beside its place and renamed into it, so a reader never sees a
    half-written repo; repos of other ids already in that cache are left alone.

    Args:
        cache_dir: the farm's model cache, where the mirror is built once.
        hf_home: the folder to use as ``HF_HOME``.

    Returns:
        The repo ids written.
    """
    source = tiny_mirror_home(cache_dir) / "hub"
    target = Path(hf_home) / "hub"
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for role in ROLES:
        repo_id = getattr(DEFAULT, role)
        final = repo_folder(target, repo_id)
        scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=target))
        shutil.copytree(repo_folder(source, repo_id), scratch / "repo", symlinks=True)
        if final.exists():
            shutil.rmtree(final)
        (scratch / "repo").rename(final)
        scratch.rmdir()
        written.append(repo_id)
    return written
