"""`farm models fetch` against a real local HTTP server that plays the Hugging Face hub.

The fake hub serves the tiny models under the default profile's real repo ids, beside the files
the real repos also hold and the farm must leave there (FLUX's single-file checkpoints, CLIP's
TensorFlow and Flax weights, ...). The command runs as a subprocess through the real
``huggingface_hub`` client, with nothing mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.integration.fakehub import FakeHub
from tests.integration.farmproc import farm
from workers.profiles import DEFAULT, ROLES

pytestmark = [pytest.mark.integration, pytest.mark.own_services]

FETCH = ("--profile", "default", "models", "fetch")
CHECK = ("--profile", "default", "models", "check")

# Files the real repos hold that the farm does not load: they must stay on the hub.
LEFT_ON_HUB = {
    "translator": (
        "README.md",
        ".gitattributes",
        "tf_model.h5",
        "rust_model.ot",
        "pytorch_model.bin",
    ),
    "extractor": ("README.md", "LICENSE", "modeling_phi3.py", "sample_finetune.py", "data/x.json"),
    "renderer": (
        "README.md",
        ".gitattributes",
        "flux1-schnell.safetensors",
        "ae.safetensors",
        "schnell_grid.jpeg",
    ),
    "lora": ("README.md", "images/example.png"),
    "scorer": ("README.md", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"),
}
# Files the real repos hold that the tiny mirror has not, and that the farm does load.
ALSO_FETCHED = {
    "extractor": ("added_tokens.json", "special_tokens_map.json"),
    "scorer": ("special_tokens_map.json",),
}


def also_fetched(role: str) -> dict[str, bytes]:
    """The files of :data:`ALSO_FETCHED` for ``role``, each with its own content."""
    return {name: f'{{"{role}": "{name}"}}'.encode() for name in ALSO_FETCHED.get(role, ())}


def repo_files(folder: Path) -> dict[str, bytes]:
    """Path in repo → content of every file under a snapshot folder (links followed)."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> dict[str, Path]:
    """Role → snapshot folder of the tiny models written as a hub cache, once per module."""
    from workers.hub_mirror import write_tiny_mirror

    return write_tiny_mirror(tmp_path_factory.mktemp("mirror"))


@pytest.fixture
def hub(mirror):
    """The fake hub, started: each repo is the tiny model plus the files left on the hub."""
    server = FakeHub()
    for role in ROLES:
        files = repo_files(mirror[role])
        for name in LEFT_ON_HUB[role]:
            files[name] = f"{role} {name}: not for the farm\n".encode()
        files |= also_fetched(role)
        server.add_repo(getattr(DEFAULT, role), mirror[role].name, files)
    server.start()
    yield server
    server.stop()


def hub_env(hf_home: Path, endpoint: str, tmp_path: Path) -> dict[str, str]:
    """Environment of a farm command that talks to ``endpoint`` with ``hf_home`` as its cache."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FARM_", "HF_", "HUGGING_FACE_"))  # conftest sets HF_HUB_OFFLINE=1
    }
    return env | {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "FARM_MODEL_CACHE": str(tmp_path / "farm-cache"),
    }


def cached_snapshot(hf_home: Path, repo_id: str) -> Path:
    """The snapshot folder that ``refs/main`` of ``repo_id`` names in the cache of ``hf_home``."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    return repo / "snapshots" / (repo / "refs" / "main").read_text().strip()


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fetch_downloads_exactly_the_files_the_profile_loads_and_nothing_else(
    hub, mirror, tmp_path
):
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    env = hub_env(hf_home, hub.url, tmp_path)

    result = farm(env, *FETCH, timeout=180)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    downloaded = hub.file_requests("GET")
    paths = {(r.method, r.path) for r in hub.requests}
    for role in ROLES:
        repo_id = getattr(DEFAULT, role)
        served = hub.repos[repo_id]
        assert ("GET", f"/api/models/{repo_id}/revision/main") in paths  # resolved to a commit
        snapshot = cached_snapshot(hf_home, repo_id)
        assert snapshot.name == served.commit
        wanted = repo_files(mirror[role]) | also_fetched(role)
        assert repo_files(snapshot) == wanted, f"{repo_id}: the snapshot differs from the hub"
        for name in LEFT_ON_HUB[role]:
            assert not (snapshot / name).exists(), f"{repo_id}: {name} was downloaded"
            asked = [(m, f) for m, r, f in hub.file_requests() if r == repo_id and f == name]
            assert asked == [], f"{repo_id}: {name} was asked for"
        blobs = list((snapshot.parents[1] / "blobs").iterdir())
        assert len(blobs) == len(set(wanted.values())), f"{repo_id}: stray blobs {blobs}"
        # One download per distinct content: the client links equal files to one blob.
        fetched = {f for _, r, f in downloaded if r == repo_id}
        assert fetched <= set(wanted)
        assert {wanted[name] for name in fetched} == set(wanted.values())

    check_env = env | {"HF_HUB_OFFLINE": "1"}
    check = farm(check_env, *CHECK, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "missing" not in check.stdout, check.stdout
    assert check.stdout.count("present") == len(ROLES)


def test_a_second_fetch_downloads_nothing(hub, tmp_path):
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    env = hub_env(hf_home, hub.url, tmp_path)
    first = farm(env, *FETCH, timeout=180)
    assert first.returncode == 0, first.stderr
    assert hub.file_requests("GET"), "the first fetch downloaded nothing"
    hub.clear()

    second = farm(env, *FETCH, timeout=180)

    assert second.returncode == 0, second.stderr
    assert hub.file_requests("GET") == []
    for role in ROLES:
        assert f"{role} {getattr(DEFAULT, role)}: present" in second.stderr


def test_a_fetch_without_a_reachable_hub_exits_4_naming_the_model_without_a_traceback(tmp_path):
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    env = hub_env(hf_home, f"http://127.0.0.1:{closed_port()}", tmp_path)

    result = farm(env, *FETCH, timeout=180)

    assert result.returncode == 4, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    failures = [line for line in result.stderr.splitlines() if "could not fetch" in line]
    assert len(failures) == 1, result.stderr
    assert DEFAULT.translator in failures[0]  # the first model, where it stopped
    assert not list((hf_home / "hub").glob("models--*/snapshots/*/*"))


def test_a_fetch_while_the_hub_is_down_names_the_first_model_it_lacks(hub, mirror, tmp_path):
    hf_home = tmp_path / "hf"
    cache = hf_home / "hub"
    cache.mkdir(parents=True)
    # The translator is already cached: the extractor is the first download, by snapshot_download.
    translator = f"models--{DEFAULT.translator.replace('/', '--')}"
    shutil.copytree(mirror["translator"].parents[1], cache / translator, symlinks=True)
    endpoint = hub.url
    hub.stop()

    result = farm(hub_env(hf_home, endpoint, tmp_path), *FETCH, timeout=180)

    assert result.returncode == 4, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"translator {DEFAULT.translator}: present" in result.stderr
    failures = [line for line in result.stderr.splitlines() if "could not fetch" in line]
    assert len(failures) == 1, result.stderr
    assert DEFAULT.extractor in failures[0]
    assert not (cache / f"models--{DEFAULT.extractor.replace('/', '--')}" / "snapshots").exists()


def lock_commits(tmp_path: Path) -> dict[str, str]:
    """Repo id → commit of the lock file the fetch wrote (the default place, in the cache)."""
    lock = json.loads((tmp_path / "farm-cache" / "models.lock.json").read_text())
    assert lock["version"] == 1
    return {repo_id: entry["commit"] for repo_id, entry in lock["repos"].items()}


def move_main(hub: FakeHub, repo_id: str) -> str:
    """Push a new commit of ``repo_id`` (its weights changed) and return its id."""
    files = dict(hub.repos[repo_id].files)
    files["flux-fashion-lora.safetensors"] = files["flux-fashion-lora.safetensors"] + b" "
    commit = hashlib.sha1(b"a newer lora").hexdigest()
    hub.push(repo_id, commit, files)
    return commit


def test_fetch_writes_a_lock_file_naming_the_commit_of_every_repo(hub, tmp_path):
    hf_home = tmp_path / "hf"
    hf_home.mkdir()

    result = farm(hub_env(hf_home, hub.url, tmp_path), *FETCH, timeout=180)

    assert result.returncode == 0, result.stderr
    served = {getattr(DEFAULT, role): hub.repos[getattr(DEFAULT, role)].commit for role in ROLES}
    assert lock_commits(tmp_path) == served
    lock = json.loads((tmp_path / "farm-cache" / "models.lock.json").read_text())
    lora = lock["repos"][DEFAULT.lora]
    assert lora["revision"] == "main" and list(lora["files"]) == ["flux-fashion-lora.safetensors"]


def test_a_lock_file_pins_each_repo_to_its_commit_when_main_moves_on(hub, tmp_path):
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    env = hub_env(hf_home, hub.url, tmp_path)
    assert farm(env, *FETCH, timeout=180).returncode == 0
    locked = lock_commits(tmp_path)[DEFAULT.lora]
    newer = move_main(hub, DEFAULT.lora)
    # A machine with an empty cache and the same lock file: it fetches the locked commit.
    shutil.rmtree(hf_home / "hub" / f"models--{DEFAULT.lora.replace('/', '--')}")
    hub.clear()

    second = farm(env, *FETCH, timeout=180)

    assert second.returncode == 0, second.stderr
    assert lock_commits(tmp_path)[DEFAULT.lora] == locked
    repo = hf_home / "hub" / f"models--{DEFAULT.lora.replace('/', '--')}"
    assert [path.name for path in (repo / "snapshots").iterdir()] == [locked]
    asked = {r.path for r in hub.requests if r.repo_id == DEFAULT.lora}
    assert not any("/main" in path or newer in path for path in asked), asked
    check = farm(env | {"HF_HUB_OFFLINE": "1"}, *CHECK, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"locked {locked}" in check.stdout

    updated = farm(env, *FETCH, "--update", timeout=180)

    assert updated.returncode == 0, updated.stderr
    assert lock_commits(tmp_path)[DEFAULT.lora] == newer
    assert (repo / "snapshots" / newer / "flux-fashion-lora.safetensors").is_file()


def test_a_lock_naming_a_commit_the_cache_lacks_stops_the_check_naming_repo_and_commit(
    hub, tmp_path
):
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    env = hub_env(hf_home, hub.url, tmp_path)
    assert farm(env, *FETCH, timeout=180).returncode == 0
    newer = move_main(hub, DEFAULT.lora)
    assert farm(env, *FETCH, "--update", timeout=180).returncode == 0
    lock = tmp_path / "farm-cache" / "models.lock.json"
    older = hub.repos[DEFAULT.lora].older
    (old_commit,) = older
    # Another machine's lock file, copied here: it pins the commit this cache lacks now.
    shutil.rmtree(hf_home / "hub" / f"models--{DEFAULT.lora.replace('/', '--')}" / "snapshots")
    text = lock.read_text().replace(newer, old_commit)
    lock.write_text(text)

    check = farm(env | {"HF_HUB_OFFLINE": "1"}, *CHECK, timeout=120)

    assert check.returncode == 1, check.stdout + check.stderr
    assert "Traceback" not in check.stderr
    assert f"{DEFAULT.lora} (commit {old_commit}, locked in {lock})" in check.stderr
    assert "farm --profile default models fetch" in check.stderr

    lock.write_text("{not json")
    corrupt = farm(env | {"HF_HUB_OFFLINE": "1"}, *CHECK, timeout=120)
    assert corrupt.returncode == 1 and "Traceback" not in corrupt.stderr
    assert f"the lock file {lock} is unusable" in corrupt.stderr
