"""Several views per catalog row: one article per row and view, each with its own prompts,
seeds, files and threshold; imported, re-imported and submitted on a real SQLite database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import insert, select

from db.models import DEFAULT_VIEW, Article, ArticleStatus, Batch
from db.transitions import claim, new_token
from producer.catalog import CatalogRow
from producer.cli import main
from producer.imports import import_catalog
from tasks import publish, stages
from tasks.outputs import safe_stem
from workers.profiles import DEFAULT
from workers.prompts import FRONT, VIEWS, clip_prompt, generation_prompt

ROOT = Path(__file__).resolve().parents[2]
SHAPE = {"profile": "tiny"}
ATTRS = {"product_type": "skirt", "key_visual_features": "pleats", "color_material_details": "red"}


def row(key: str, description: str = "Rock aus Wolle", file: str = "c.csv") -> CatalogRow:
    return CatalogRow(file, "csv", 2, key, "Rock", description, "Rock", "rot")


def article(view: str = "front", **columns) -> stages.ArticleInput:
    values = {"id": 1, "key": "SKU-1", "batch_id": "b1", "file_stem": "SKU-1"}
    return stages.ArticleInput(**values, source_text="Rock", view=view, **columns)


def context(tmp_path: Path, **fields) -> stages.StageContext:
    return stages.StageContext(profile=DEFAULT, output_dir=tmp_path, worker="gpu@host", **fields)


def current(sessions) -> dict[tuple[str, str], Article]:
    with sessions() as session:
        rows = session.scalars(select(Article).where(Article.removed_at.is_(None))).all()
    return {(a.key, a.view): a for a in rows}


# --- stages ---------------------------------------------------------------------------------


def test_the_front_view_keeps_its_seeds_and_every_other_view_has_its_own():
    seeds = {view: stages.prepare_render(article(view), None)[1] for view in VIEWS}

    assert seeds["front"] == stages.render_seed("SKU-1", 1)  # the key alone
    assert seeds["back"] == stages.render_seed("SKU-1\x00back", 1)
    assert len(set(seeds.values())) == len(VIEWS)
    second = stages.prepare_render(article("back", render_attempt=2), None)[1]
    assert second == stages.render_seed("SKU-1\x00back", 2) != seeds["back"]


@pytest.mark.parametrize("view", VIEWS)
def test_extraction_builds_the_prompts_of_the_articles_view(view, tmp_path):
    output = stages.finish_extract(article(view), ATTRS, context(tmp_path))

    assert output.values["generation_prompt"] == generation_prompt(ATTRS, view)
    assert output.values["clip_prompt"] == clip_prompt(ATTRS, view)


def render_and_score(view: str, tmp_path: Path, value: float, **fields) -> stages.StageOutput:
    """One real PNG through the render stage's finish, then the score stage's finish."""
    ctx = context(tmp_path, **fields)
    made = stages.RenderedImage(Image.new("RGB", (8, 8), (200, 30, 30)), 7, 0.1)
    render = stages.finish_render(article(view), made, ctx).render
    rendered = article(
        view, renders=(stages.RenderInput(1, 7, render["image_path"], "m", None, None),)
    )
    return stages.finish_score(rendered, value, ctx)


def test_a_non_front_view_names_its_files_with_the_view_and_records_it(tmp_path):
    back = render_and_score("back", tmp_path, 0.3)
    front = render_and_score("front", tmp_path, 0.3)

    folder = tmp_path / "b1"
    assert back.values["image_path"] == str(folder / "SKU-1@back.png")
    assert front.values["image_path"] == str(folder / "SKU-1.png")
    assert (folder / "attempts" / "SKU-1@back.1.png").is_file()
    assert (folder / "attempts" / "SKU-1.1.png").is_file()
    for view, name in (("back", "SKU-1@back"), ("front", "SKU-1")):
        attempt = folder / "attempts" / f"{name}.1.png"
        row = {"id": 1, "key": "SKU-1", "view": view, "batch_id": "b1", "file_stem": "SKU-1",
               "source_text": "Rock", "source_file": "c.csv", "source_sheet": "csv",
               "source_row": 2, "translation": None, "attributes": None,
               "generation_prompt": None, "clip_prompt": None, "clip_score": 0.3,
               "best_attempt": 1, "seed": 7, "attempt_path": str(attempt), "model_id": "m",
               "lora": None}  # fmt: skip
        assert publish.write_published(row, tmp_path, DEFAULT) == folder / f"{name}.png"
        record = json.loads((folder / f"{name}.json").read_text())
        assert (record["sample_id"], record["view"]) == ("SKU-1", view)


def test_each_view_is_gated_by_the_threshold_on_its_own(tmp_path):
    low = render_and_score("detail", tmp_path, 0.1, min_clip_score=0.2, max_attempts=2)
    high = render_and_score("front", tmp_path, 0.3, min_clip_score=0.2, max_attempts=2)

    assert (low.then, low.values["render_attempt"]) == ("render", 2)
    assert high.then is None and high.status == ArticleStatus.done


def test_a_claimed_article_reaches_its_stage_with_its_view(engine):
    with engine.begin() as connection:
        connection.execute(insert(Batch).values(id="b1", profile="tiny"))
        values = {"batch_id": "b1", "key": "K", "file_stem": "K", "source_file": "c.csv"}
        values |= {"source_sheet": "csv", "source_row": 2, "source_text": "Rock"}
        connection.execute(insert(Article).values(**values, view="detail"))
    held = claim(engine, 1, "translate", "pending", new_token("w@h"), "w@h", 60)

    loaded = stages.ArticleInput.from_row(held.article)

    assert (loaded.key, loaded.view, loaded.stem) == ("K", "detail", "K@detail")


# --- import ---------------------------------------------------------------------------------


def test_an_import_with_views_stores_one_article_per_row_and_view(sessions):
    with sessions() as session:
        result = import_catalog(session, [row("A"), row("B")], "c", SHAPE, views=("front", "back"))

    assert (result.new, result.views, len(result.to_send)) == (4, ("front", "back"), 4)
    articles = current(sessions)
    assert set(articles) == {("A", "front"), ("A", "back"), ("B", "front"), ("B", "back")}
    assert articles["A", "back"].file_stem == articles["A", "front"].file_stem == "A"
    with sessions() as session:
        assert session.get(Batch, result.batch_id).views == ["front", "back"]


def test_a_reimport_with_one_more_view_adds_its_articles_and_leaves_the_others(sessions):
    with sessions() as session:
        first = import_catalog(session, [row("A"), row("B")], "c", SHAPE)
    before = {key: a.id for key, a in current(sessions).items()}
    with sessions() as session:
        again = import_catalog(session, [row("A"), row("B")], "c", SHAPE, views=("front", "side"))

    assert (again.batch_id, again.new, again.changed, again.unchanged) == (first.batch_id, 2, 0, 2)
    assert sorted(key for _id, key in again.to_send) == ["A", "B"]
    after = current(sessions)
    assert {key: after[key].id for key in before} == before
    assert {a.view for a in after.values()} == {"front", "side"}


def test_a_changed_row_redoes_every_view_of_it(sessions):
    views = ("front", "back")
    with sessions() as session:
        import_catalog(session, [row("A"), row("B")], "c", SHAPE, views=views)
        again = import_catalog(session, [row("A", "Rock aus Leinen"), row("B")], "c", SHAPE)

    assert (again.new, again.changed, again.unchanged, again.views) == (0, 2, 2, views)
    assert [key for _id, key in again.to_send] == ["A", "A"]


def test_a_batch_keeps_its_views_when_submitted_again_without_views(sessions):
    with sessions() as session:
        first = import_catalog(session, [row("A")], "c", SHAPE, views=("front", "detail"))
        again = import_catalog(session, [row("A")], "c", SHAPE, default_views=("front",))

    assert again.views == ("front", "detail")
    assert (again.new, again.unchanged, again.removed) == (0, 2, 0)
    with sessions() as session:
        assert session.get(Batch, first.batch_id).views == ["front", "detail"]


def test_a_new_batch_without_views_takes_the_default_views(sessions):
    with sessions() as session:
        result = import_catalog(session, [row("A")], "c", SHAPE, default_views=("back",))

    assert result.views == ("back",) and set(current(sessions)) == {("A", "back")}


def test_a_view_left_out_is_removed_and_comes_back_with_its_results(sessions):
    with sessions() as session:
        import_catalog(session, [row("A")], "c", SHAPE, views=("front", "back"))
    back = current(sessions)["A", "back"]
    with sessions() as session:
        session.get(Article, back.id).status = ArticleStatus.done.value
        session.commit()
        fewer = import_catalog(session, [row("A")], "c", SHAPE, views=("front",))
    assert (fewer.unchanged, fewer.removed) == (1, 1)
    assert set(current(sessions)) == {("A", "front")}
    with sessions() as session:
        back_again = import_catalog(session, [row("A")], "c", SHAPE, views=("front", "back"))
    assert (back_again.new, back_again.unchanged, back_again.to_send) == (0, 2, [])
    assert current(sessions)["A", "back"].status == ArticleStatus.done.value


def test_a_row_gone_from_its_file_removes_every_view_of_it(sessions):
    with sessions() as session:
        import_catalog(session, [row("A"), row("B")], "c", SHAPE, views=("front", "back"))
        again = import_catalog(session, [row("A")], "c", SHAPE)

    assert (again.unchanged, again.removed) == (2, 2)
    assert set(current(sessions)) == {("A", "front"), ("A", "back")}


# --- the CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["submit", "c.csv"], ["run", "c.csv"], ["demo"]])
def test_a_bad_view_exits_2_naming_views_and_the_allowed_ones(command, tmp_path):
    database = f"sqlite:///{tmp_path / 'farm.db'}"
    args = ["--database-url", database, *command[:1], "--views", "front,top", *command[1:]]

    result = CliRunner().invoke(main, args)

    assert result.exit_code == 2
    assert "Invalid value for '--views': unknown view 'top'" in result.output
    assert "choose from front, back, side, detail" in result.output
    assert not (tmp_path / "farm.db").exists()


def test_a_bad_farm_views_exits_2_naming_the_variable(tmp_path):
    database = f"sqlite:///{tmp_path / 'farm.db'}"

    result = CliRunner().invoke(
        main, ["--database-url", database, "submit", "c.csv"], env={"FARM_VIEWS": "front,top"}
    )

    assert result.exit_code == 2
    assert "Invalid value for FARM_VIEWS: unknown view 'top'" in result.output


def farm_submit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``farm submit`` in its own process, on SQLite and an in-memory broker."""
    command = [sys.executable, "-m", "producer.cli", "--database-url"]
    command += [f"sqlite:///{tmp_path / 'farm.db'}", "--broker-url", "memory://"]
    command += ["--profile", "tiny", "submit", *args]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    environment.pop("FARM_VIEWS", None)
    return subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )


def test_farm_submit_with_views_and_again_without_keeps_the_batchs_views(tmp_path):
    catalog = tmp_path / "c.csv"
    catalog.write_text(
        "sku,name,description,model_name,model_descr\n"
        "A-1,Rock,Rock aus Wolle,Lea,S\nA-2,Bluse,Bluse aus Seide,Lea,S\n",
        encoding="utf-8",
    )

    first = farm_submit(tmp_path, "--views", "front,back,detail", "c.csv")
    again = farm_submit(tmp_path, "c.csv")

    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    shown = " ".join(first.stderr.split())
    assert "6 new, 0 changed, 0 unchanged, 0 removed (articles of views front, back, detail)" in (
        shown
    )
    assert "6 chains sent" in shown
    assert "0 new, 0 changed, 6 unchanged, 0 removed" in " ".join(again.stderr.split())
    assert again.stdout == first.stdout  # the same batch


def test_a_view_never_shares_a_file_or_a_seed_with_another_rows_front():
    # SKU "A" seen from the back and SKU "A-back" / "A@back" from the front.
    back = stages.ArticleInput(id=1, key="A", batch_id="b", file_stem="A", source_text="x",
                               view="back")  # fmt: skip
    fronts = [
        stages.ArticleInput(id=2, key=key, batch_id="b", file_stem=safe_stem(key), source_text="x")
        for key in ("A-back", "A@back")
    ]
    assert back.stem not in {front.stem for front in fronts}
    assert back.seed_key not in {front.seed_key for front in fronts}


def test_the_default_view_of_the_database_is_the_prompts_front():
    assert DEFAULT_VIEW == FRONT == VIEWS[0]
