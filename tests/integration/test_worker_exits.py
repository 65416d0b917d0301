"""A worker that cannot serve exits non-zero at boot with one clear message, and no traceback.

Real processes: ``farm worker gpu --gpus 0`` on a machine without CUDA, and a worker process
started by the launcher whose PostgreSQL database does not exist. Neither ever says
``ready`` or takes a message.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import torch

from db.engine import open_database
from db.exceptions import DatabaseMissing
from tests.integration.farmproc import FARM

pytestmark = pytest.mark.integration

PG = "postgresql://postgres:{password}@127.0.0.1:5432/{name}"
SECRET = "s3cret-pw"


@pytest.fixture
def env(tmp_path, redis_url, model_cache, tiny_profile) -> dict[str, str]:
    """A farm of its own: tiny models, SQLite in tmp_path, no FARM_* or GPU setting inherited."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FARM_") and k != "CUDA_VISIBLE_DEVICES"
    }
    return inherited | {
        "FARM_PROFILE": "tiny",
        "FARM_MODEL_CACHE": str(model_cache),
        "FARM_DATABASE_URL": f"sqlite:///{tmp_path / 'farm.db'}",
        "FARM_BROKER_URL": redis_url,
        "FARM_OUTPUT_DIR": str(tmp_path / "output"),
        "HF_HUB_OFFLINE": "1",
    }


def missing_database_url() -> str:
    return PG.format(password=SECRET, name=f"farm_no_such_db_{uuid.uuid4().hex[:10]}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_gpu_worker_without_cuda_exits_1_with_one_message(env):
    result = subprocess.run(
        [*FARM, "worker", "gpu", "--gpus", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "GPU 0 asked for, but no CUDA device is visible" in output
    assert "Traceback" not in output
    assert " ready." not in output


def test_a_worker_process_whose_database_is_missing_exits_1_and_stops_the_launcher(env):
    url = missing_database_url()
    # The launcher as `farm worker text` runs it, past the command's own database check.
    program = (
        "import sys\n"
        "from tasks.launcher import plan_workers, run_workers\n"
        "from tasks.settings import Settings\n"
        "sys.exit(run_workers(plan_workers('text', Settings())))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        env=env | {"FARM_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    name = url.rsplit("/", 1)[1]
    assert f"worker cannot start: PostgreSQL at 127.0.0.1:5432 has no database '{name}'" in output
    assert f"createdb -h 127.0.0.1 -p 5432 -U postgres {name}" in output
    assert "Traceback" not in output
    assert " ready." not in output
    assert SECRET not in output


def test_a_missing_postgres_database_says_how_to_create_it_without_the_password():
    url = missing_database_url()
    name = url.rsplit("/", 1)[1]
    with pytest.raises(DatabaseMissing) as caught:
        open_database(url, create=True)  # a PostgreSQL database is never created
    assert str(caught.value) == (
        f"PostgreSQL at 127.0.0.1:5432 has no database '{name}'; create it with "
        f"`createdb -h 127.0.0.1 -p 5432 -U postgres {name}`, or point "
        "FARM_DATABASE_URL/--database-url at an existing one"
    )
