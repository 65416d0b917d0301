"""The farm across separate hosts: services, a text worker and two GPU workers each in a
network namespace of their own, images in an S3-compatible bucket, a batch sent from the
operator's machine (the root namespace). Then one GPU host's link goes down mid-batch.

The GPU workers run the tiny models on the CPU; everything else is as shipped: the lease
(FARM_LEASE_SECONDS), the reaper's turn (FARM_REAPER_SECONDS), the attempts.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import openpyxl
import pytest
import s3fs
from sqlalchemy import func, select, text

from db import engine as farm_engine
from db import timers
from db.engine import make_engine, session_factory
from db.models import Article, ArticleStatus, Render, StageRun
from tasks.settings import Settings
from tasks.stranded import CLOCK_TOLERANCE_SECONDS
from tests.integration.farmproc import farm, wait_until_ended
from tests.integration.faultkit import tally
from tests.integration.hosts import Network, can_make_hosts
from tests.integration.hostservices import start_services

# About five minutes (the cut waits out a lease and more, at the shipped settings), beside the
# rest of the suite: its services are its own.
pytestmark = [pytest.mark.integration, pytest.mark.own_services]

FARM = [sys.executable, "-m", "producer.cli"]
# deploy/README.md, "A GPU box that drops off the network": the articles a cut-off host
# holds are sent again once their leases ran out, and those whose messages it received but
# never started once they were delivered a lease and the clock tolerance ago
# (tasks.stranded), on the reaper's next turn; allow two turns, and a minute for the rest of
# the batch on the tiny models.
SHIPPED = Settings()
CUT_BOUND_SECONDS = (
    SHIPPED.lease_seconds + CLOCK_TOLERANCE_SECONDS + 2 * SHIPPED.reaper_seconds + 60
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, model_cache, tiny_profile):
    """The hosts, the services on theirs, and the environment every farm process shares."""
    reason = can_make_hosts()
    if reason:
        pytest.skip(f"separate hosts cannot be made on this machine: {reason}")
    workdir = tmp_path_factory.mktemp("hosts")
    pg_data = Path(tempfile.mkdtemp(prefix="farm-hosts-pg-"))
    network = Network(["svc", "text", "gpu1", "gpu2", "probe"])
    try:
        services = start_services(network["svc"], workdir, pg_data)
        env = os.environ | services | {
            "FARM_PROFILE": "tiny",
            "FARM_MODEL_CACHE": str(model_cache),
            "HF_HUB_OFFLINE": "1",
        }  # fmt: skip
        upgraded = farm(env, "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
        yield network, env, workdir
    finally:
        network.close()
        shutil.rmtree(pg_data, ignore_errors=True)


def start_worker(network, env, workdir: Path, host: str, role: str):
    """``farm --device cpu worker ROLE`` on ``host``; waits for it to say ready."""
    log = workdir / f"{host}.log"
    process = network[host].start([*FARM, "--device", "cpu", "worker", role], env, log)
    deadline = time.monotonic() + 180
    while " ready." not in log.read_text():
        assert process.poll() is None, f"{host} exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{host} not ready:\n{log.read_text()}"
        time.sleep(0.3)
    return process


def write_catalog(path: Path, count: int, offset: int) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["name", "description", "model_name", "model_descr"])
    for n in range(offset, offset + count):
        sheet.append([f"Kleid {n}", f"Sommerkleid Nr. {n} aus Leinen, knielang.", "Kleid", f"{n}"])
    workbook.save(path)
    return path


def batch_of(env: dict, catalog: Path) -> str:
    submitted = farm(env, "submit", str(catalog))
    assert submitted.returncode == 0, submitted.stderr
    sessions = session_factory(make_engine(env["FARM_DATABASE_URL"]))
    with sessions() as session:
        return session.scalar(
            select(Article.batch_id).where(Article.source_file.like(f"%{catalog.name}"))
        )


def published_where_stored(env: dict, batch_id: str) -> list[str]:
    """Keys of the batch whose published picture is missing or not its best attempt's bytes."""
    sessions = session_factory(make_engine(env["FARM_DATABASE_URL"]))
    with sessions() as session:
        rows = session.execute(
            select(Article.key, Article.image_path, Render.image_path)
            .join(Render, (Render.article_id == Article.id)
                  & (Render.attempt == Article.best_attempt))
            .where(Article.batch_id == batch_id)
        ).all()  # fmt: skip
    bucket = s3fs.S3FileSystem(
        endpoint_url=env["AWS_ENDPOINT_URL"],
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
    )
    wrong = []
    for key, published, attempt in rows:
        assert published.startswith("s3://") and attempt.startswith("s3://"), (published, attempt)
        if bucket.cat_file(published) != bucket.cat_file(attempt):
            wrong.append(key)
    return wrong


def runs_by(env: dict, batch_id: str, launcher_pid: int) -> int:
    """Stage runs of the batch made by the worker processes of one launcher."""
    sessions = session_factory(make_engine(env["FARM_DATABASE_URL"]))
    with sessions() as session:
        return session.scalar(
            select(func.count()).select_from(StageRun).join(Article)
            .where(Article.batch_id == batch_id, StageRun.worker.like(f"%-{launcher_pid}-%"))
        )  # fmt: skip


def test_a_batch_sent_from_the_operators_machine_ends_done_on_workers_of_other_hosts(cluster):
    network, env, workdir = cluster
    for host, role in (("text", "text"), ("gpu1", "gpu"), ("gpu2", "gpu")):
        start_worker(network, env, workdir, host, role)

    batch = batch_of(env, write_catalog(workdir / "first.xlsx", 8, 1))
    wait_until_ended(env["FARM_DATABASE_URL"], timeout=300)

    counts = tally(env)
    assert (counts["completed"], counts["lost"], counts["duplicated"]) == (8, 0, 0), counts
    assert published_where_stored(env, batch) == []


# A session that holds a row lock and whose host is cut off while the server answers it.
HOLD_LOCK = """
import sys, time
from sqlalchemy import text
from db.engine import make_engine
with make_engine(sys.argv[1]).begin() as connection:
    connection.execute(text("SELECT value FROM marks WHERE name = 'probe' FOR UPDATE"))
    print("locked", flush=True)
    connection.execute(text("SELECT pg_sleep(3)"))
    time.sleep(3600)
"""


def test_a_host_cut_off_while_the_server_answers_it_loses_its_row_locks_within_the_bound(
    cluster,
):
    # The server's answer to the cut host waits unacknowledged, when keepalive probes do not
    # go out: the farm's sessions carry a TCP user timeout (db.engine) so that the locks such
    # a session holds (an article's claim, the reaper's timer) do not outlive it for minutes.
    network, env, workdir = cluster
    url = env["FARM_DATABASE_URL"]
    engine = make_engine(url)
    timers.keep_mark(engine, "probe", "held")
    log = workdir / "probe.log"
    network["probe"].start([sys.executable, "-c", HOLD_LOCK, url], env, log)
    deadline = time.monotonic() + 60
    while "locked" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    time.sleep(1)  # the session is inside pg_sleep: its answer comes after the cut
    network["probe"].cut()
    cut_at = time.monotonic()
    bound = farm_engine.UNACKNOWLEDGED_MS / 1000 + 15
    with engine.begin() as connection:
        connection.execute(text(f"SET LOCAL lock_timeout = '{int(bound + 30)}s'"))
        connection.execute(text("UPDATE marks SET value = 'free' WHERE name = 'probe'"))
    took = time.monotonic() - cut_at
    print(f"multi-host: a cut session's row lock freed {took:.1f}s after the cut")
    assert took <= bound, f"the lock held {took:.1f}s after the cut, bound {bound:.0f}s"


def test_a_gpu_host_cut_off_mid_batch_leaves_every_article_done_once_in_the_bucket(cluster):
    network, env, workdir = cluster
    gpu1 = next(p for p in network["gpu1"].processes if "worker" in p.args)
    catalog = write_catalog(workdir / "second.xlsx", 16, 100)
    batch = batch_of(env, catalog)
    deadline = time.monotonic() + 180
    while runs_by(env, batch, gpu1.pid) == 0:
        assert time.monotonic() < deadline, "the first GPU host never took work of the batch"
        time.sleep(0.2)

    network["gpu1"].cut()
    cut_at = time.monotonic()
    wait_until_ended(env["FARM_DATABASE_URL"], timeout=CUT_BOUND_SECONDS + 120)
    took = time.monotonic() - cut_at

    counts = tally(env)
    assert (counts["completed"], counts["lost"], counts["duplicated"]) == (24, 0, 0), counts
    sessions = session_factory(make_engine(env["FARM_DATABASE_URL"]))
    with sessions() as session:
        done = session.scalar(
            select(func.count()).select_from(Article)
            .where(Article.batch_id == batch, Article.status == ArticleStatus.done.value)
        )  # fmt: skip
    assert done == 16
    assert published_where_stored(env, batch) == []
    print(f"multi-host: 16 articles, a GPU host cut mid-batch; all done {took:.1f}s after the cut")
    assert took <= CUT_BOUND_SECONDS, f"{took:.1f}s after the cut, bound {CUT_BOUND_SECONDS}s"
