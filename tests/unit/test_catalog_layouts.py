"""The retailer's own sheets as they come: no key column, repeated rows, titles, empty sheets.

The retailer's seed sheets (``tests/data/seed-catalog``) are copied and edited the way catalog teams
edit them; smaller cases use hand-made files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import shutil
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import openpyxl
import pytest

from producer.catalog import CatalogError, CatalogRow, Notice, Problem, content_key, read_catalog
from tests.data import SEED_CATALOG

SEED = SEED_CATALOG
SEED_NAMES = [f"article_descriptions_{n}.xlsx" for n in (1, 2, 3)]
HEADER = ["name", "description", "model_name", "model_descr"]
NEW_ROW = ["Damen-Leinenbluse", "Eine luftige Bluse aus reinem Leinen.", "Bluse", "weiß"]


@pytest.fixture
def seed(tmp_path) -> list[Path]:
    """Writable copies of the three seed sheets."""
    paths = []
    for name in SEED_NAMES:
        path = tmp_path / name
        shutil.copy(SEED / name, path)
        path.chmod(0o644)
        paths.append(path)
    return paths


def edit(path: Path, change: Callable) -> Path:
    book = openpyxl.load_workbook(path)
    change(book)
    book.save(path)
    return path


def sheet_rows(path: Path) -> list[tuple]:
    """The data rows of a workbook's first sheet (below its header), as read by openpyxl."""
    rows = openpyxl.load_workbook(path, read_only=True).worksheets[0].iter_rows(values_only=True)
    return list(rows)[1:]


def read(paths: Sequence[Path], **kwargs) -> tuple[list[CatalogRow], list[Notice]]:
    notices: list[Notice] = []
    return read_catalog(paths, notices=notices, **kwargs), notices


def problems_of(paths: Sequence[Path], **kwargs) -> list[Problem]:
    with pytest.raises(CatalogError) as caught:
        read_catalog(paths, **kwargs)
    return caught.value.problems


def write_csv(path: Path, rows: Sequence[Sequence[object]], delimiter: str = ",") -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def article(n: int) -> list[str]:
    return [f"Damen-Shirt {n}", f"Ein weiches Shirt, Nummer {n}.", "T-Shirt", "basic"]


# --- content keys ------------------------------------------------------------------------------


def test_a_content_key_is_c_and_twelve_hex_digits_of_the_sha256_of_the_normalised_text():
    text = "Shirt\nWeich."
    assert content_key(text) == "c-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    assert re.fullmatch(r"c-[0-9a-f]{12}", content_key("irgendwas"))


def test_a_content_key_ignores_spacing_blank_lines_and_unicode_composition_but_not_case():
    composed = "Kleid in Grün\nweich"
    decomposed = unicodedata.normalize("NFD", composed)
    spaced = "  Kleid \t in\u00a0Grün  \n\n \n weich \n"
    assert content_key(decomposed) == content_key(spaced) == content_key(composed)
    assert content_key("kleid in grün\nweich") != content_key(composed)
    assert content_key("Kleid in\nGrün weich") != content_key(composed)  # lines still count


# --- the seed sheets ---------------------------------------------------------------------------


def test_the_three_seed_sheets_read_together_give_each_repeated_row_once_with_a_notice(seed):
    rows, notices = read(seed)

    total = sum(len(sheet_rows(path)) for path in seed)
    assert total == 223
    assert (len(rows), len(notices)) == (154, 69)
    assert {n.kind for n in notices} == {"duplicate"}
    assert len({r.key for r in rows}) == len(rows)
    assert all(not r.keyed and r.key == content_key(r.source_text) for r in rows)


def test_each_seed_sheet_read_alone_repeats_19_rows_in_all_leaving_204(seed):
    counts = [tuple(map(len, read([path]))) for path in seed]

    assert counts == [(65, 9), (69, 5), (70, 5)]
    assert (sum(r for r, _ in counts), sum(n for _, n in counts)) == (204, 19)


def test_a_repeated_seed_row_is_noted_at_its_place_naming_the_first_place(seed):
    first = seed[0]
    rows, notices = read([first])

    notice = notices[0]
    assert (notice.file, notice.sheet, notice.row, notice.column) == (
        str(first),
        "Sheet1",
        26,
        None,
    )
    assert notice.message == f"repeats row 2 of sheet 'Sheet1' in {first}; imported once"
    assert str(notice).startswith(f"{first}, sheet 'Sheet1', row 26: repeats row 2 ")
    assert 26 not in [r.row for r in rows]


def test_repeats_across_files_are_noted_in_the_later_file(seed):
    rows, notices = read(seed)
    (notice,) = [n for n in notices if (n.file, n.row) == (str(seed[1]), 11)]
    assert notice.message == f"repeats row 6 of sheet 'Sheet1' in {seed[0]}; imported once"
    assert (str(seed[1]), 11) not in [(r.file, r.row) for r in rows]


def test_the_seed_rows_keep_the_catalogs_headers_as_their_source_columns(seed):
    (row, *_), _ = read(seed[:1])
    assert row.headers == tuple(HEADER)
    assert list(row.source_columns) == HEADER
    assert row.source_columns["description"] == sheet_rows(seed[0])[0][1]


def test_keys_are_stable_when_a_row_is_inserted_at_the_top(seed):
    before, _ = read(seed[:1])

    def insert(book):
        book.worksheets[0].insert_rows(2)
        for column, value in enumerate(NEW_ROW, 1):
            book.worksheets[0].cell(2, column, value)

    after, _ = read([edit(seed[0], insert)])

    assert after[0].key == content_key("\n".join(NEW_ROW))
    assert [(r.key, r.row + 1) for r in before] == [(r.key, r.row) for r in after[1:]]


def test_a_duplicated_seed_row_is_read_once_and_noted(seed):
    _, notices = read(seed[:1])
    count = len(sheet_rows(seed[0])) + 1  # the header
    edit(seed[0], lambda book: book.worksheets[0].append(list(sheet_rows(seed[0])[2])))

    rows, again = read(seed[:1])

    assert len(rows) == 65
    assert len(again) == len(notices) + 1
    assert (again[-1].row, again[-1].kind) == (count + 1, "duplicate")
    assert "repeats row 4 of sheet 'Sheet1'" in again[-1].message


# --- header rows -------------------------------------------------------------------------------


def test_a_header_row_below_a_title_is_found(seed):
    before, _ = read(seed[:1])

    def title(book):
        book.worksheets[0].insert_rows(1, amount=3)
        book.worksheets[0]["A1"] = "Herbstkatalog 2024"
        book.worksheets[0]["B2"] = "Stand: Oktober"

    rows, notices = read([edit(seed[0], title)])

    assert [(r.key, r.row) for r in rows] == [(r.key, r.row + 3) for r in before]
    header_notices = [n for n in notices if n.kind == "header row"]
    assert [(n.sheet, n.row) for n in header_notices] == [("Sheet1", 4)]
    assert "row 4 taken as the header row" in header_notices[0].message
    assert "2 non-blank row(s) above it were skipped" in header_notices[0].message


def test_blank_rows_above_the_header_need_no_notice(tmp_path):
    path = tmp_path / "cat.xlsx"
    book = openpyxl.Workbook()
    for row in [[None], [], HEADER, article(1)]:
        book.active.append(row)
    book.save(path)
    rows, notices = read([path])
    assert ([r.row for r in rows], notices) == ([4], [])


def test_a_title_line_above_a_semicolon_csv_does_not_choose_the_delimiter(tmp_path):
    path = write_csv(tmp_path / "cat.csv", [["Katalog Herbst"], HEADER, article(1)], ";")
    rows, notices = read([path])
    assert [(r.row, r.name) for r in rows] == [(3, "Damen-Shirt 1")]
    assert [(n.row, n.kind) for n in notices] == [(2, "header row")]


def test_the_header_is_looked_for_in_the_first_ten_non_blank_rows_only(tmp_path):
    titles = [[f"Zeile {n}"] for n in range(1, 11)]
    path = write_csv(tmp_path / "cat.csv", [*titles, HEADER, article(1)])
    problems = problems_of([path])
    assert [(p.sheet, p.row, p.column) for p in problems] == [
        ("csv", 1, column) for column in HEADER
    ]
    assert "headers found: 'Zeile 1';" in problems[0].message
    nine = write_csv(tmp_path / "nine.csv", [*titles[:9], HEADER, article(1)])
    assert [r.row for r in read_catalog([nine])] == [11]


def test_a_renamed_header_is_reported_with_the_headers_found_and_the_flags(seed):
    edit(seed[0], lambda book: book.worksheets[0].cell(1, 2, "Beschreibung"))

    (problem,) = problems_of(seed[:1])

    assert (problem.sheet, problem.row, problem.column) == ("Sheet1", 1, "description")
    assert problem.message.startswith("missing required column 'description'; ")
    found = "headers found: 'name', 'Beschreibung', 'model_name', 'model_descr'"
    assert found in problem.message
    assert "--sheet NAME" in problem.message
    assert "--columns description=" in problem.message
    assert "\n" not in str(problem)


def test_a_renamed_header_mapped_with_columns_is_read_and_kept_as_written(seed):
    edit(seed[0], lambda book: book.worksheets[0].cell(1, 2, "Beschreibung"))

    rows, _ = read(seed[:1], columns={"description": "beschreibung"})

    assert len(rows) == 65
    assert list(rows[0].source_columns) == ["name", "Beschreibung", "model_name", "model_descr"]


def test_a_header_hint_lists_at_most_twelve_headers(tmp_path):
    header = [f"Spalte {n}" for n in range(1, 16)]
    path = write_csv(tmp_path / "cat.csv", [header, ["x"] * 15])
    message = problems_of([path])[0].message
    assert "'Spalte 12' and 3 more;" in message and "'Spalte 13'" not in message


# --- sheets ------------------------------------------------------------------------------------


def test_an_empty_second_sheet_is_skipped_with_a_notice(seed):
    edit(seed[0], lambda book: book.create_sheet("Leer"))

    rows, notices = read(seed[:1])

    assert len(rows) == 65
    empty = [n for n in notices if n.kind == "empty sheet"]
    assert [(n.file, n.sheet, n.row, n.column) for n in empty] == [
        (str(seed[0]), "Leer", None, None)
    ]
    assert str(empty[0]) == f"{seed[0]}, sheet 'Leer': sheet is empty; skipped"


def test_the_sheet_option_with_a_csv_file_is_ignored_with_a_notice(tmp_path):
    path = write_csv(tmp_path / "cat.csv", [HEADER, article(1)])

    rows, notices = read([path], sheet="Herbst")

    assert len(rows) == 1
    assert [(n.file, n.sheet, n.row, n.kind) for n in notices] == [
        (str(path), None, None, "sheet option ignored")
    ]
    assert "--sheet applies to workbooks; a CSV file has one table" in notices[0].message


def test_a_workbook_without_the_sheet_asked_for_is_still_a_problem(seed):
    (problem,) = problems_of(seed[:1], sheet="Herbst")
    assert (problem.sheet, problem.row) == ("Herbst", None)
    assert "'Sheet1'" in problem.message


# --- key columns -------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", ["", "   ", "\t \n"])
def test_an_empty_or_whitespace_key_is_a_problem_naming_its_cell(tmp_path, blank):
    rows = [[*HEADER, "SKU"], [*article(1), "A-1"], [*article(2), blank]]
    path = write_csv(tmp_path / "cat.csv", rows)

    (problem,) = problems_of([path])

    assert (problem.sheet, problem.row, problem.column) == ("csv", 3, "SKU")
    assert problem.message == (
        "empty article key in column 'SKU'; give every row a key or remove the column"
    )


def test_with_a_key_column_repeated_content_is_not_deduplicated(tmp_path):
    rows = [[*HEADER, "sku"], [*article(1), "A-1"], [*article(1), "A-2"]]
    rows_read, notices = read([write_csv(tmp_path / "cat.csv", rows)])
    assert [(r.key, r.keyed) for r in rows_read] == [("A-1", True), ("A-2", True)]
    assert notices == []


def test_files_with_and_without_a_key_column_mix_in_one_catalog(tmp_path):
    keyed = write_csv(tmp_path / "a.csv", [[*HEADER, "sku"], [*article(1), "A-1"]])
    plain = write_csv(tmp_path / "b.csv", [HEADER, article(1), article(2), article(2)])
    rows, notices = read([keyed, plain])
    assert [(Path(r.file).name, r.keyed) for r in rows] == [
        ("a.csv", True),
        ("b.csv", False),
        ("b.csv", False),
    ]
    assert Counter(n.kind for n in notices) == {"duplicate": 1}
