"""A missing model stops the farm at once, with one message naming the command that fetches it.

Each test runs real processes with an empty Hugging Face cache and ``HF_HUB_OFFLINE=1``:
``farm models check``, a Celery worker started as ``farm worker`` starts it (it checks the
models at boot, before it connects), and ``farm run``, which must leave nothing half-written.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from db.engine import make_engine, migrate
from producer.cli import SAMPLE_CATALOG
from tasks.launcher import plan_workers
from tasks.settings import Settings
from tests.integration.farmproc import FARM, farm
from workers.hub_mirror import copy_tiny_mirror
from workers.lock import LockedRepo, write_lock
from workers.profiles import DEFAULT, ROLES

pytestmark = pytest.mark.integration

FETCH_COMMAND = "farm --profile default models fetch"
# Database 12 of the local Redis: the shared fixtures use 9, the benchmarks 10.
BROKER = "redis://127.0.0.1:6379/12"
GPU_MODELS = (DEFAULT.renderer, DEFAULT.lora, DEFAULT.scorer)
TEXT_MODELS = (DEFAULT.translator, DEFAULT.extractor)


@pytest.fixture
def offline_env(tmp_path) -> dict[str, str]:
    """Environment with an empty Hugging Face cache, offline, and no FARM_* setting inherited."""
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("FARM_", "HF_", "HUGGING_FACE_"))
    }
    return env | {
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "FARM_MODEL_CACHE": str(tmp_path / "farm-cache"),
    }


@pytest.fixture
def broker_url():
    """An empty Redis database for the worker, flushed before and after the test."""
    client = redis.Redis.from_url(BROKER)
    client.flushdb()
    yield BROKER
    client.flushdb()


def run_until_exit(argv: list[str], env: dict, log: Path, timeout: float) -> int | None:
    """Run a process with its output in ``log`` until it exits or ``timeout`` passes.

    The process and whatever it started are killed afterwards in every case.

    Returns:
        Its exit code, or ``None`` when it was still running at the timeout.
    """
    with open(log, "w") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def missing_message(stderr: str) -> str:
    """The one line of a farm command's stderr that says which models are missing."""
    (line,) = [line for line in stderr.splitlines() if line.startswith("models not found")]
    return line


def test_models_check_with_an_empty_cache_exits_1_naming_every_missing_repo_and_the_fetch_command(
    offline_env,
):
    result = farm(offline_env, "--profile", "default", "models", "check", timeout=120)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for role in ROLES:
        assert getattr(DEFAULT, role) in result.stderr, f"{role} not named: {result.stderr}"
    assert FETCH_COMMAND in result.stderr


def test_a_gpu_worker_without_its_models_exits_non_zero_at_boot_naming_them_and_the_fetch_command(
    offline_env, broker_url, tmp_path
):
    # The command line and environment `farm worker gpu` would start, minus its model
    # pre-check: the worker's own boot handler is what is under test. `farm worker` has
    # made the database before it starts a process.
    process = gpu_worker(tmp_path, broker_url)
    argv = process.argv
    assert argv[argv.index("--pool") + 1] == "threads" and "--concurrency" in argv
    log = tmp_path / "worker.log"
    started = time.monotonic()

    code = run_until_exit(argv, offline_env | process.env, log, timeout=120)

    output = log.read_text()
    assert code is not None, f"the worker still ran after 120 s:\n{output}"
    assert code == 1, output  # a service manager sees a failure
    assert " ready." not in output, output  # it never took work
    assert time.monotonic() - started < 120
    assert "worker cannot start: models not found" in output, output
    for repo_id in GPU_MODELS:
        assert repo_id in output, f"{repo_id} not named:\n{output}"
    for repo_id in TEXT_MODELS:  # a GPU worker does not load them
        assert repo_id not in output, output
    assert FETCH_COMMAND in output
    assert "Traceback" not in output, output


def test_farm_run_with_a_missing_model_exits_1_and_writes_nothing(offline_env, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    database = tmp_path / "farm.db"
    output_dir = tmp_path / "out"
    env = offline_env | {
        "FARM_DATABASE_URL": f"sqlite:///{database}",
        "FARM_OUTPUT_DIR": str(output_dir),
        "FARM_BROKER_URL": "redis://127.0.0.1:1/0",  # a closed port: farm run needs no broker
    }

    result = subprocess.run(
        [*FARM, "--profile", "default", "run", str(SAMPLE_CATALOG)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "models not found" in result.stderr
    for role in ROLES:
        assert getattr(DEFAULT, role) in result.stderr, f"{role} not named: {result.stderr}"
    assert FETCH_COMMAND in result.stderr
    check = farm(env, "--profile", "default", "models", "check", timeout=120)
    assert missing_message(result.stderr) == missing_message(check.stderr)
    assert not database.exists()
    assert not output_dir.exists()
    assert list(cwd.iterdir()) == []
    assert result.stdout == ""  # no batch id


def gpu_worker(tmp_path: Path, broker_url: str):
    """The process `farm worker gpu` would start, over a migrated SQLite database."""
    settings = Settings(
        profile="default",
        database_url=f"sqlite:///{tmp_path / 'farm.db'}",
        broker_url=broker_url,
        output_dir=tmp_path / "out",
        model_cache=tmp_path / "farm-cache",
    )
    migrate(make_engine(settings.database_url))
    (process,) = plan_workers("gpu", settings, ())
    return process


@pytest.mark.parametrize("lock_text", ["missing commit", "corrupt"])
def test_a_gpu_worker_whose_locked_commit_is_not_cached_exits_1_at_boot_naming_it(
    offline_env, broker_url, tmp_path, model_cache, lock_text
):
    copy_tiny_mirror(model_cache, Path(offline_env["HF_HOME"]))  # every model, at refs/main
    lock = Path(offline_env["FARM_MODEL_CACHE"]) / "models.lock.json"
    commit = "0" * 40
    if lock_text == "corrupt":
        lock.parent.mkdir(parents=True)
        lock.write_text('{"version": 1, "repos": []}')
    else:
        write_lock(lock, {DEFAULT.lora: LockedRepo(commit, "main")})
    process = gpu_worker(tmp_path, broker_url)
    log = tmp_path / "worker.log"

    code = run_until_exit(process.argv, offline_env | process.env, log, timeout=120)

    output = log.read_text()
    assert code == 1, output
    assert " ready." not in output and "Traceback" not in output, output
    if lock_text == "corrupt":
        assert f"worker cannot start: the lock file {lock} is unusable" in output, output
    else:
        assert f"{DEFAULT.lora} (commit {commit}, locked in {lock}) is not there" in output
        assert FETCH_COMMAND in output
        assert DEFAULT.renderer not in missing_message(
            output.replace("worker cannot start: ", "\n")
        )
