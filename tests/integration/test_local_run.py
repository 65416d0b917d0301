"""`farm run` and `farm demo`: the whole farm in one process, with no external service."""

from __future__ import annotations

import contextlib
import json
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
from db.models import Article, ArticleStatus, Render, StageRun, as_utc
from producer.catalog import read_catalog
from producer.cli import SAMPLE_CATALOG
from tests.data import SEED_CATALOG
from tests.integration.farmproc import FARM, farm
from tests.integration.test_farm_end_to_end import write_catalog

pytestmark = pytest.mark.integration


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


def test_an_interrupted_farm_run_resumes_its_batch_and_does_no_stage_twice(local_env, tmp_path):
    sheet = tmp_path / SEED_SHEET.name
    sheet.write_bytes(SEED_SHEET.read_bytes())
    env = local_env | {"FARM_PROFILE": "tiny", "FARM_RUN_SCHEDULE": "together"}
    url = env["FARM_DATABASE_URL"]
    running = subprocess.Popen(
        [*FARM, "run", str(sheet)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and running.poll() is None:
        if done_so_far(url) >= 3:
            break
        time.sleep(0.3)
    running.send_signal(signal.SIGINT)
    _out, err = running.communicate(timeout=120)

    assert running.returncode == 130, err
    assert "Run the same command again" in err and "Traceback" not in err
    stopped = articles(url)
    assert 3 <= sum(a.status == ArticleStatus.done.value for a in stopped) < len(stopped)

    resumed = farm(env, "run", str(sheet), timeout=600)

    assert resumed.returncode == 0, resumed.stderr
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
