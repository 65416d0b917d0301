"""Operating a catalog: score-gated regeneration, requeue, re-import and status, on real
Redis, PostgreSQL and worker processes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.engine import make_engine, session_factory
from db.models import Article, ArticleStatus, Render, StageRun
from tests.integration.farmproc import farm, wait_until_ended
from tests.integration.test_farm_end_to_end import HEADER, _article

pytestmark = pytest.mark.integration


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["sku", *HEADER])
        writer.writerows(rows)
    return path


def catalog_rows(count: int) -> list[list[str]]:
    return [[f"SKU-{n}", *_article(n)] for n in range(1, count + 1)]


def sessions_for(env: dict):
    return session_factory(make_engine(env["FARM_DATABASE_URL"]))


def submit(env: dict, *args: str) -> str:
    result = farm(env, "submit", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_articles_below_the_threshold_are_rendered_again_until_they_need_review(
    farm_env, start_worker, tmp_path
):
    env = farm_env | {"FARM_MAX_ATTEMPTS": "3", "FARM_DEVICE": "cpu"}
    start_worker("all", env=env)
    catalog = write_csv(tmp_path / "c.csv", catalog_rows(3))
    submit(env, str(catalog), "--min-clip-score", "1e9")
    wait_until_ended(env["FARM_DATABASE_URL"])

    with sessions_for(env)() as session:
        articles = list(session.scalars(select(Article)))
        for article in articles:
            assert article.status == ArticleStatus.needs_review.value
            renders = sorted(article.renders, key=lambda r: r.attempt)
            assert [r.attempt for r in renders] == [1, 2, 3]
            assert len({r.seed for r in renders}) == 3
            best = max(renders, key=lambda r: r.clip_score)
            assert article.clip_score == pytest.approx(best.clip_score)
            assert Path(article.image_path).read_bytes() == Path(best.image_path).read_bytes()


def test_requeue_dry_run_changes_nothing_and_a_real_requeue_renders_a_new_attempt(
    farm_env, start_worker, tmp_path
):
    env = farm_env | {"FARM_DEVICE": "cpu"}
    start_worker("all", env=env)
    batch_id = submit(env, str(write_csv(tmp_path / "c.csv", catalog_rows(3))))
    wait_until_ended(env["FARM_DATABASE_URL"])

    dry = farm(env, "requeue", "--batch", batch_id, "--articles", "SKU-2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "SKU-2: done → from render" in dry.stderr
    assert "1 article would be requeued" in dry.stderr
    with sessions_for(env)() as session:
        assert session.scalar(select(func.count()).select_from(Render)) == 3

    real = farm(env, "requeue", "--batch", batch_id, "--articles", "SKU-2")
    assert real.returncode == 0, real.stderr
    wait_until_ended(env["FARM_DATABASE_URL"])
    with sessions_for(env)() as session:
        article = session.scalars(select(Article).where(Article.key == "SKU-2")).one()
        assert article.status == ArticleStatus.done.value
        assert article.requeues == 1
        assert sorted(r.attempt for r in article.renders) == [1, 2]
        others = session.scalar(
            select(func.count()).select_from(Render).where(Render.article_id != article.id)
        )
    assert others == 2


def test_requeued_articles_do_not_wait_behind_a_queued_catalog(farm_env, start_worker, tmp_path):
    env = farm_env | {"FARM_DEVICE": "cpu"}
    first = start_worker("all", env=env)
    submit(env, str(write_csv(tmp_path / "small.csv", catalog_rows(2))))
    wait_until_ended(env["FARM_DATABASE_URL"])
    first.stop()

    big = [[f"BIG-{n}", *_article(n)] for n in range(1, 41)]
    submit(env, str(write_csv(tmp_path / "big.csv", big)))
    requeued = farm(
        env, "requeue", "--all-batches", "--articles", "SKU-1", "--from-stage", "translate"
    )
    assert requeued.returncode == 0, requeued.stderr
    start_worker("all", env=env)
    wait_until_ended(env["FARM_DATABASE_URL"])

    with sessions_for(env)() as session:
        finished = session.scalars(
            select(Article.key).where(Article.status == "done").order_by(Article.finished_at)
        ).all()
    big_done_before = finished.index("SKU-1") - finished[: finished.index("SKU-1")].count("SKU-2")
    assert big_done_before <= 3, finished[:10]


def test_submitting_an_edited_catalog_again_redoes_only_the_changed_rows(
    farm_env, start_worker, tmp_path
):
    env = farm_env | {"FARM_DEVICE": "cpu"}
    start_worker("all", env=env)
    rows = catalog_rows(4)
    catalog = write_csv(tmp_path / "katalog.csv", rows)
    batch_id = submit(env, str(catalog))
    wait_until_ended(env["FARM_DATABASE_URL"])

    rows[1][2] = "Eine ganz neue Beschreibung aus Leinen."
    rows.append(["SKU-99", *_article(99)])
    write_csv(catalog, rows)
    again = farm(env, "submit", str(catalog))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == batch_id
    assert "1 new, 1 changed, 3 unchanged, 0 removed; 2 chains sent" in again.stderr.replace(
        "\n", " "
    )
    wait_until_ended(env["FARM_DATABASE_URL"])

    with sessions_for(env)() as session:
        translations = dict(
            session.execute(
                select(Article.key, func.count())
                .join(StageRun, StageRun.article_id == Article.id)
                .where(StageRun.stage == "translate", StageRun.outcome == "ok")
                .group_by(Article.key)
            ).all()
        )
        changed = session.scalars(select(Article).where(Article.key == "SKU-2")).one()
    assert translations == {"SKU-1": 1, "SKU-2": 2, "SKU-3": 1, "SKU-4": 1, "SKU-99": 1}
    assert "Leinen" in changed.source_text
    assert changed.status == ArticleStatus.done.value

    status = farm(env, "status", batch_id, "--json")
    [summary] = json.loads(status.stdout)
    assert summary["total"] == 5 and summary["done"] == 5
    assert summary["eta_seconds"] == 0
    assert summary["rate_per_hour"] > 0
    assert set(summary["scores"]) == {"mean", "median", "min", "max"}
