"""Re-importing the retailer's own sheets (no SKU column) after the edits catalog teams make."""

from __future__ import annotations

import shutil
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import select

from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus
from producer.catalog import read_catalog
from producer.imports import import_catalog
from tests.data import SEED_CATALOG

SEED = SEED_CATALOG
SHAPE = {"profile": "tiny"}
NEW_ROW = ("Damen-Leinenbluse", "Eine luftige Bluse aus reinem Leinen.", "Lea", "trägt Größe S")


@pytest.fixture
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    migrate(engine)
    return session_factory(engine)


@pytest.fixture
def sheet(tmp_path) -> Path:
    path = tmp_path / "article_descriptions_1.xlsx"
    shutil.copy(SEED / path.name, path)
    path.chmod(0o644)
    return path


def edit(path: Path, change) -> None:
    book = openpyxl.load_workbook(path)
    change(book.worksheets[0])
    book.save(path)


def values(worksheet, row: int) -> list:
    return [cell.value for cell in worksheet[row]]


def unique_rows(path: Path) -> list[int]:
    """Sheet rows whose content no other row repeats."""
    rows = [
        tuple(r) for r in openpyxl.load_workbook(path).worksheets[0].iter_rows(values_only=True)
    ]
    return [n for n, content in enumerate(rows, 1) if n > 1 and rows.count(content) == 1]


def imported(sessions, path: Path):
    notices: list = []
    rows = read_catalog([path], notices=notices)
    with sessions() as session:
        result = import_catalog(session, rows, "seed", SHAPE)
    return result, rows, notices


def present(sessions) -> dict[str, Article]:
    with sessions() as session:
        articles = session.scalars(select(Article).where(Article.removed_at.is_(None))).all()
    return {a.key: a for a in articles}


def counts(result) -> tuple[int, int, int, int, int]:
    return result.new, result.changed, result.unchanged, result.removed, len(result.to_send)


def test_a_row_inserted_at_the_top_is_the_only_article_sent_and_the_others_move_down(
    sessions, sheet
):
    first, rows, _ = imported(sessions, sheet)
    before = {a.key: a.source_row for a in present(sessions).values()}
    edit(
        sheet, lambda ws: (ws.insert_rows(2), [ws.cell(2, c + 1, v) for c, v in enumerate(NEW_ROW)])
    )

    again, _, _ = imported(sessions, sheet)

    assert counts(first) == (len(rows), 0, 0, 0, len(rows))
    assert counts(again) == (1, 0, len(rows), 0, 1)
    after = present(sessions)
    assert all(after[key].source_row == row + 1 for key, row in before.items())


def test_a_moved_row_sends_nothing_and_its_article_points_at_its_new_row(sessions, sheet):
    imported(sessions, sheet)
    moved = unique_rows(sheet)[0]
    book = openpyxl.load_workbook(sheet)
    content = values(book.worksheets[0], moved)

    def move(ws):
        ws.delete_rows(moved)
        ws.append(content)

    edit(sheet, move)
    again, rows, _ = imported(sessions, sheet)

    assert counts(again) == (0, 0, len(rows), 0, 0)
    name = {a.source_row: a for a in present(sessions).values()}[rows[-1].row]
    assert rows[-1].name == content[0] and name.key == rows[-1].key


def test_a_deleted_row_is_reported_removed_and_leaves_the_batch(sessions, sheet):
    first, rows, _ = imported(sessions, sheet)
    gone = unique_rows(sheet)[3]
    edit(sheet, lambda ws: ws.delete_rows(gone))

    again, _, _ = imported(sessions, sheet)

    assert counts(again) == (0, 0, len(rows) - 1, 1, 0)
    assert len(present(sessions)) == len(rows) - 1
    with sessions() as session:
        assert session.scalar(select(Article).where(Article.removed_at.is_not(None))) is not None


def test_an_edited_row_is_a_new_article_and_its_old_version_is_removed(sessions, sheet):
    _, rows, _ = imported(sessions, sheet)
    changed = unique_rows(sheet)[5]
    edit(sheet, lambda ws: ws.cell(changed, 2, ws.cell(changed, 2).value + " Neu: mit Gürtel."))

    again, _, _ = imported(sessions, sheet)

    assert counts(again) == (1, 0, len(rows) - 1, 1, 1)


def test_a_duplicated_row_is_one_article_and_is_reported_as_a_duplicate(sessions, sheet):
    _, rows, notices = imported(sessions, sheet)
    copied = unique_rows(sheet)[2]
    edit(sheet, lambda ws: ws.append(values(ws, copied)))

    again, _, notices_again = imported(sessions, sheet)

    assert counts(again) == (0, 0, len(rows), 0, 0)
    duplicates = [n for n in notices_again if n.kind == "duplicate"]
    assert len(duplicates) == len([n for n in notices if n.kind == "duplicate"]) + 1
    assert f"row {copied}" in str(duplicates[-1])


def test_a_removed_row_that_returns_comes_back_with_its_results(sessions, sheet):
    _, rows, _ = imported(sessions, sheet)
    gone = unique_rows(sheet)[1]
    book = openpyxl.load_workbook(sheet)
    content = values(book.worksheets[0], gone)
    with sessions() as session, session.begin():
        for article in session.scalars(select(Article)):
            article.status = ArticleStatus.done.value
    edit(sheet, lambda ws: ws.delete_rows(gone))
    imported(sessions, sheet)
    edit(sheet, lambda ws: ws.append(content))

    back, _, _ = imported(sessions, sheet)

    assert counts(back) == (0, 0, len(rows), 0, 0)
    assert {a.status for a in present(sessions).values()} == {ArticleStatus.done.value}


def test_the_three_seed_sheets_hold_fewer_articles_than_rows(sessions, tmp_path):
    paths = [SEED / f"article_descriptions_{n}.xlsx" for n in (1, 2, 3)]
    notices: list = []
    rows = read_catalog(paths, notices=notices)
    sheet_rows = sum(openpyxl.load_workbook(p).worksheets[0].max_row - 1 for p in paths)
    duplicates = [n for n in notices if n.kind == "duplicate"]

    assert len(rows) + len(duplicates) == sheet_rows
    assert len({r.key for r in rows}) == len(rows)
    assert duplicates  # the retailer's sheets repeat rows cell for cell
