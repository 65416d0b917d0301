"""The whole farm on real Redis, PostgreSQL and worker processes, with the tiny models."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path

import openpyxl
import pytest
import redis
from PIL import Image
from sqlalchemy import func, select

from db.engine import make_engine, session_factory
from db.models import Article, ArticleStatus, Render, StageRun
from tasks.queues import GPU_QUEUE, TEXT_QUEUE
from tests.integration.farmproc import farm, wait_until_ended
from tests.integration.faultkit import received

pytestmark = pytest.mark.integration

HEADER = ["name", "description", "model_name", "model_descr"]


def queued_messages(broker_url: str) -> int:
    """Messages waiting in the farm's queues, at every priority (kombu keeps a list for each)."""
    broker = redis.Redis.from_url(broker_url)
    keys = [key for queue in (TEXT_QUEUE, GPU_QUEUE) for key in broker.scan_iter(f"{queue}*")]
    return sum(broker.llen(key) for key in keys)


def wait_until_drained(broker_url: str, timeout: float = 30) -> int:
    """Messages still queued once the queues have emptied, or when ``timeout`` runs out.

    Every stage's message is taken by the stage that runs it, so nothing should be left: a
    copy left over (a look-again, a duplicate) would show here.
    """
    deadline = time.monotonic() + timeout
    while (left := queued_messages(broker_url)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _article(n: int) -> list[str]:
    return [
        f"Damen-Bluse Nr. {n}",
        f"Leichte Bluse aus Viskose mit {n} Knöpfen.\n\n\tKentkragen\n\tRegular Fit",
        "Bluse",
        f"weiß,uni,{n}",
    ]


def write_catalog(folder: Path) -> list[Path]:
    """Two files, three sheets, six articles."""
    workbook = openpyxl.Workbook()
    first = workbook.active
    first.title = "Damen"
    for sheet, numbers in ((first, (1, 2)), (workbook.create_sheet("Herren"), (3, 4))):
        sheet.append(HEADER)
        for n in numbers:
            sheet.append(_article(n))
    xlsx = folder / "catalog.xlsx"
    workbook.save(xlsx)
    csv_path = folder / "more.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(HEADER)
        writer.writerows([_article(5), _article(6)])
    return [xlsx, csv_path]


def test_a_catalog_of_several_files_and_sheets_goes_through_text_and_gpu_workers(
    farm_env, start_worker, tmp_path
):
    files = write_catalog(tmp_path)
    start_worker("text")
    start_worker("gpu", env=farm_env | {"FARM_DEVICE": "cpu"})
    submitted = farm(farm_env, "submit", *map(str, files))
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip().splitlines()[-1]

    wait_until_ended(farm_env["FARM_DATABASE_URL"])

    sessions = session_factory(make_engine(farm_env["FARM_DATABASE_URL"]))
    with sessions() as session:
        articles = list(session.scalars(select(Article).order_by(Article.id)))
        runs = list(session.scalars(select(StageRun).where(StageRun.outcome == "ok")))
        renders = list(session.scalars(select(Render)))
    assert [a.status for a in articles] == [ArticleStatus.done.value] * 6
    assert {(a.source_sheet, a.source_row) for a in articles} == {
        ("Damen", 2), ("Damen", 3), ("Herren", 2), ("Herren", 3), ("csv", 2), ("csv", 3),
    }  # fmt: skip
    assert len(renders) == 6
    output = Path(farm_env["FARM_OUTPUT_DIR"]) / batch_id
    for article in articles:
        with Image.open(output / f"{article.file_stem}.png") as image:
            assert image.format == "PNG"
            assert image.size == (64, 64)
        record = json.loads((output / f"{article.file_stem}.json").read_text())
        assert record["sample_id"] == article.key
        assert record["clip_score"] == pytest.approx(article.clip_score)
        assert record["original_description"] == article.source_text
        assert set(article.attributes) == {
            "product_type", "key_visual_features", "color_material_details", "design_aspects",
        }  # fmt: skip
    workers = {(run.stage, run.worker.split("@")[0].split("-")[0]) for run in runs}
    assert workers == {
        ("translate", "text"),
        ("extract", "text"),
        ("render", "gpu"),
        ("score", "gpu"),
    }
    stats = (output / "clip_statistics.txt").read_text()
    assert "Total Samples: 6" in stats

    status = farm(farm_env, "status", batch_id, "--json")
    assert status.returncode == 0, status.stderr
    [summary] = json.loads(status.stdout)
    assert summary["id"] == batch_id
    assert summary["total"] == 6
    assert summary["done"] == 6


def test_a_stage_delivered_twice_leaves_one_output(farm_env, start_worker, tmp_path):
    from tasks.app import configure
    from tasks.chains import article_chain
    from tasks.settings import Settings

    files = write_catalog(tmp_path)
    submitted = farm(farm_env, "submit", str(files[1]))
    assert submitted.returncode == 0, submitted.stderr
    sessions = session_factory(make_engine(farm_env["FARM_DATABASE_URL"]))
    with sessions() as session:
        first = session.scalars(select(Article).order_by(Article.id)).first()
    app = configure(
        Settings(database_url=farm_env["FARM_DATABASE_URL"], broker_url=farm_env["FARM_BROKER_URL"])
    )
    with app.producer_or_acquire() as producer:
        article_chain(first.id, first.key).apply_async(producer=producer)  # a duplicate chain

    start_worker("all", "--concurrency", "2", env=farm_env | {"FARM_DEVICE": "cpu"})
    wait_until_ended(farm_env["FARM_DATABASE_URL"])

    with sessions() as session:
        article = session.get(Article, first.id)
        renders = session.scalar(
            select(func.count()).select_from(Render).where(Render.article_id == first.id)
        )
        ok_runs = session.execute(
            select(StageRun.stage, func.count())
            .where(StageRun.article_id == first.id, StageRun.outcome == "ok")
            .group_by(StageRun.stage)
        ).all()
    assert article.status == ArticleStatus.done.value
    assert renders == 1
    assert dict(ok_runs) == {"translate": 1, "extract": 1, "render": 1, "score": 1}
    attempts = list((Path(farm_env["FARM_OUTPUT_DIR"]) / article.batch_id / "attempts").iterdir())
    assert len([p for p in attempts if p.name.startswith(f"{article.file_stem}.")]) == 1


def test_invalid_input_is_reported_whole_and_nothing_is_written_or_sent(farm_env, tmp_path):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Blatt"
    sheet.append(["name", "description", "model_name"])  # model_descr missing
    sheet.append(["Rock", "", "Rock"])
    bad = tmp_path / "bad.xlsx"
    workbook.save(bad)
    good = write_catalog(tmp_path)[1]
    not_a_sheet = tmp_path / "notes.xlsx"
    not_a_sheet.write_text("this is not a workbook")

    result = farm(farm_env, "submit", str(good), str(bad), str(not_a_sheet))

    assert result.returncode == 2
    assert "bad.xlsx" in result.stderr and "Blatt" in result.stderr
    assert "model_descr" in result.stderr
    assert "notes.xlsx" in result.stderr
    assert "Traceback" not in result.stderr
    sessions = session_factory(make_engine(farm_env["FARM_DATABASE_URL"]))
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Article)) == 0
    assert queued_messages(farm_env["FARM_BROKER_URL"]) == 0


def test_workers_gather_waiting_articles_into_one_model_call_and_each_stage_is_received_once(
    farm_env, start_worker, tmp_path
):
    # A second to gather: the batches' size, not the machine's speed, decides what is tested.
    env = farm_env | {"FARM_TEXT_BATCH_SIZE": "4", "FARM_SCORE_BATCH_SIZE": "4",
                      "FARM_BATCH_WAIT_SECONDS": "1"}  # fmt: skip
    catalog = tmp_path / "twelve.csv"
    with open(catalog, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(HEADER)
        writer.writerows(_article(n) for n in range(1, 13))
    submitted = farm(env, "submit", str(catalog))  # queued before any worker runs
    assert submitted.returncode == 0, submitted.stderr
    text = start_worker("text", env=env)
    wait_until_ended(env["FARM_DATABASE_URL"], ended=("extracted",))
    gpu = start_worker("gpu", env=env | {"FARM_DEVICE": "cpu"})
    wait_until_ended(env["FARM_DATABASE_URL"])
    assert wait_until_drained(env["FARM_BROKER_URL"]) == 0

    sessions = session_factory(make_engine(env["FARM_DATABASE_URL"]))
    with sessions() as session:
        statuses = session.scalars(select(Article.status)).all()
        ok_runs = session.execute(
            select(StageRun.article_id, StageRun.stage, func.count())
            .where(StageRun.outcome == "ok")
            .group_by(StageRun.article_id, StageRun.stage)
        ).all()
        renders = session.scalar(select(func.count()).select_from(Render))
    assert statuses == [ArticleStatus.done.value] * 12
    assert len(ok_runs) == 12 * 4 and {count for *_, count in ok_runs} == {1}
    assert renders == 12
    logs = [text.log_path, gpu.log_path]
    for task in ("farm.translate", "farm.extract", "farm.render", "farm.score"):
        assert received(logs, task) == 12, task  # no copy, no look-again
    text_log, gpu_log = text.log_path.read_text(), gpu.log_path.read_text()
    for stage in ("translate", "extract"):
        assert re.search(rf"{stage}: one call over 4 inputs", text_log), stage
    assert re.search(r"score: one call over [234] inputs", gpu_log)
    assert not re.search(r"render: one call over [2-9]", gpu_log)  # renders go one by one
