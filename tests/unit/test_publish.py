"""Publishing from the stored row: only what the store took, and the last write is the best."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from db import published, transitions
from db.clock import server_time
from db.models import Article, Batch, Render
from tasks import publish as publishing

PROFILE = SimpleNamespace(name="tiny", translator="t", extractor="e", scorer="s")


@pytest.fixture
def article_id(sessions, tmp_path):
    with sessions() as session, session.begin():
        session.add(Batch(id="b1", profile="tiny"))
        article = Article(batch_id="b1", key="SKU-1", file_stem="SKU-1", source_file="c.csv",
                          source_sheet="csv", source_row=2, source_text="Rock",
                          status="rendered", clip_prompt="a skirt")  # fmt: skip
        session.add(article)
        session.flush()
        for attempt in (1, 2, 3):
            path = tmp_path / "out" / "b1" / "attempts" / f"SKU-1.{attempt}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"attempt {attempt}".encode())
            session.add(Render(article_id=article.id, attempt=attempt, seed=attempt,
                               model_id="flux", width=8, height=8, steps=1,
                               image_path=str(path), seconds=0.1, worker="w"))  # fmt: skip
        return article.id


def store_best(engine, article_id: int, attempt: int, score: float) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(Article.__table__)
            .where(Article.__table__.c.id == article_id)
            .values(best_attempt=attempt, clip_score=score, status="done")
        )


def published_picture(tmp_path) -> bytes:
    return (tmp_path / "out" / "b1" / "SKU-1.png").read_bytes()


def test_the_stored_best_is_published_with_its_json_and_recorded(engine, article_id, tmp_path):
    store_best(engine, article_id, 2, 27.5)

    assert publishing.publish(engine, article_id, tmp_path / "out", PROFILE)

    assert published_picture(tmp_path) == b"attempt 2"
    record = json.loads((tmp_path / "out" / "b1" / "SKU-1.json").read_text())
    assert record["attempt"] == 2 and record["seed"] == 2 and record["clip_score"] == 27.5
    # Rows that recorded no commits name the repos, the commits unknown.
    assert record["models"] == {
        "profile": "tiny", "translator": {"repo": "t", "commit": None},
        "extractor": {"repo": "e", "commit": None}, "renderer": {"repo": "flux", "commit": None},
        "lora": None, "scorer": {"repo": "s", "commit": None},
    }  # fmt: skip
    with engine.connect() as connection:
        stored = connection.execute(select(Article.published_attempt)).scalar_one()
    assert stored == 2


def test_an_article_without_a_stored_best_publishes_nothing(engine, article_id, tmp_path):
    assert not publishing.publish(engine, article_id, tmp_path / "out", PROFILE)
    assert not (tmp_path / "out" / "b1" / "SKU-1.png").exists()


def test_a_late_publisher_of_an_older_best_ends_with_the_stored_best_on_disk(
    engine, article_id, tmp_path, monkeypatch
):
    store_best(engine, article_id, 1, 20.0)
    write = publishing.write_published

    def newer_best_stored_meanwhile(row, output_dir, profile):
        path = write(row, output_dir, profile)  # writes attempt 1 ...
        if row["best_attempt"] == 1:  # ... while another worker stores and publishes 3
            store_best(engine, article_id, 3, 30.0)
            write({**row, "best_attempt": 3, "attempt_path": row["attempt_path"][:-5] + "3.png"},
                  output_dir, profile)  # fmt: skip
            write(row, output_dir, profile)  # the late write of attempt 1 lands last
        return path

    monkeypatch.setattr(publishing, "write_published", newer_best_stored_meanwhile)
    assert publishing.publish(engine, article_id, tmp_path / "out", PROFILE)

    assert published_picture(tmp_path) == b"attempt 3"
    record = json.loads((tmp_path / "out" / "b1" / "SKU-1.json").read_text())
    assert record["attempt"] == 3 and record["clip_score"] == 30.0


def test_the_reaper_publishes_what_a_crash_left_unpublished(engine, article_id, tmp_path):
    store_best(engine, article_id, 3, 30.0)
    with engine.begin() as connection:  # stored a while ago; its worker died before publishing
        connection.execute(
            update(Article.__table__).values(updated_at=Article.__table__.c.created_at)
        )
        assert published.stored_best(connection, grace_seconds=3600) == []

    assert publishing.publish_pending(engine, tmp_path / "out", PROFILE, grace_seconds=0) == 1

    assert published_picture(tmp_path) == b"attempt 3"
    assert publishing.publish_pending(engine, tmp_path / "out", PROFILE, grace_seconds=0) == 0


def test_a_score_stage_that_lost_its_lease_stores_nothing_to_publish(engine, article_id):
    late = transitions.claim(engine, article_id, "score", "rendered", "w1.tok", "w1", 60)
    with engine.begin() as connection:  # its lease ran out; another worker claims the article
        connection.execute(update(Article.__table__).values(lease_expires_at=server_time(-1)))
    newer = transitions.claim(engine, article_id, "score", "rendered", "w2.tok", "w2", 60)
    assert newer is not None

    assert not transitions.complete(engine, late, "done", {"best_attempt": 1}, ended=True)
    with engine.connect() as connection:
        assert published.stored_best(connection, [article_id]) == []


def test_the_json_names_the_commits_each_stage_recorded_not_the_publishers_models(
    engine, article_id, tmp_path
):
    text = {"translator": {"repo": "org/t", "commit": "1" * 40},
            "extractor": {"repo": "org/e", "commit": "2" * 40}}  # fmt: skip
    image = {"renderer": {"repo": "org/flux", "commit": "3" * 40},
             "lora": {"repo": "org/lora", "commit": "4" * 40},
             "scorer": {"repo": "/models/clip", "commit": "local"}}  # fmt: skip
    with engine.begin() as connection:
        connection.execute(update(Article.__table__).values(model_commits=text))
        connection.execute(
            update(Render.__table__).where(Render.__table__.c.attempt == 2)
            .values(model_commits=image)
        )  # fmt: skip
    store_best(engine, article_id, 2, 27.5)

    assert publishing.publish(engine, article_id, tmp_path / "out", PROFILE)

    record = json.loads((tmp_path / "out" / "b1" / "SKU-1.json").read_text())
    assert record["models"] == {"profile": "tiny"} | text | image
