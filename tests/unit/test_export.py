"""Exporting a batch's results as xlsx, csv, jsonl and parquet from a real SQLite database."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook
from sqlalchemy import event

from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus, Batch, Render, StageRun
from producer import export
from producer.export import (
    COLUMNS,
    EXPORT_FORMATS,
    LOCATING_COLUMNS,
    RESULT_COLUMNS,
    ExportError,
    export_rows,
    neutralise,
    source_column,
    write_export,
    write_export_stream,
)

HYPERLINK = '=HYPERLINK("http://evil.example","click")'
REMOVED_AT = datetime(2024, 5, 1, tzinfo=timezone.utc)
# The columns of a batch whose articles were all stored before their source cells were kept.
OLDER_COLUMNS = (*LOCATING_COLUMNS, "source_text", *RESULT_COLUMNS)


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
    """A migrated SQLite database holding batch b1 (three articles and a removed one) and a
    decoy batch b2; none of them has source cells."""
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
        gone = add_article(session, "b1", "SKU-GONE", source_row=9, removed_at=REMOVED_AT)
        add_render(session, gone, 1, seed=7, score=0.5)
        add_run(session, gone, "translate", "text@a", "ok", 1.0)
        session.commit()
    yield factory
    engine.dispose()


def read_back(path: Path, fmt: str) -> list[dict]:
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if fmt == "csv":
        with open(path, encoding="utf-8-sig", newline="") as stream:
            return list(csv.DictReader(stream))
    if fmt == "parquet":
        frame = pd.read_parquet(path)
        return frame.astype(object).where(frame.notna(), None).to_dict("records")
    sheet = load_workbook(path).active
    header, *body = sheet.iter_rows(values_only=True)
    return [dict(zip(header, values, strict=True)) for values in body]


def expected_cell(value: object, fmt: str) -> object:
    if fmt in ("jsonl", "parquet"):
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
    assert all(tuple(r) == OLDER_COLUMNS for r in rows)
    assert {r["source_text"] for r in rows} == {"Bluse aus Viskose"}
    assert [r["attempts"] for r in rows] == [2, 0, 2]
    assert json.loads(rows[0]["attributes"]) == {"garment": "Bluse", "colour": "weiß"}
    assert rows[1]["attributes"] is None


def test_each_row_names_its_view_and_review_verdict_right_after_the_key(sessions, tmp_path):
    with sessions() as session:
        session.add(Batch(id="v1", profile="tiny", views=["front", "back"]))
        add_article(session, "v1", "SKU-1")
        add_article(
            session, "v1", "SKU-1", view="back", review_status="approved", reviewed_by="mia"
        )
        session.commit()
        rows = export_rows(session, "v1")
    assert LOCATING_COLUMNS[:5] == ("batch", "key", "view", "review_status", "reviewed_by")
    assert list(rows[0])[:5] == list(LOCATING_COLUMNS[:5])
    picked = [(r["key"], r["view"], r["review_status"], r["reviewed_by"]) for r in rows]
    assert picked == [("SKU-1", "front", None, None), ("SKU-1", "back", "approved", "mia")]
    path = tmp_path / "v1.csv"
    write_export(rows, path, "csv")
    assert [r["view"] for r in read_back(path, "csv")] == ["front", "back"]


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
        assert list(written) == list(OLDER_COLUMNS)
        assert written == {c: expected_cell(original[c], fmt) for c in OLDER_COLUMNS}
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


LINEN = {
    "SKU": "A-1",
    "name": "Leinenhemd",
    "description": "Hemd aus Leinen",
    "model_name": "Fynn",
    "model_descr": "Regular Fit",
}
BLOUSE = {"Artikelnummer": "B-7", "Titel": "Bluse", "Beschreibung": "=1+1", "Preis": 19.99}


def add_sourced_batch(session, batch_id: str, *cells: dict, sheets=("Herren", "Damen")) -> None:
    """A batch with one article per dict of source cells, alternating between two sheets."""
    session.add(Batch(id=batch_id, profile="tiny"))
    for index, source in enumerate(cells):
        add_article(
            session,
            batch_id,
            f"K-{index}",
            source_sheet=sheets[index % len(sheets)],
            source_row=index + 2,
            source_columns=source,
        )
    session.commit()


def test_source_cells_sit_between_the_locating_and_the_result_columns(sessions):
    with sessions() as session:
        add_sourced_batch(session, "s1", LINEN)
        (row,) = export_rows(session, "s1")
    assert tuple(row) == (*LOCATING_COLUMNS, *LINEN, *RESULT_COLUMNS)
    assert {header: row[header] for header in LINEN} == LINEN
    assert "source_text" not in row


def test_the_headers_of_two_sheets_are_united_in_first_seen_order(sessions):
    with sessions() as session:
        add_sourced_batch(session, "s1", LINEN, BLOUSE, {"SKU": "A-2", "name": "Hose"})
        rows = export_rows(session, "s1")
    source = [c for c in rows[0] if c not in COLUMNS]
    assert source == [*LINEN, *BLOUSE]
    assert all(list(row) == list(rows[0]) for row in rows)
    assert [rows[1][c] for c in source] == [None] * len(LINEN) + list(BLOUSE.values())
    assert (rows[2]["SKU"], rows[2]["name"], rows[2]["description"]) == ("A-2", "Hose", None)


def test_older_articles_without_source_cells_fall_back_to_their_source_text(sessions):
    with sessions() as session:
        add_sourced_batch(session, "s1", LINEN)
        add_article(session, "s1", "OLD", source_row=9, source_text="Alte Jacke")
        session.commit()
        new, old = export_rows(session, "s1")
    assert tuple(new) == (*LOCATING_COLUMNS, *LINEN, "source_text", *RESULT_COLUMNS)
    assert (new["source_text"], new["name"]) == (None, "Leinenhemd")
    assert (old["source_text"], old["name"], old["SKU"]) == ("Alte Jacke", None, None)


def test_a_source_header_named_like_an_export_column_gets_a_prefix(sessions):
    cells = {"key": "A-1", "status": "aktiv", "source_text": "x", "source: status": "y"}
    with sessions() as session:
        add_sourced_batch(session, "s1", cells)
        (row,) = export_rows(session, "s1")
    assert (row["key"], row["status"]) == ("K-0", "pending")
    assert row["source: key"] == "A-1" and row["source: status"] == "aktiv"
    assert row["source: source_text"] == "x" and row["source: source: status"] == "y"
    start = len(LOCATING_COLUMNS)
    assert tuple(row)[start : start + 4] == tuple(source_column(h) for h in cells)


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_a_formula_in_a_source_cell_is_neutralised(sessions, tmp_path, fmt):
    with sessions() as session:
        add_sourced_batch(session, "s1", BLOUSE)
        write_export(export_rows(session, "s1"), tmp_path / f"s1.{fmt}", fmt)
    (row,) = read_back(tmp_path / f"s1.{fmt}", fmt)
    assert row["Beschreibung"] == "'=1+1"
    assert row["Preis"] == (19.99 if fmt == "xlsx" else "19.99")
    if fmt == "xlsx":
        cells = load_workbook(tmp_path / "s1.xlsx").active
        assert all(cell.data_type != "f" for row in cells.iter_rows() for cell in row)


def test_parquet_keeps_values_and_gives_each_column_one_type(sessions, tmp_path):
    path = tmp_path / "s1.parquet"
    with sessions() as session:
        add_sourced_batch(session, "s1", LINEN, BLOUSE)
        done = add_article(session, "s1", "DONE", clip_score=0.31, source_columns={"SKU": "D"})
        add_render(session, done, 1, seed=2**40, score=0.31)
        add_run(session, done, "render", "gpu@a", "ok", 3.0)
        session.commit()
        rows = export_rows(session, "s1")
    assert write_export(rows, path, "parquet") == 3
    frame = pd.read_parquet(path)
    assert list(frame.columns) == list(rows[0])
    types = {c: str(frame[c].dtype) for c in frame.columns}
    assert types["best_clip_score"] == types["render_seconds"] == "float64"
    assert types["attempts"] == types["source_row"] == "int64"
    assert types["seed"] == "Int64"
    assert types["key"] == types["lora"] == types["Preis"] == types["SKU"] == "string"
    assert frame["key"].tolist() == ["K-0", "K-1", "DONE"]
    assert frame["Preis"].isna().tolist() == [True, False, True]
    assert frame["Preis"][1] == "19.99" and frame["Beschreibung"][1] == "=1+1"
    assert frame["best_clip_score"].isna().tolist() == [True, True, False]
    assert frame["best_clip_score"][2] == 0.31 and frame["render_seconds"][2] == 3.0
    assert frame["seed"][2] == 2**40 and frame["seed"].isna().tolist() == [True, True, False]
    assert frame["attempts"].tolist() == [0, 0, 1]
    assert [p.name for p in tmp_path.glob("*.parquet*")] == [path.name]


def test_an_empty_batch_exports_a_typed_parquet_file(sessions, tmp_path):
    with sessions() as session:
        session.add(Batch(id="empty", profile="tiny"))
        session.commit()
        rows = export_rows(session, "empty")
    write_export(rows, tmp_path / "empty.parquet", "parquet")
    frame = pd.read_parquet(tmp_path / "empty.parquet")
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 0
    assert str(frame["best_clip_score"].dtype) == "float64"


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_removed_articles_are_left_out_of_the_export(sessions, tmp_path, fmt):
    with sessions() as session:
        rows = export_rows(session, "b1")
        assert "SKU-GONE" not in [r["key"] for r in rows]
        session.get(Article, 1).removed_at = REMOVED_AT
        session.commit()
        rows = export_rows(session, "b1")
    assert [r["key"] for r in rows] == [HYPERLINK, "SKU-3"]
    write_export(rows, tmp_path / f"b1.{fmt}", fmt)
    assert len(read_back(tmp_path / f"b1.{fmt}", fmt)) == 2


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_a_file_where_the_folder_should_be_is_an_export_error(sessions, tmp_path, fmt):
    (tmp_path / "out").mkdir()
    blocker = tmp_path / "out" / "exports"
    blocker.write_text("not a folder")
    path = blocker / f"b1.{fmt}"
    with sessions() as session:
        rows = export_rows(session, "b1")
    message = f"cannot write the export to {path}: a file stands where a folder should be"
    with pytest.raises(ExportError, match="^" + message.replace(".", r"\.") + "$") as raised:
        write_export(rows, path, fmt)
    assert raised.value.path == path
    assert list(blocker.parent.iterdir()) == [blocker]
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_a_folder_without_write_permission_is_an_export_error(sessions, tmp_path, fmt):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    path = folder / f"b1.{fmt}"
    with sessions() as session:
        rows = export_rows(session, "b1")
    try:
        with pytest.raises(ExportError) as raised:
            write_export(rows, path, fmt)
        assert str(raised.value) == f"cannot write the export to {path}: permission denied"
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_a_full_disk_is_an_export_error_and_leaves_no_partial_file(tmp_path, monkeypatch):
    def half_written(rows, columns, scratch):
        scratch.write_text("batch,key\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "_write_csv", half_written)
    path = tmp_path / "out" / "b1.csv"
    with pytest.raises(ExportError, match="disk full$"):
        write_export([{"batch": "b1", "key": "K"}], path, "csv")
    assert list(path.parent.iterdir()) == []


def test_a_refused_scratch_file_reads_permission_denied_even_when_run_as_root(
    tmp_path, monkeypatch
):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    # What mkstemp raises in a folder without write permission, which root does not get.
    monkeypatch.setattr("tasks.outputs.tempfile.mkstemp", refuse)
    path = tmp_path / "out" / "b1.jsonl"
    with pytest.raises(ExportError) as raised:
        write_export([], path, "jsonl")
    assert str(raised.value) == f"cannot write the export to {path}: permission denied"
    assert list(path.parent.iterdir()) == []


# --- where the export goes --------------------------------------------------------------


def test_image_paths_are_absolute_under_a_relative_output_folder(sessions, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with sessions() as session:
        session.get(Article, 1).image_path = "output/b1/SKU-1.png"  # a worker's relative path
        session.commit()
        rows = export_rows(session, "b1", Path("output"))
        stored = export_rows(session, "b1")
    assert rows[0]["image_path"] == str(tmp_path / "output" / "b1" / "SKU-1.png")
    assert stored[0]["image_path"] == str(tmp_path / "output" / "b1" / "SKU-1.png")
    assert [r["image_path"] for r in rows[1:]] == [None, None]  # no picture, no path


def test_image_paths_are_the_published_pictures_of_each_view(sessions, tmp_path):
    with sessions() as session:
        back = add_article(session, "b1", "SKU-1", view="back", image_path="x/SKU-1@back.png")
        back.file_stem = "SKU-1"
        session.commit()
        rows = export_rows(session, "b1", tmp_path / "out")
    paths = {(r["key"], r["view"]): r["image_path"] for r in rows}
    assert paths[("SKU-1", "front")] == str(tmp_path / "out" / "b1" / "SKU-1.png")
    assert paths[("SKU-1", "back")] == str(tmp_path / "out" / "b1" / "SKU-1@back.png")


def test_image_paths_in_an_object_store_are_its_urls(sessions):
    with sessions() as session:
        rows = export_rows(session, "b1", "s3://farm-images/catalogs")
    assert rows[0]["image_path"] == "s3://farm-images/catalogs/b1/SKU-1.png"


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_something_other_than_a_regular_file_at_the_path_is_refused_untouched(
    sessions, tmp_path, kind
):
    target = tmp_path / "target.csv"
    path = tmp_path / "b1.csv"
    if kind == "symlink":
        target.write_text("")
        path.symlink_to(target)
        reason = "it is a symbolic link, not a regular file"
    elif kind == "fifo":
        os.mkfifo(path)
        reason = "it is a FIFO (named pipe), not a regular file"
    else:
        path.mkdir()
        reason = "a folder stands where the file should be"
    with sessions() as session:
        rows = export_rows(session, "b1")
    with pytest.raises(ExportError) as raised:
        write_export(rows, path, "csv")
    assert str(raised.value).startswith(f"cannot write the export to {path}: {reason}")
    assert raised.value.path == path
    if kind == "symlink":
        assert path.is_symlink() and target.read_text() == ""
    elif kind == "fifo":
        assert stat.S_ISFIFO(path.lstat().st_mode)
    else:
        assert path.is_dir() and list(path.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch left


def test_a_device_at_the_path_is_refused_untouched(sessions, tmp_path):
    path = tmp_path / "full"
    try:  # a character device like /dev/null's, made here: the real ones are never at risk
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError) as error:
        pytest.skip(f"cannot make a device node here: {error}")
    with sessions() as session:
        rows = export_rows(session, "b1")
    for fmt in EXPORT_FORMATS:
        with pytest.raises(ExportError, match="it is a character device, not a regular file"):
            write_export(rows, path, fmt)
        assert stat.S_ISCHR(path.lstat().st_mode)


def test_a_regular_file_at_the_path_is_replaced(sessions, tmp_path):
    path = tmp_path / "b1.jsonl"
    path.write_text("old\n")
    with sessions() as session:
        write_export(export_rows(session, "b1"), path, "jsonl")
    assert len(read_back(path, "jsonl")) == 3


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_a_stream_gets_the_same_bytes_a_file_gets(sessions, tmp_path, fmt):
    with sessions() as session:
        rows = export_rows(session, "b1")
    stream = io.BytesIO()
    assert write_export_stream(rows, stream, fmt) == 3
    (tmp_path / f"from-stream.{fmt}").write_bytes(stream.getvalue())
    write_export(rows, tmp_path / f"from-file.{fmt}", fmt)
    assert read_back(tmp_path / f"from-stream.{fmt}", fmt) == read_back(
        tmp_path / f"from-file.{fmt}", fmt
    )


def test_a_failed_stream_export_writes_nothing(monkeypatch):
    def half_written(rows, columns, scratch):
        scratch.write_text("batch,key\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "_write_csv", half_written)
    stream = io.BytesIO()
    with pytest.raises(ExportError, match="^cannot write the export to standard output: disk full"):
        write_export_stream([{"batch": "b1"}], stream, "csv")
    assert stream.getvalue() == b""


def test_a_closed_pipe_is_an_export_error():
    class Closed(io.BytesIO):
        def write(self, data):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    with pytest.raises(ExportError, match="standard output: the reading end was closed$"):
        write_export_stream([{"batch": "b1"}], Closed(), "jsonl")
