"""The tiny mirror's hub layout, and checking a profile's models in a cache offline."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from workers.hub import check_profile, describe_missing, snapshot_folder, wanted
from workers.hub_mirror import copy_tiny_mirror, tiny_mirror_home
from workers.profiles import DEFAULT, REPO_FILES, ROLES, resolve_profile


@pytest.fixture
def mirror(tmp_path, model_cache):
    """A private copy of the tiny mirror, as ``farm models mirror --tiny`` writes it."""
    copy_tiny_mirror(model_cache, tmp_path / "hf")
    return tmp_path / "hf" / "hub"


def test_the_mirror_holds_every_default_repo_as_the_hub_cache_lays_it_out(mirror):
    for role in ROLES:
        repo_id = getattr(DEFAULT, role)
        repo = mirror / f"models--{repo_id.replace('/', '--')}"
        commit = (repo / "refs" / "main").read_text()
        snapshot = repo / "snapshots" / commit
        files = [path for path in snapshot.rglob("*") if not path.is_dir()]
        assert files, repo_id
        for path in files:
            # Relative links into blobs/, so the cache can move as a whole.
            assert path.is_symlink() and not os.readlink(path).startswith("/")
            assert path.resolve().parent == (repo / "blobs").resolve()


def test_the_mirror_uses_the_real_file_names_and_shards(mirror):
    flux = snapshot_folder(DEFAULT.renderer, "main", mirror)
    phi3 = snapshot_folder(DEFAULT.extractor, "main", mirror)
    lora = snapshot_folder(DEFAULT.lora, "main", mirror)
    assert (lora / "flux-fashion-lora.safetensors").is_file()
    assert sorted(p.name for p in (flux / "transformer").glob("*.safetensors")) == [
        f"diffusion_pytorch_model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)
    ]
    index = json.loads((phi3 / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    }
    # FLUX's CLIP tokenizer folder holds CLIP's vocab and merges, as the real repo does.
    vocab = json.loads((flux / "tokenizer" / "vocab.json").read_text())
    assert len(vocab) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


def test_every_required_file_of_the_real_repos_is_one_the_farm_fetches():
    for role, spec in REPO_FILES.items():
        for name in spec.required:
            assert wanted(name, spec.patterns + spec.weights), (role, name)


def test_the_renderer_fetches_the_diffusers_folders_and_not_the_single_file_checkpoints():
    patterns = REPO_FILES["renderer"].patterns
    assert wanted("transformer/diffusion_pytorch_model-00001-of-00003.safetensors", patterns)
    assert not wanted("flux1-schnell.safetensors", patterns)
    assert not wanted("ae.safetensors", patterns)


def test_a_complete_mirror_checks_present_for_every_model(mirror):
    checks = check_profile(DEFAULT, cache=mirror)
    assert [c.role for c in checks] == list(ROLES)
    assert all(c.present and c.size > 0 and c.revision == "main" for c in checks)
    assert describe_missing(checks, DEFAULT) == ""


def test_a_missing_shard_is_named_and_the_fetch_command_given(mirror):
    flux = snapshot_folder(DEFAULT.renderer, "main", mirror)
    (flux / "transformer" / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    shutil.rmtree(mirror / "models--openai--clip-vit-large-patch14")
    checks = {c.role: c for c in check_profile(DEFAULT, cache=mirror)}
    assert checks["renderer"].missing == [
        "transformer/diffusion_pytorch_model-00002-of-00003.safetensors"
    ]
    assert checks["scorer"].folder is None and not checks["scorer"].present
    message = describe_missing(list(checks.values()), DEFAULT)
    assert "black-forest-labs/FLUX.1-schnell" in message
    assert "openai/clip-vit-large-patch14 (main) is not there" in message
    assert "farm --profile default models fetch" in message


def test_a_stage_checks_only_the_models_it_loads(mirror):
    shutil.rmtree(mirror / "models--microsoft--Phi-3-mini-4k-instruct")
    assert all(c.present for c in check_profile(DEFAULT, ["render", "score"], cache=mirror))
    assert not all(c.present for c in check_profile(DEFAULT, ["extract"], cache=mirror))


def test_the_tiny_profile_names_the_mirrors_snapshot_folders(model_cache):
    profile = resolve_profile("tiny", model_cache)
    hub = tiny_mirror_home(model_cache) / "hub"
    assert profile.renderer == str(snapshot_folder(DEFAULT.renderer, "main", hub))
    assert profile.lora_weight_name() == "flux-fashion-lora.safetensors"
    assert all(check.present for check in check_profile(profile))


def test_the_default_profile_names_the_loras_weight_file_for_offline_loading():
    assert DEFAULT.lora_weight_name() == "flux-fashion-lora.safetensors"
