"""Real services for the integration tests: a fresh PostgreSQL database and Redis database per
test, and real ``farm worker`` processes started as subprocesses."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
import redis

from db.engine import make_engine, migrate
from tests.integration.farmproc import WorkerProcess

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379"


@pytest.fixture
def empty_pg_url():
    """A fresh PostgreSQL database with no tables yet, dropped after the test."""
    name = f"farm_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(empty_pg_url):
    """A fresh, migrated PostgreSQL database, dropped after the test."""
    engine = make_engine(empty_pg_url)
    migrate(engine)
    engine.dispose()
    return empty_pg_url


@pytest.fixture
def redis_url():
    """An empty Redis database, flushed before and after the test.

    Number 9 unless ``FARM_TEST_REDIS_DB`` names another, so that two test runs on one
    machine keep out of each other's broker.
    """
    url = f"{REDIS}/{os.environ.get('FARM_TEST_REDIS_DB', '9')}"
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
        "FARM_RETRY_BACKOFF_SECONDS": "0.2",
        "HF_HUB_OFFLINE": "1",
    }
    return env


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


@pytest.fixture
def local_env(tmp_path, model_cache):
    """No Redis, no PostgreSQL: the broker URL points at a closed port to prove it is unused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    return env | {
        "FARM_BROKER_URL": "redis://127.0.0.1:1/0",
        "FARM_DATABASE_URL": f"sqlite:///{tmp_path / 'farm.db'}",
        "FARM_OUTPUT_DIR": str(tmp_path / "output"),
        "FARM_MODEL_CACHE": str(model_cache),
        "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture
def s3_server():
    """moto's S3 server on a free port of this machine, with the bucket ``farm``.

    Yields the server's ``AWS_*`` variables; the server runs in this process, so a test may
    stop and start it (``s3_server.server``) or patch its backend.
    """
    from moto.server import ThreadedMotoServer

    from tests.integration.studio import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    aws = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "farm-test",
        "AWS_SECRET_ACCESS_KEY": "farm-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    import boto3

    client = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], **_credentials(aws))
    client.create_bucket(Bucket="farm")
    yield S3Server(server, client, aws)
    server.stop()


def _credentials(aws: dict) -> dict:
    return {
        "aws_access_key_id": aws["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"],
        "region_name": aws["AWS_DEFAULT_REGION"],
    }


class S3Server:
    """A running moto server: the server, a boto3 client of it and its ``AWS_*`` variables."""

    def __init__(self, server, client, aws: dict) -> None:
        self.server, self.client, self.aws = server, client, aws

    def objects(self, bucket: str = "farm", prefix: str = "") -> list[str]:
        """Every object key under ``prefix``."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (the system's, see .ci/browser), one per test module."""
    from playwright import sync_api

    from tests.integration.studio import CHROMIUM

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run .ci/browser to install Chromium")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()
