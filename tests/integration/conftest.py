"""Real services for the integration tests: a fresh PostgreSQL database and Redis database per
test, and real ``farm worker`` processes started as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import func, select

from db.engine import make_engine, migrate, session_factory
from db.models import TERMINAL_STATUSES, Article

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379"
FARM = [sys.executable, "-m", "producer.cli"]


@pytest.fixture
def pg_url():
    """A fresh, migrated PostgreSQL database, dropped after the test."""
    name = f"farm_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url():
    """An empty Redis database (number 9), flushed before and after the test."""
    url = f"{REDIS}/9"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def farm_env(tmp_path, pg_url, redis_url, model_cache, tiny_profile):
    """Environment of the farm processes of one test: tiny models, its own DB, broker, output."""
    env = os.environ | {
        "FARM_DATABASE_URL": pg_url,
        "FARM_BROKER_URL": redis_url,
        "FARM_OUTPUT_DIR": str(tmp_path / "output"),
        "FARM_PROFILE": "tiny",
        "FARM_MODEL_CACHE": str(model_cache),
        "FARM_LEASE_SECONDS": "30",
        "FARM_TASK_TIME_LIMIT": "20",
        "FARM_VISIBILITY_TIMEOUT": "40",
        "FARM_RETRY_BACKOFF_SECONDS": "0.2",
        "HF_HUB_OFFLINE": "1",
    }
    return env


def farm(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the ``farm`` CLI in a subprocess and capture its output."""
    return subprocess.run([*FARM, *args], env=env, capture_output=True, text=True, timeout=timeout)


class WorkerProcess:
    """A ``farm worker`` subprocess whose log goes to a file."""

    def __init__(self, env: dict, role: str, log_path: Path, *args: str):
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115  (closed in stop())
        self.process = subprocess.Popen(
            [*FARM, "worker", role, *args], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log_path.read_text():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_path.read_text()}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def start_worker(farm_env, tmp_path):
    """Start real worker processes; all are stopped after the test."""
    started: list[WorkerProcess] = []

    def start(role: str, *args: str, env: dict | None = None) -> WorkerProcess:
        log = tmp_path / f"worker-{role}-{len(started)}.log"
        worker = WorkerProcess(env or farm_env, role, log, *args)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_until_ended(database_url: str, timeout: float = 240) -> None:
    """Wait until no article in the database is still in flight."""
    sessions = session_factory(make_engine(database_url))
    ended = [s.value for s in TERMINAL_STATUSES]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as session:
            open_count = session.scalar(
                select(func.count()).select_from(Article).where(Article.status.not_in(ended))
            )
        if open_count == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"{open_count} articles still in flight after {timeout}s")
