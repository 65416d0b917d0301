"""The farm's services on a host of their own (:mod:`tests.integration.hosts`): a Redis, a
PostgreSQL cluster made for the test and an S3-compatible server (moto's), each listening on
the host's bridge address only."""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.hosts import Host

REDIS_PORT, POSTGRES_PORT, S3_PORT = 6379, 5432, 5000
BUCKET = "farm-images"
S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "farm-test",
    "AWS_SECRET_ACCESS_KEY": "farm-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found[-1]


def wait_port(address: str, port: int, timeout: float = 60) -> None:
    """Wait until ``address:port`` accepts a TCP connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on {address}:{port} after {timeout}s")


def start_services(host: Host, workdir: Path, data: Path) -> dict[str, str]:
    """Start Redis, PostgreSQL and the S3 server on ``host``; the environment that uses them.

    Args:
        host: the services' host.
        workdir: where their logs go.
        data: an empty folder for the PostgreSQL cluster, in a place its own user can reach
            (pytest's folders are the test user's alone).

    Returns:
        ``FARM_DATABASE_URL``, ``FARM_BROKER_URL``, ``FARM_OUTPUT_DIR`` (the bucket) and the
        AWS variables, every address the host's own.
    """
    env = os.environ.copy()
    redis_argv = ["redis-server", "--bind", host.address, "--port", str(REDIS_PORT),
                  "--save", "", "--appendonly", "no", "--protected-mode", "no"]  # fmt: skip
    host.start(redis_argv, env, workdir / "redis.log")
    os.chown(data, *_postgres_ids())
    made = host.run([_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                    env=env, user="postgres")  # fmt: skip
    if made.returncode:
        raise RuntimeError(f"initdb failed: {made.stderr}")
    with open(data / "pg_hba.conf", "a") as hba:  # the other hosts connect over the bridge
        hba.write("host all all 0.0.0.0/0 trust\n")
    postgres_argv = [_pg_bin("postgres"), "-D", str(data), "-h", host.address,
                     "-p", str(POSTGRES_PORT), "-k", str(data)]  # fmt: skip
    host.start(postgres_argv, env, workdir / "postgres.log", user="postgres")
    s3_argv = [sys.executable, "-m", "moto.server", "-H", host.address, "-p", str(S3_PORT)]
    host.start(s3_argv, env, workdir / "s3.log")
    for port in (REDIS_PORT, POSTGRES_PORT, S3_PORT):
        wait_port(host.address, port)
    _create_database(host.address)
    endpoint = f"http://{host.address}:{S3_PORT}"
    _create_bucket(endpoint)
    return S3_KEYS | {
        "AWS_ENDPOINT_URL": endpoint,
        "FARM_DATABASE_URL": f"postgresql+psycopg://postgres@{host.address}:{POSTGRES_PORT}/farm",
        "FARM_BROKER_URL": f"redis://{host.address}:{REDIS_PORT}/0",
        "FARM_OUTPUT_DIR": f"s3://{BUCKET}/catalog",
    }


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def _create_database(address: str) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            url = f"postgresql://postgres@{address}:{POSTGRES_PORT}/postgres"
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("CREATE DATABASE farm")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _create_bucket(endpoint: str) -> None:
    script = f"import s3fs, sys; s3fs.S3FileSystem(endpoint_url={endpoint!r}).mkdir({BUCKET!r})"
    made = subprocess.run([sys.executable, "-c", script], env=os.environ | S3_KEYS,
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode:
        raise RuntimeError(f"could not make the bucket: {made.stderr}")
