"""Per-repo revisions, the lock file, and loading exactly the locked commits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from pydantic import ValidationError

from tasks.exceptions import LockFileInvalid
from tasks.model_pins import settings_profile
from tasks.settings import Settings, parse_revisions
from workers.hub import check_profile, describe_missing, model_commits, snapshot_folder
from workers.hub_mirror import copy_tiny_mirror, write_repo
from workers.lock import LockedRepo, pin, read_lock, write_lock
from workers.profiles import DEFAULT, ROLES

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def mirror(tmp_path, model_cache):
    """A private copy of the tiny mirror, as ``farm models mirror --tiny`` writes it."""
    copy_tiny_mirror(model_cache, tmp_path / "hf")
    return tmp_path / "hf" / "hub"


def test_revisions_are_read_from_json_and_from_repo_equals_revision_pairs():
    pairs = "black-forest-labs/FLUX.1-schnell=v2, aihpi/flux-fashion-lora=" + COMMIT
    expected = {"black-forest-labs/FLUX.1-schnell": "v2", "aihpi/flux-fashion-lora": COMMIT}
    assert parse_revisions(pairs) == expected
    assert parse_revisions(json.dumps(expected)) == expected
    assert parse_revisions("") == {}


@pytest.mark.parametrize(
    "value", ["black-forest-labs/FLUX.1-schnell", "flux=main", '{"a/b": ""}', "{not json"]
)
def test_a_wrong_revisions_value_is_refused_naming_what_is_wrong(value):
    with pytest.raises(ValidationError, match="model_revisions"):
        Settings(model_revisions=value)


def test_the_revisions_setting_reaches_a_child_process_as_the_same_mapping(monkeypatch):
    settings = Settings(model_revisions="aihpi/flux-fashion-lora=v3")
    monkeypatch.setenv("FARM_MODEL_REVISIONS", settings.as_env()["FARM_MODEL_REVISIONS"])
    assert Settings().model_revisions == {"aihpi/flux-fashion-lora": "v3"}


def test_a_wrong_revisions_variable_ends_the_command_with_one_message_naming_it(tmp_path):
    env = {"FARM_MODEL_REVISIONS": "no-equals-sign", "FARM_MODEL_CACHE": str(tmp_path),
           "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "producer.cli", "models", "check"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "FARM_MODEL_REVISIONS" in result.stderr and "Traceback" not in result.stderr


def test_the_lock_file_lies_in_the_model_cache_unless_farm_models_lock_names_one(tmp_path):
    assert Settings(model_cache=tmp_path).lock_file() == tmp_path / "models.lock.json"
    chosen = tmp_path / "fleet" / "models.lock.json"
    assert Settings(model_cache=tmp_path, models_lock=chosen).lock_file() == chosen


def test_a_lock_file_written_reads_back_the_same(tmp_path):
    path = tmp_path / "deep" / "models.lock.json"
    repos = {DEFAULT.renderer: LockedRepo(COMMIT, "main", {"model_index.json": 536}),
             DEFAULT.lora: LockedRepo("f" * 40, "v2")}  # fmt: skip
    write_lock(path, repos)
    assert read_lock(path) == repos
    assert [p.name for p in path.parent.iterdir()] == ["models.lock.json"]  # no scratch left


def test_a_lock_write_that_fails_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "models.lock.json"
    write_lock(path, {DEFAULT.lora: LockedRepo(COMMIT)})
    before = path.read_bytes()
    monkeypatch.setattr(
        "workers.lock.os.replace", lambda *_: (_ for _ in ()).throw(OSError(28, "full"))
    )
    with pytest.raises(OSError):
        write_lock(path, {DEFAULT.lora: LockedRepo("f" * 40)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["models.lock.json"]


def test_no_lock_file_reads_as_none(tmp_path):
    assert read_lock(tmp_path / "models.lock.json") is None


@pytest.mark.parametrize(
    "text",
    ["{bad", "[]", '{"version": 2, "repos": {}}', '{"version": 1}',
     '{"version": 1, "repos": {"a/b": {"commit": "main"}}}'],
)  # fmt: skip
def test_a_corrupt_lock_file_is_one_message_naming_the_file(tmp_path, text):
    path = tmp_path / "models.lock.json"
    path.write_text(text)
    with pytest.raises(LockFileInvalid, match="models.lock.json is unusable") as raised:
        settings_profile(Settings(model_cache=tmp_path, profile="default"))
    assert str(path) in str(raised.value) and "farm models fetch" in str(raised.value)
    assert raised.value.exit_code == 1


def test_a_lock_file_pins_each_repo_to_its_commit_over_the_revisions(tmp_path):
    write_lock(tmp_path / "models.lock.json", {DEFAULT.lora: LockedRepo(COMMIT, "main")})
    settings = Settings(model_cache=tmp_path, model_revisions={DEFAULT.lora: "v2",
                                                               DEFAULT.renderer: "v3"})  # fmt: skip
    profile = settings_profile(settings)
    assert profile.revision_for(DEFAULT.lora) == COMMIT
    assert profile.revision_for(DEFAULT.renderer) == "v3"  # not locked: its own revision
    assert profile.revision_for(DEFAULT.scorer) == "main"


def test_without_a_lock_each_model_loads_the_commit_its_ref_names_in_the_cache(mirror):
    commits = model_commits(DEFAULT, cache=mirror)
    assert set(commits) == set(ROLES)
    for role, entry in commits.items():
        repo_id = getattr(DEFAULT, role)
        assert entry == {"repo": repo_id,
                         "commit": snapshot_folder(repo_id, "main", mirror).name}  # fmt: skip


def test_a_locked_older_commit_is_loaded_though_main_moved_on(mirror, tmp_path):
    old = snapshot_folder(DEFAULT.lora, "main", mirror)
    newer = tmp_path / "newer"
    shutil.copytree(old, newer)
    (newer / "README.md").write_text("a newer commit")
    moved = write_repo(mirror, DEFAULT.lora, newer)  # refs/main now names the newer one
    assert moved.name != old.name
    profile = pin(DEFAULT, {DEFAULT.lora: LockedRepo(old.name)}, tmp_path / "lock.json")

    assert model_commits(profile, {"lora"}, mirror)["lora"]["commit"] == old.name
    assert model_commits(DEFAULT, {"lora"}, mirror)["lora"]["commit"] == moved.name
    assert all(check.present for check in check_profile(profile, cache=mirror))


def test_a_locked_commit_missing_from_the_cache_names_repo_commit_lock_and_fetch(mirror):
    profile = pin(DEFAULT, {DEFAULT.lora: LockedRepo(COMMIT)}, "/etc/farm/models.lock.json")
    checks = {check.role: check for check in check_profile(profile, ["render"], cache=mirror)}
    assert checks["renderer"].present and not checks["lora"].present
    assert checks["lora"].locked and checks["lora"].revision == COMMIT
    message = describe_missing(list(checks.values()), profile)
    assert f"aihpi/flux-fashion-lora (commit {COMMIT}, locked in /etc/farm/models.lock.json)" in (
        message
    )
    assert "farm --profile default models fetch" in message


def test_local_folders_record_their_path_and_no_commit(tiny_profile):
    commits = model_commits(tiny_profile)
    assert commits["renderer"] == {"repo": tiny_profile.renderer, "commit": "local"}
    assert {entry["commit"] for entry in commits.values()} == {"local"}
