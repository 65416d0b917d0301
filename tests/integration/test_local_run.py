"""`farm run` and `farm demo`: the whole farm in one process, with no external service."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import make_url, select

from db.engine import make_engine, session_factory
from db.models import (
    TERMINAL_STATUSES,
    Article,
    ArticleStatus,
    Render,
    StageRun,
    as_utc,
    utcnow,
)
from producer.catalog import read_catalog
from producer.cli import SAMPLE_CATALOG
from tests.data import SEED_CATALOG
from tests.integration.farmproc import FARM, farm
from tests.integration.test_farm_end_to_end import write_catalog

pytestmark = [pytest.mark.integration, pytest.mark.own_services]


def articles(database_url: str) -> list[Article]:
    with session_factory(make_engine(database_url))() as session:
        return list(session.scalars(select(Article).order_by(Article.id)))


def test_farm_run_takes_a_catalog_to_the_end_on_sqlite_without_any_service(local_env, tmp_path):
    files = write_catalog(tmp_path)
    result = farm(local_env | {"FARM_PROFILE": "tiny"}, "run", *map(str, files))
    assert result.returncode == 0, result.stderr
    batch_id = result.stdout.strip().splitlines()[-1]
    rows = articles(local_env["FARM_DATABASE_URL"])
    assert [a.status for a in rows] == [ArticleStatus.done.value] * 6
    output = Path(local_env["FARM_OUTPUT_DIR"]) / batch_id
    assert len(list(output.glob("*.png"))) == 6
    assert "Total Samples: 6" in (output / "clip_statistics.txt").read_text()


def test_farm_demo_renders_the_shipped_sample_catalog(local_env, tmp_path):
    result = farm(local_env, "demo", timeout=600)
    assert result.returncode == 0, result.stderr
    expected = len(read_catalog([SAMPLE_CATALOG]))
    assert expected >= 20
    batch_id = result.stdout.strip().splitlines()[-1]
    assert f"outputs: {Path(local_env['FARM_OUTPUT_DIR']).resolve() / batch_id}" in (
        result.stderr.replace("\n", "")
    )
    output = Path(local_env["FARM_OUTPUT_DIR"]) / batch_id
    pngs = sorted(output.glob("*.png"))
    assert len(pngs) == expected
    with Image.open(pngs[0]) as image:
        assert image.size == (64, 64)
    record = json.loads(pngs[0].with_suffix(".json").read_text())
    assert record["models"]["profile"] == "tiny"
    rows = articles(local_env["FARM_DATABASE_URL"])
    assert {a.status for a in rows} == {ArticleStatus.done.value}


def test_farm_run_stagewise_finishes_every_text_stage_before_the_first_render(local_env, tmp_path):
    files = write_catalog(tmp_path)
    env = local_env | {"FARM_PROFILE": "tiny", "FARM_RUN_SCHEDULE": "stagewise"}
    # No random-weight image reaches this score: every article is rendered 3 times.
    result = farm(env, "run", "--min-clip-score", "101", *map(str, files))
    assert result.returncode == 0, result.stderr
    sessions = session_factory(make_engine(local_env["FARM_DATABASE_URL"]))
    with sessions() as session:
        runs = list(session.scalars(select(StageRun).where(StageRun.outcome == "ok")))
        renders = session.scalars(select(Render.attempt)).all()
    rows = articles(local_env["FARM_DATABASE_URL"])
    assert [a.status for a in rows] == [ArticleStatus.needs_review.value] * 6
    assert sorted(renders) == sorted([1, 2, 3] * 6)
    text_ended = max(
        as_utc(r.started_at) + timedelta(seconds=r.seconds)
        for r in runs
        if r.stage in ("translate", "extract")
    )
    first_render = min(as_utc(r.started_at) for r in runs if r.stage == "render")
    assert text_ended <= first_render


@pytest.fixture
def mirrored_env(local_env, tmp_path):
    """The default profile over the tiny mirror: ``farm models mirror --tiny`` into HF_HOME."""
    hf_home = tmp_path / "hf"
    result = farm(local_env, "models", "mirror", "--tiny", str(hf_home))
    assert result.returncode == 0, result.stderr
    return local_env | {"HF_HOME": str(hf_home), "FARM_PROFILE": "default"}


def test_the_demo_runs_the_default_profiles_loading_code_on_the_real_repo_ids_over_the_mirror(
    mirrored_env,
):
    result = farm(mirrored_env, "--profile", "default", "demo", timeout=600)
    assert result.returncode == 0, result.stderr
    batch_id = result.stdout.strip().splitlines()[-1]
    pngs = sorted((Path(mirrored_env["FARM_OUTPUT_DIR"]) / batch_id).glob("*.png"))
    assert len(pngs) == len(read_catalog([SAMPLE_CATALOG]))
    rows = articles(mirrored_env["FARM_DATABASE_URL"])
    assert {a.status for a in rows} == {ArticleStatus.done.value}
    with Image.open(pngs[0]) as image:
        assert image.size == (1024, 1024)  # the default profile's shape
    models = json.loads(pngs[0].with_suffix(".json").read_text())["models"]
    assert models["profile"] == "default"
    assert models["renderer"]["repo"] == "black-forest-labs/FLUX.1-schnell"
    assert models["lora"]["repo"] == "aihpi/flux-fashion-lora"
    # The commit each worker loaded, the one refs/main names in the mirror.
    assert all(len(models[role]["commit"]) == 40 for role in ("translator", "renderer", "lora"))


SEED_SHEET = SEED_CATALOG / "article_descriptions_1.xlsx"
TERMINAL = {s.value for s in TERMINAL_STATUSES}


def done_so_far(url: str) -> int:
    """Articles done so far, read while the run writes: one read-only SQLite connection
    and one query, so that polling neither waits on the run's engine set-up nor misses
    the moment between the first articles done and the last."""
    path = make_url(url).database
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            query = "SELECT count(*) FROM articles WHERE status = ?"
            return db.execute(query, (ArticleStatus.done.value,)).fetchone()[0]
    except sqlite3.Error:  # the run has not made its database or its tables yet
        return 0


# What a quiet stop never prints after Ctrl-C: stages retried or failed by the stop itself.
STOP_NOISE = ("retry in", "RuntimeNotLoaded", "executor stopped", "executor is stopped",
              "WorkerLostError", "Traceback", "terminate called")  # fmt: skip
FREED = re.compile(r"stopped; (\d+) articles? in progress freed \((\d+) (?:was|were) mid-stage\)")


def test_ctrl_c_stops_farm_run_quietly_in_seconds_and_its_rerun_finishes_the_batch(
    local_env, tmp_path
):
    sheet = tmp_path / SEED_SHEET.name
    sheet.write_bytes(SEED_SHEET.read_bytes())
    env = local_env | {"FARM_PROFILE": "tiny", "FARM_RUN_SCHEDULE": "together"}
    url = env["FARM_DATABASE_URL"]
    running = subprocess.Popen(
        [*FARM, "run", str(sheet)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    # Mid-batch: some articles done, most still going through their stages.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and running.poll() is None:
        if done_so_far(url) >= 3:
            break
        time.sleep(0.3)
    signalled = time.monotonic()
    running.send_signal(signal.SIGINT)
    _out, err = running.communicate(timeout=120)
    took = time.monotonic() - signalled

    assert running.returncode == 130, err  # README's exit code for Ctrl-C
    assert took < 5, f"{took:.1f}s after Ctrl-C:\n{err}"
    notice = err.rstrip().splitlines()[-1]  # nothing after it
    freed = FREED.search(notice)
    assert freed and "Run the same command again" in notice, err
    assert not [line for line in err.splitlines() if any(n in line for n in STOP_NOISE)], err
    stopped = articles(url)
    in_flight = [a for a in stopped if a.status not in TERMINAL]
    assert 3 <= len(stopped) - len(in_flight) < len(stopped)
    assert int(freed.group(1)) == len(in_flight)  # every article not ended, as the DB has it
    with session_factory(make_engine(url))() as session:
        runs = session.scalars(select(StageRun)).all()
    # The stages the worker held when stopped (none when the stop found every message in
    # hand in the model call it waits for): each run closed as interrupted, none left
    # running, no retry or failure recorded, and every lease ended.
    interrupted = [r for r in runs if r.outcome == "interrupted"]
    assert int(freed.group(2)) == len(interrupted), err
    assert {r.outcome for r in runs} <= {"ok", "interrupted"}
    assert {r.worker for r in runs} == {"local@farm"}
    now = utcnow()
    assert all(a.lease_expires_at is None or as_utc(a.lease_expires_at) <= now for a in stopped)

    resumed = farm(env, "run", str(sheet), timeout=600)

    assert resumed.returncode == 0, resumed.stderr  # not 134: no thread left to abort the exit
    assert "terminate called" not in resumed.stderr
    batch_id = resumed.stdout.strip().splitlines()[-1]
    assert f"re-imported into batch {batch_id}" in resumed.stderr
    finished = articles(url)
    assert {a.batch_id for a in finished} == {batch_id}
    assert {a.status for a in finished} == {ArticleStatus.done.value}
    with session_factory(make_engine(url))() as session:
        ok = session.execute(
            select(StageRun.article_id, StageRun.stage).where(StageRun.outcome == "ok")
        ).all()
    assert len(ok) == len(set(ok)) == 4 * len(finished)  # every stage once per article
