"""Exporting a batch's results as xlsx, csv and jsonl from a real SQLite database."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import event

from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus, Batch, Render, StageRun
from producer.export import COLUMNS, EXPORT_FORMATS, export_rows, neutralise, write_export

HYPERLINK = '=HYPERLINK("http://evil.example","click")'


def add_article(session, batch_id: str, key: str, **columns) -> Article:
    values = {
        "batch_id": batch_id,
        "key": key,
        "file_stem": key,
        "source_file": "catalog.xlsx",
        "source_sheet": "Damen",
        "source_row": 2,
        "source_text": "Bluse aus Viskose",
        "status": ArticleStatus.pending.value,
    } | columns
    article = Article(**values)
    session.add(article)
    session.flush()
    return article


def add_render(session, article: Article, attempt: int, seed: int, score: float | None) -> None:
    session.add(
        Render(
            article_id=article.id,
            attempt=attempt,
            seed=seed,
            model_id="tiny-sd",
            lora="lora-a" if attempt == 1 else None,
            width=64,
            height=64,
            steps=2,
            image_path=f"/out/{article.key}.{attempt}.png",
            seconds=0.5,
            worker="gpu@host",
            clip_score=score,
        )
    )


def add_run(session, article: Article, stage: str, worker: str, outcome: str, seconds: float):
    session.add(
        StageRun(
            article_id=article.id,
            stage=stage,
            attempt=1,
            worker=worker,
            outcome=outcome,
            seconds=seconds,
        )
    )
    session.flush()


@pytest.fixture
def sessions(tmp_path):
    """A migrated SQLite database holding batch b1 (three articles) and a decoy batch b2."""
    engine = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    migrate(engine)
    factory = session_factory(engine)
    with factory() as session:
        session.add_all(
            [Batch(id="b1", profile="tiny", min_clip_score=0.25), Batch(id="b2", profile="tiny")]
        )
        done = add_article(
            session,
            "b1",
            "SKU-1",
            status=ArticleStatus.done.value,
            translation="Light blouse",
            attributes={"garment": "Bluse", "colour": "weiß"},
            generation_prompt="a white blouse",
            clip_prompt="white blouse",
            clip_score=0.31,
            image_path="/out/b1/SKU-1.png",
        )
        add_render(session, done, 1, seed=11, score=0.31)
        add_render(session, done, 2, seed=22, score=0.2)
        add_run(session, done, "translate", "text@a", "retry", 9.0)
        add_run(session, done, "translate", "text@b", "ok", 1.5)
        add_run(session, done, "translate", "text@c", "ok", 2.0)
        add_run(session, done, "extract", "text@b", "ok", 0.7)
        add_run(session, done, "render", "gpu@a", "ok", 3.0)
        add_run(session, done, "score", "gpu@a", "error", 0.1)
        add_run(session, done, "score", "gpu@b", "ok", 0.2)
        hostile = add_article(
            session,
            "b1",
            HYPERLINK,
            source_row=3,
            status=ArticleStatus.failed.value,
            translation="+1 for this blouse",
            generation_prompt="@SUM(A1:A9)",
            clip_prompt="\tcmd",
            error_kind="InvalidArticle",
            error="-2 is not a size\x01",
            error_stage="extract",
        )
        add_run(session, hostile, "translate", "text@a", "ok", 1.0)
        unscored = add_article(session, "b1", "SKU-3", status=ArticleStatus.rendered.value)
        add_render(session, unscored, 1, seed=5, score=None)
        add_render(session, unscored, 2, seed=6, score=None)
        decoy = add_article(session, "b2", "SKU-1", status=ArticleStatus.done.value)
        add_render(session, decoy, 1, seed=99, score=0.9)
        add_run(session, decoy, "translate", "text@z", "ok", 5.0)
        session.commit()
    yield factory
    engine.dispose()


def read_back(path: Path, fmt: str) -> list[dict]:
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if fmt == "csv":
        with open(path, encoding="utf-8-sig", newline="") as stream:
            return list(csv.DictReader(stream))
    sheet = load_workbook(path).active
    header, *body = sheet.iter_rows(values_only=True)
    return [dict(zip(header, values, strict=True)) for values in body]


def expected_cell(value: object, fmt: str) -> object:
    if fmt == "jsonl":
        return value
    if isinstance(value, str) and fmt == "xlsx":
        value = value.replace("\x01", "")  # a control character the xlsx format cannot hold
    value = neutralise(value)
    if fmt == "csv":
        return "" if value is None else str(value)
    return value


def test_rows_are_one_per_article_of_the_batch_in_article_order(sessions):
    with sessions() as session:
        rows = export_rows(session, "b1")
    assert [r["key"] for r in rows] == ["SKU-1", HYPERLINK, "SKU-3"]
    assert all(tuple(r) == COLUMNS for r in rows)
    assert [r["attempts"] for r in rows] == [2, 0, 2]
    assert json.loads(rows[0]["attributes"]) == {"garment": "Bluse", "colour": "weiß"}
    assert rows[1]["attributes"] is None


def test_the_seed_is_that_of_the_best_scored_render_else_of_the_latest_attempt(sessions):
    with sessions() as session:
        best, failed, unscored = export_rows(session, "b1")
    assert (best["seed"], best["lora"], best["renderer_model"]) == (11, "lora-a", "tiny-sd")
    assert best["best_clip_score"] == 0.31
    assert failed["seed"] is None and failed["renderer_model"] is None
    assert unscored["seed"] == 6


def test_workers_and_seconds_come_from_the_latest_successful_run_of_each_stage(sessions):
    with sessions() as session:
        done, failed, unscored = export_rows(session, "b1")
    assert (done["translate_worker"], done["translate_seconds"]) == ("text@c", 2.0)
    assert (done["score_worker"], done["score_seconds"]) == ("gpu@b", 0.2)
    assert done["extract_worker"] == "text@b" and done["render_seconds"] == 3.0
    assert failed["translate_worker"] == "text@a" and failed["extract_worker"] is None
    assert unscored["translate_seconds"] is None


def test_the_rows_take_one_query_per_table_whatever_the_batch_size(sessions):
    statements: list[str] = []
    with sessions() as session:
        engine = session.get_bind()
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            export_rows(session, "b1")
        finally:
            event.remove(engine, "before_cursor_execute", listener)
    assert len(statements) == 4  # batches, articles, renders, stage_runs


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_every_format_round_trips_and_is_written_without_leftovers(sessions, tmp_path, fmt):
    with sessions() as session:
        rows = export_rows(session, "b1")
    path = tmp_path / "exports" / f"b1.{fmt}"
    assert write_export(rows, path, fmt) == 3
    back = read_back(path, fmt)
    assert len(back) == len(rows)
    for written, original in zip(back, rows, strict=True):
        assert list(written) == list(COLUMNS)
        assert written == {c: expected_cell(original[c], fmt) for c in COLUMNS}
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_formula_cells_are_neutralised_in_spreadsheet_formats(sessions, tmp_path, fmt):
    with sessions() as session:
        write_export(export_rows(session, "b1"), tmp_path / f"b1.{fmt}", fmt)
    hostile = read_back(tmp_path / f"b1.{fmt}", fmt)[1]
    assert hostile["key"] == "'" + HYPERLINK
    assert hostile["translation"] == "'+1 for this blouse"
    assert hostile["error"].startswith("'-2 is not a size")
    assert hostile["generation_prompt"] == "'@SUM(A1:A9)"
    assert hostile["clip_prompt"] == "'\tcmd"
    if fmt == "xlsx":
        cells = load_workbook(tmp_path / "b1.xlsx").active
        assert all(cell.data_type != "f" for row in cells.iter_rows() for cell in row)


def test_jsonl_keeps_the_raw_values(sessions, tmp_path):
    with sessions() as session:
        write_export(export_rows(session, "b1"), tmp_path / "b1.jsonl", "jsonl")
    hostile = read_back(tmp_path / "b1.jsonl", "jsonl")[1]
    assert hostile["key"] == HYPERLINK
    assert hostile["error"] == "-2 is not a size\x01"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("SKU-1", "SKU-1"),
        ("", ""),
        (-2, -2),
        (None, None),
    ],
)
def test_neutralise_prefixes_only_strings_a_spreadsheet_would_evaluate(value, expected):
    assert neutralise(value) == expected


def test_an_empty_batch_exports_the_header_only(sessions, tmp_path):
    with sessions() as session:
        session.add(Batch(id="empty", profile="tiny"))
        session.commit()
        rows = export_rows(session, "empty")
    assert rows == []
    assert write_export(rows, tmp_path / "empty.csv", "csv") == 0
    header = (tmp_path / "empty.csv").read_text(encoding="utf-8-sig").splitlines()
    assert header == [",".join(COLUMNS)]


def test_an_unknown_batch_is_a_lookup_error(sessions):
    with sessions() as session, pytest.raises(LookupError, match="no batch 'nope'"):
        export_rows(session, "nope")


def test_an_unknown_format_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'xls'"):
        write_export([], tmp_path / "out" / "b1.xls", "xls")
    assert not (tmp_path / "out").exists()


def test_the_export_and_report_modules_do_not_import_torch():
    code = "import sys, producer.export, producer.report; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
