"""``FARM_OUTPUT_DIR=s3://...``: the farm, its exports, report and studio over a real
S3-compatible server (moto's, in this process)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import urllib.request
import zipfile
from pathlib import Path

import pytest
from moto.s3.models import S3Backend
from PIL import Image
from sqlalchemy import select

from db.engine import make_engine, session_factory
from db.models import Article, ArticleStatus, Render, StageRun
from tests.integration.farmproc import farm
from tests.integration.studio import Studio, free_port

pytestmark = [pytest.mark.integration, pytest.mark.own_services]

PREFIX = "output"
HEADER = ["sku", "name", "description", "model_name", "model_descr"]


def write_catalog(folder: Path, count: int = 3) -> Path:
    """A CSV of ``count`` articles."""
    path = folder / "catalog.csv"
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(HEADER)
        for n in range(1, count + 1):
            writer.writerow([f"A{n}", f"Kleid {n}", f"Ein rotes Kleid aus Baumwolle, Nr. {n}.",
                             "Anna", "1,75 m"])  # fmt: skip
    return path


@pytest.fixture
def s3_env(local_env, s3_server):
    """The local farm's environment with its outputs in the bucket ``farm``."""
    return (
        local_env
        | s3_server.aws
        | {
            "FARM_OUTPUT_DIR": f"s3://farm/{PREFIX}",
            "FARM_PROFILE": "tiny",
            "FARM_RETRY_BACKOFF_SECONDS": "0.1",
            "AWS_MAX_ATTEMPTS": "1",  # botocore's own retries off: the stage's rules retry
        }
    )


def rows(database_url: str, model) -> list:
    with session_factory(make_engine(database_url))() as session:
        return list(session.scalars(select(model).order_by(model.id)))


def run_farm(env: dict, catalog: Path) -> str:
    result = farm(env, "run", str(catalog), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_a_farm_run_puts_every_image_and_record_in_the_bucket_and_urls_in_the_database(
    s3_env, s3_server, tmp_path
):
    batch = run_farm(s3_env, write_catalog(tmp_path))

    keys = s3_server.objects(prefix=f"{PREFIX}/{batch}/")
    names = [key.removeprefix(f"{PREFIX}/{batch}/") for key in keys]
    assert sorted(n for n in names if n.startswith("attempts/")) == [
        f"attempts/A{n}.1.png" for n in (1, 2, 3)
    ]
    assert {"A1.png", "A1.json", "A2.png", "A3.json", "clip_statistics.txt"} <= set(names)
    assert not any(".farm-write-check" in key for key in s3_server.objects())
    assert not Path(s3_env["FARM_OUTPUT_DIR"]).exists() and not (tmp_path / "s3:").exists()

    articles = rows(s3_env["FARM_DATABASE_URL"], Article)
    assert [a.status for a in articles] == [ArticleStatus.done.value] * 3
    assert articles[0].image_path == f"s3://farm/{PREFIX}/{batch}/A1.png"
    renders = rows(s3_env["FARM_DATABASE_URL"], Render)
    assert sorted(r.image_path for r in renders) == [
        f"s3://farm/{PREFIX}/{batch}/attempts/A{n}.1.png" for n in (1, 2, 3)
    ]

    record = json.loads(get(s3_server, f"{PREFIX}/{batch}/A1.json"))
    assert record["image_path"] == articles[0].image_path
    with Image.open(io.BytesIO(get(s3_server, f"{PREFIX}/{batch}/A1.png"))) as image:
        assert image.size == (64, 64)
    stats = get(s3_server, f"{PREFIX}/{batch}/clip_statistics.txt").decode()
    assert "Total Samples: 3" in stats

    exported = farm(s3_env, "export", batch, "--format", "csv")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == f"s3://farm/{PREFIX}/{batch}/{batch}.csv"
    sheet = get(s3_server, f"{PREFIX}/{batch}/{batch}.csv").decode("utf-8-sig")
    assert articles[0].image_path in sheet

    reported = farm(s3_env, "report", batch)
    assert reported.returncode == 0, reported.stderr
    html = get(s3_server, f"{PREFIX}/{batch}/report.html").decode()
    assert html.count('class="thumb" src="data:image/webp;base64,') == 3  # read from the bucket

    local = tmp_path / "report.html"
    assert farm(s3_env, "report", batch, "--out", str(local)).returncode == 0
    assert local.read_text().count("data:image/webp;base64,") == 3


def get(s3_server, key: str) -> bytes:
    return s3_server.client.get_object(Bucket="farm", Key=key)["Body"].read()


def test_the_studio_hands_out_images_thumbnails_and_the_zip_from_the_bucket(
    s3_env, s3_server, tmp_path
):
    batch = run_farm(s3_env, write_catalog(tmp_path, count=2))
    database = s3_env["FARM_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE articles SET review_status = 'approved'")
    (render,) = [r for r in rows(s3_env["FARM_DATABASE_URL"], Render) if "/A1." in r.image_path]

    studio = Studio(s3_env, tmp_path / "studio.log").wait_ready()
    try:
        png = fetch(f"{studio.url}/renders/{render.id}/image")
        thumb = fetch(f"{studio.url}/renders/{render.id}/thumb")
        archive = fetch(f"{studio.url}/batches/{batch}/approved.zip")
    finally:
        studio.stop()

    assert png == get(s3_server, f"{PREFIX}/{batch}/attempts/A1.1.png")
    with Image.open(io.BytesIO(thumb)) as image:
        assert image.format == "JPEG"
    with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
        assert sorted(bundle.namelist()) == ["approved.csv", "images/A1.png", "images/A2.png"]
        assert bundle.read("images/A1.png") == get(s3_server, f"{PREFIX}/{batch}/A1.png")
    assert any(key.startswith(f"{PREFIX}/.thumbs/") for key in s3_server.objects())


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return response.read()


def refuse_puts(monkeypatch, times: int | None, part: str = "/attempts/") -> list[str]:
    """Make the server answer 500 to the next ``times`` puts (all when None) of keys with
    ``part``; the refused keys are listed in what is returned."""
    refused: list[str] = []
    original = S3Backend.put_object

    def put_object(self, bucket_name, key_name, *args, **kwargs):
        if part in key_name and (times is None or len(refused) < times):
            refused.append(key_name)
            raise RuntimeError("the store refuses")
        return original(self, bucket_name, key_name, *args, **kwargs)

    monkeypatch.setattr(S3Backend, "put_object", put_object)
    return refused


def test_a_refused_put_is_retried_and_the_article_still_ends_done(
    s3_env, s3_server, tmp_path, monkeypatch
):
    refused = refuse_puts(monkeypatch, times=2)
    batch = run_farm(s3_env, write_catalog(tmp_path, count=1))

    assert len(refused) == 2
    (article,) = rows(s3_env["FARM_DATABASE_URL"], Article)
    assert article.status == ArticleStatus.done.value
    failed = [r for r in rows(s3_env["FARM_DATABASE_URL"], StageRun) if r.outcome != "ok"]
    assert [r.stage for r in failed] == ["render", "render"]
    assert f"cannot write image s3://farm/{PREFIX}/{batch}/attempts/A1.1.png" in failed[0].error
    assert f"{PREFIX}/{batch}/attempts/A1.1.png" in s3_server.objects()


def test_a_store_that_keeps_refusing_fails_the_article_with_the_reason(
    s3_env, s3_server, tmp_path, monkeypatch
):
    refuse_puts(monkeypatch, times=None)
    env = s3_env | {"FARM_MAX_STAGE_ATTEMPTS": "2"}
    result = farm(env, "run", str(write_catalog(tmp_path, count=1)), timeout=600)

    assert result.returncode == 1, result.stderr
    (article,) = rows(s3_env["FARM_DATABASE_URL"], Article)
    assert article.status == ArticleStatus.failed.value
    assert article.error_stage == "render"
    assert "cannot write image s3://farm/" in article.error


@pytest.mark.parametrize(
    ("output", "aws", "says"),
    [
        ("s3://no-such-bucket/out", {}, "not found"),
        ("nosuch://bucket/out", {}, "no storage for nosuch:// URLs"),
        (
            "s3://farm/out",
            {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"},
            "the endpoint cannot be reached",
        ),
    ],  # fmt: skip
    ids=["missing bucket", "unknown scheme", "endpoint unreachable"],
)
@pytest.mark.parametrize("command", [["export", "b"], ["report", "b"], ["review", "serve"]])
def test_a_wrong_store_url_is_one_message_and_exit_6_at_start(
    s3_env, tmp_path, output, aws, says, command
):
    env = s3_env | {"FARM_OUTPUT_DIR": output} | aws
    result = farm(env, *command, timeout=120)
    assert result.returncode == 6, result.stderr
    assert f"FARM_OUTPUT_DIR={output}: cannot write there: {says}" in result.stderr
    assert "Traceback" not in result.stderr


def test_farm_run_checks_the_store_before_it_starts(s3_env, tmp_path):
    env = s3_env | {"FARM_OUTPUT_DIR": "s3://no-such-bucket/out"}
    result = farm(env, "run", str(write_catalog(tmp_path, count=1)))
    assert result.returncode == 6, result.stderr
    assert "FARM_OUTPUT_DIR=s3://no-such-bucket/out: cannot write there: not found" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
