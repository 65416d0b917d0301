"""Reading and validating article catalogs (``producer.catalog``)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import openpyxl
import pytest

from producer.catalog import (
    CatalogError,
    CatalogRow,
    Notice,
    Problem,
    content_key,
    parse_column_map,
    read_catalog,
)

HEADER = ["name", "description", "model_name", "model_descr"]
SAMPLE = Path(__file__).resolve().parents[2] / "producer" / "samples" / "catalog.csv"


def article(n: int) -> list[object]:
    """A plausible row in HEADER order."""
    return [
        f"Damen-Shirt {n}",
        f"Ein weiches Shirt aus Baumwolle.\n\n\tRundhals\n\tKurzarm {n}\n",
        "T-Shirt",
        "r-neck,basic,white",
    ]


def write_xlsx(path: Path, sheets: dict[str, Sequence[Sequence[object]]]) -> Path:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets.items():
        worksheet = workbook.create_sheet(title)
        for row in rows:
            worksheet.append(list(row))
    workbook.save(path)
    return path


def write_csv(
    path: Path, rows: Sequence[Sequence[object]], delimiter: str = ",", encoding: str = "utf-8"
) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def problems_of(paths: Sequence[Path], **kwargs) -> list[Problem]:
    with pytest.raises(CatalogError) as caught:
        read_catalog(paths, **kwargs)
    return caught.value.problems


def only_problem(paths: Sequence[Path], **kwargs) -> Problem:
    problems = problems_of(paths, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


# --- reading -----------------------------------------------------------------------------------


def test_every_sheet_of_a_workbook_is_read_in_sheet_and_row_order(tmp_path):
    path = write_xlsx(
        tmp_path / "cat.xlsx",
        {"Herbst": [HEADER, article(1), article(2)], "Winter": [HEADER, article(3)]},
    )
    rows = read_catalog([path])
    assert [(r.sheet, r.row, r.name) for r in rows] == [
        ("Herbst", 2, "Damen-Shirt 1"),
        ("Herbst", 3, "Damen-Shirt 2"),
        ("Winter", 2, "Damen-Shirt 3"),
    ]
    assert rows[0].file == str(path)
    assert rows[0].description == article(1)[1]


def test_files_are_read_in_the_order_given(tmp_path):
    first = write_csv(tmp_path / "b.csv", [HEADER, article(1)])
    second = write_xlsx(tmp_path / "a.xlsx", {"S": [HEADER, article(2)]})
    assert [r.file for r in read_catalog([first, second])] == [str(first), str(second)]


def test_the_sheet_option_reads_only_that_sheet_matching_its_name_in_any_case(tmp_path):
    path = write_xlsx(
        tmp_path / "cat.xlsx", {"Herbst": [HEADER, article(1)], "Winter": [HEADER, article(2)]}
    )
    assert [r.name for r in read_catalog([path], sheet="Winter")] == ["Damen-Shirt 2"]
    assert [r.sheet for r in read_catalog([path], sheet="winter")] == ["Winter"]


def test_blank_rows_are_skipped_and_row_numbers_stay_those_of_the_sheet(tmp_path):
    path = write_xlsx(
        tmp_path / "cat.xlsx", {"S": [HEADER, [None] * 4, article(1), ["", "  "], article(2)]}
    )
    assert [r.row for r in read_catalog([path])] == [3, 5]


def test_numbers_and_dates_in_text_cells_become_text_and_whole_numbers_lose_the_point_zero(
    tmp_path,
):
    row = ["Shirt", "Beschreibung", 4711.0, dt.datetime(2024, 3, 1)]
    path = write_xlsx(tmp_path / "cat.xlsx", {"S": [HEADER + ["sku"], row + [12345]]})
    (read,) = read_catalog([path])
    assert (read.model_name, read.model_descr, read.key) == ("4711", "2024-03-01", "12345")


def test_a_semicolon_separated_csv_is_read(tmp_path):
    path = write_csv(tmp_path / "cat.csv", [HEADER, article(1), article(2)], delimiter=";")
    rows = read_catalog([path])
    assert [r.name for r in rows] == ["Damen-Shirt 1", "Damen-Shirt 2"]
    assert rows[0].description == article(1)[1]
    assert rows[0].model_descr == "r-neck,basic,white"
    assert (rows[0].sheet, rows[0].row, rows[1].row) == ("csv", 2, 3)


def test_a_tab_separated_csv_is_read(tmp_path):
    path = write_csv(tmp_path / "cat.csv", [HEADER, article(1)], delimiter="\t")
    assert read_catalog([path])[0].description == article(1)[1]


def test_a_utf8_csv_with_a_byte_order_mark_keeps_its_first_header_and_its_umlauts(tmp_path):
    rows = [HEADER, ["Größe", "Weiß und grün", "Jäckchen", "ß"]]
    path = write_csv(tmp_path / "cat.csv", rows, encoding="utf-8-sig")
    (read,) = read_catalog([path])
    assert (read.name, read.description) == ("Größe", "Weiß und grün")


def test_a_latin1_csv_is_decoded_when_it_is_not_valid_utf8(tmp_path):
    rows = [HEADER, ["Größe", "Weiß und grün – für Jungen", "Jäckchen", "ß"]]
    path = write_csv(tmp_path / "cat.csv", rows, delimiter=";", encoding="cp1252")
    (read,) = read_catalog([path])
    assert read.description == "Weiß und grün – für Jungen"


def test_bytes_undefined_in_cp1252_are_decoded_as_latin1_and_reported_as_control_characters(
    tmp_path,
):
    path = tmp_path / "cat.csv"
    path.write_bytes("name;description;model_name;model_descr\nä;ü\x81;;\n".encode("latin-1"))
    problem = only_problem([path])
    assert (problem.row, problem.column) == (2, "description")
    assert "U+0081 at position 2" in problem.message


def test_headers_are_matched_ignoring_case_and_surrounding_spaces(tmp_path):
    header = [" Name", "DESCRIPTION ", "Model_Name", "model_DESCR"]
    path = write_xlsx(tmp_path / "cat.xlsx", {"S": [header, article(1)]})
    assert read_catalog([path])[0].model_name == "T-Shirt"


def test_the_column_map_reads_fields_from_other_headers(tmp_path):
    header = ["Titel", "Beschreibung", "Modell", "Modellbeschreibung", "Artikelnummer"]
    path = write_xlsx(tmp_path / "cat.xlsx", {"S": [header, article(1) + ["A-1"]]})
    columns = parse_column_map(
        "name=titel, description=Beschreibung,model_name=Modell,"
        "model_descr=Modellbeschreibung,key=Artikelnummer"
    )
    (read,) = read_catalog([path], columns=columns)
    assert (read.name, read.model_name, read.key) == ("Damen-Shirt 1", "T-Shirt", "A-1")


def test_the_key_column_gives_the_article_key_whatever_its_case(tmp_path):
    path = write_xlsx(
        tmp_path / "cat.xlsx", {"S": [HEADER + ["Article ID"], article(1) + ["  X-9 "]]}
    )
    assert read_catalog([path])[0].key == "X-9"


def test_without_a_key_column_the_key_is_the_content_key_of_the_source_text(tmp_path):
    path = write_xlsx(tmp_path / "herbst.xlsx", {"Damen": [HEADER, article(1)]})
    csv_path = write_csv(tmp_path / "winter.csv", [HEADER, article(2)])
    rows = read_catalog([path, csv_path])
    assert [r.key for r in rows] == [content_key(r.source_text) for r in rows]
    assert all(r.key.startswith("c-") and len(r.key) == 14 and not r.keyed for r in rows)


def test_a_key_column_gives_keyed_rows_and_its_header_among_the_source_columns(tmp_path):
    header = ["Titel", "Text", "Modell", "Modelltext", "Art.-Nr."]
    path = write_csv(tmp_path / "cat.csv", [header, article(1) + [" A-1 "]])
    columns = dict(zip([*HEADER, "key"], header, strict=True))
    (read,) = read_catalog([path], columns=columns)
    assert read.keyed and read.headers == tuple(header)
    assert read.source_columns == dict(zip(header, [*article(1), "A-1"], strict=True))


def test_source_text_joins_the_non_empty_stripped_fields_by_newlines():
    row = CatalogRow("f.csv", "csv", 2, "k", " Shirt ", "\tSchön.\n\n", "", "basic ")
    assert row.source_text == "Shirt\nSchön.\nbasic"


def test_a_row_built_by_hand_is_keyed_and_its_source_columns_use_our_field_names():
    row = CatalogRow("f.csv", "csv", 2, "k", "Shirt", "Schön.", "", "basic")
    assert row.keyed
    assert row.source_columns == {
        "name": "Shirt",
        "description": "Schön.",
        "model_name": "",
        "model_descr": "basic",
    }


def test_parse_column_map_rejects_bad_syntax_and_unknown_fields():
    assert parse_column_map("description = Text") == {"description": "Text"}
    for bad in ["", "description", "description=", "=Text", "colour=Farbe", "name=a,name=b"]:
        with pytest.raises(ValueError):
            parse_column_map(bad)
    with pytest.raises(ValueError):
        read_catalog([], columns={"colour": "Farbe"})


# --- problems ----------------------------------------------------------------------------------


def test_a_missing_file_is_reported(tmp_path):
    missing = tmp_path / "nope.xlsx"
    problem = only_problem([missing])
    assert (problem.file, problem.sheet, problem.row, problem.message) == (
        str(missing),
        None,
        None,
        "file not found",
    )


def test_a_directory_and_files_of_other_formats_are_not_spreadsheets(tmp_path):
    (tmp_path / "notes.txt").write_text("hallo")
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    problems = problems_of([tmp_path, tmp_path / "notes.txt", tmp_path / "old.xls"])
    assert [p.message for p in problems] == [
        "not a file",
        "not a spreadsheet; expected .xlsx or .csv",
        "old Excel 97-2003 (.xls) file; the farm reads .xlsx/.xlsm workbooks and .csv/.tsv text: "
        "save it as .xlsx",
    ]


def test_a_truncated_workbook_is_reported_as_corrupt(tmp_path):
    path = write_xlsx(tmp_path / "cat.xlsx", {"S": [HEADER, article(1)]})
    path.write_bytes(path.read_bytes()[:-200])
    problems = problems_of([path])
    assert problems[0].file == str(path)
    assert "corrupt or truncated workbook" in problems[0].message


def test_a_text_file_named_xlsx_is_reported_as_not_a_workbook(tmp_path):
    path = tmp_path / "cat.xlsx"
    path.write_text("name,description\n")
    assert "not a valid .xlsx workbook" in problems_of([path])[0].message


def test_a_zip_archive_that_is_not_a_workbook_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "cat.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hallo")
    assert "corrupt or truncated workbook" in problems_of([path])[0].message


def test_a_password_protected_workbook_gets_a_clear_message(tmp_path):
    # Encrypted Office files are OLE containers with an "EncryptionInfo" stream; the header
    # and that stream name are all the check looks at.
    path = tmp_path / "secret.xlsx"
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504
    path.write_bytes(ole + "EncryptionInfo".encode("utf-16-le") + b"\0" * 64)
    assert "password-protected" in problems_of([path])[0].message


def test_a_missing_sheet_is_reported_with_the_sheets_the_workbook_has(tmp_path):
    path = write_xlsx(tmp_path / "cat.xlsx", {"Herbst": [HEADER, article(1)]})
    problem = problems_of([path], sheet="Sommer")[0]
    assert (problem.sheet, problem.row) == ("Sommer", None)
    assert "'Herbst'" in problem.message


def test_an_empty_sheet_beside_articles_is_skipped_with_a_notice(tmp_path):
    path = write_xlsx(tmp_path / "cat.xlsx", {"Daten": [HEADER, article(1)], "Leer": []})
    notices: list[Notice] = []
    assert len(read_catalog([path], notices=notices)) == 1
    assert [(n.sheet, n.row, n.column, n.kind) for n in notices] == [
        ("Leer", None, None, "empty sheet")
    ]


def test_an_input_of_empty_sheets_only_has_no_articles(tmp_path):
    path = write_xlsx(tmp_path / "cat.xlsx", {"Leer": []})
    notices: list[Notice] = []
    assert only_problem([path], notices=notices).message == "no articles found in the input"
    assert [n.kind for n in notices] == ["empty sheet"]


def test_each_missing_required_column_is_reported_on_the_header_row(tmp_path):
    path = write_xlsx(tmp_path / "cat.xlsx", {"S": [[None], ["name", "description"], ["a", "b"]]})
    problems = problems_of([path])
    assert [(p.sheet, p.row, p.column) for p in problems[:2]] == [
        ("S", 2, "model_name"),
        ("S", 2, "model_descr"),
    ]


def test_a_mapped_column_that_is_missing_is_reported_by_its_file_header(tmp_path):
    path = write_csv(tmp_path / "cat.csv", [HEADER, article(1)])
    problem = problems_of([path], columns={"description": "Beschreibung"})[0]
    assert (problem.row, problem.column) == (1, "Beschreibung")
    assert "mapped to 'description'" in problem.message


def test_a_duplicated_header_is_reported_with_its_columns(tmp_path):
    path = write_xlsx(tmp_path / "cat.xlsx", {"S": [HEADER + ["Name"], article(1) + ["x"]]})
    problem = problems_of([path])[0]
    assert (problem.sheet, problem.row, problem.column) == ("S", 1, "name")
    assert "columns A, E" in problem.message


def test_a_duplicated_unused_header_is_reported_but_the_rows_are_still_checked(tmp_path):
    rows = [HEADER + ["Notiz", "notiz"], article(1) + ["", ""], ["a", "", "", ""]]
    path = write_xlsx(tmp_path / "cat.xlsx", {"S": rows})
    assert [(p.row, p.column) for p in problems_of([path])] == [
        (1, "Notiz"),
        (3, "description"),
    ]


def test_rows_with_an_empty_description_are_reported_with_row_and_column(tmp_path):
    rows = [HEADER, article(1), ["Shirt", "   ", "T-Shirt", ""], article(3), ["Hose", None]]
    path = write_xlsx(tmp_path / "catalog.xlsx", {"Sheet1": rows})
    problems = problems_of([path])
    assert [(p.sheet, p.row, p.column, p.message) for p in problems] == [
        ("Sheet1", 3, "description", "empty description"),
        ("Sheet1", 5, "description", "empty description"),
    ]
    assert str(problems[0]) == (
        f"{path}, sheet 'Sheet1', row 3, column 'description': empty description"
    )


def test_a_cell_longer_than_the_limit_is_reported(tmp_path):
    rows = [HEADER, ["x" * 51, "kurz", "", ""], ["ok", "y" * 50, "", ""]]
    path = write_xlsx(tmp_path / "cat.xlsx", {"S": rows})
    problem = only_problem([path], max_cell_chars=50)
    assert (problem.row, problem.column) == (2, "name")
    assert "51 characters" in problem.message


def test_control_characters_other_than_newline_tab_and_return_are_reported(tmp_path):
    rows = [HEADER, ["ok", "Zeile\r\n\tPunkt", "", ""], ["Shirt", "Text\x00mit\x07", "", "a\x1b"]]
    path = write_csv(tmp_path / "cat.csv", rows)
    problems = problems_of([path])
    assert [(p.sheet, p.row, p.column) for p in problems] == [
        ("csv", 3, "description"),
        ("csv", 3, "model_descr"),
    ]
    assert "2 control character(s), first U+0000 at position 5" in problems[0].message


def test_a_key_longer_than_200_characters_is_reported(tmp_path):
    path = write_csv(tmp_path / "cat.csv", [HEADER + ["sku"], article(1) + ["k" * 201]])
    problem = only_problem([path])
    assert (problem.row, problem.column) == (2, "sku")
    assert "201 characters" in problem.message


def test_a_duplicate_key_across_files_names_both_places(tmp_path):
    first = write_csv(tmp_path / "a.csv", [HEADER + ["SKU"], article(1) + ["A-1"]])
    second = write_xlsx(
        tmp_path / "b.xlsx", {"S": [HEADER + ["sku"], article(2) + ["A-2"], article(3) + ["A-1"]]}
    )
    problem = only_problem([first, second])
    place = (problem.file, problem.sheet, problem.row, problem.column)
    assert place == (str(second), "S", 3, "sku")
    assert f"first used in {first}, sheet 'csv', row 2" in problem.message


def test_the_same_keyed_file_given_twice_is_reported_as_duplicate_keys(tmp_path):
    path = write_csv(tmp_path / "a.csv", [HEADER + ["sku"], article(1) + ["A-1"]])
    problem = only_problem([path, path])
    assert "duplicate article key 'A-1'" in problem.message


def test_the_same_unkeyed_file_given_twice_is_read_once_with_a_notice_per_row(tmp_path):
    path = write_csv(tmp_path / "a.csv", [HEADER, article(1), article(2)])
    notices: list[Notice] = []
    assert len(read_catalog([path, path], notices=notices)) == 2
    assert [(n.row, n.kind) for n in notices] == [(2, "duplicate"), (3, "duplicate")]


def test_an_input_without_article_rows_is_reported_as_having_no_articles(tmp_path):
    path = write_csv(tmp_path / "a.csv", [HEADER, ["", "", "", ""]])
    problem = only_problem([path])
    assert (problem.file, problem.message) == (str(path), "no articles found in the input")
    assert only_problem([]).message == "no articles found in the input"


def test_more_rows_than_the_limit_stop_reading_with_one_problem(tmp_path):
    first = write_csv(tmp_path / "a.csv", [HEADER, article(1), article(2)])
    second = write_csv(tmp_path / "b.csv", [HEADER, article(3), article(4)])
    third = tmp_path / "never-looked-at.csv"
    problem = only_problem([first, second, third], max_rows=3)
    assert (problem.file, problem.row) == (str(second), 3)
    assert "more than 3 article rows" in problem.message


def test_malformed_csv_quoting_is_reported_with_its_row(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text('name,description,model_name,model_descr\na,b,c,d\na,"b"x,c,d\n')
    problem = problems_of([path])[0]
    assert (problem.sheet, problem.row) == ("csv", 3)
    assert "malformed CSV" in problem.message


def test_problems_in_several_files_are_all_reported_in_one_error(tmp_path):
    good = write_csv(tmp_path / "good.csv", [HEADER, article(1)])
    bad_csv = write_csv(tmp_path / "bad.csv", [HEADER, ["a", "", "", ""]], delimiter=";")
    bad_xlsx = write_xlsx(
        tmp_path / "bad.xlsx",
        {"Eins": [["name", "description"]], "Zwei": [HEADER, ["b", "x" * 101, "", ""]]},
    )
    with pytest.raises(CatalogError) as caught:
        read_catalog([good, bad_csv, tmp_path / "missing.csv", bad_xlsx], max_cell_chars=100)
    places = [(Path(p.file).name, p.sheet, p.row, p.column) for p in caught.value.problems]
    assert places == [
        ("bad.csv", "csv", 2, "description"),
        ("missing.csv", None, None, None),
        ("bad.xlsx", "Eins", 1, "model_name"),
        ("bad.xlsx", "Eins", 1, "model_descr"),
        ("bad.xlsx", "Zwei", 2, "description"),
    ]
    text = str(caught.value)
    assert text.startswith("5 problem(s) in the input:\n")
    assert len(text.splitlines()) == 6


def test_a_very_long_problem_list_is_shortened_in_the_message_but_kept_whole():
    problems = [Problem("f.csv", "csv", n, "description", "empty description") for n in range(250)]
    error = CatalogError(problems)
    assert len(error.problems) == 250
    assert str(error).splitlines()[-1] == "... and 50 more problem(s)"


# --- the shipped sample ------------------------------------------------------------------------


def test_the_shipped_sample_catalog_reads_cleanly_with_unique_keys():
    rows = read_catalog([SAMPLE])
    assert len(rows) >= 20
    assert len({r.key for r in rows}) == len(rows)
    assert all(r.key.startswith("FF-") for r in rows)
    assert all("\n\t" in r.description and r.model_descr for r in rows)


def _ods(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("content.xml", "<office:document-content/>")
    return path


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [("cat.ods", _ods, "an OpenDocument spreadsheet (.ods); the farm reads .xlsx/.xlsm workbooks"),
     ("ods-named.xlsx", _ods, "an OpenDocument spreadsheet (.ods) with an .xlsx name"),
     ("renamed.xls", lambda p: write_xlsx(p, {"S": [HEADER, article(1)]}),
      "an Excel workbook (.xlsx) with a .xls suffix; rename it .xlsx"),
     ("old.xls", lambda p: p.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600)) and p,
      "old Excel 97-2003 (.xls) file; the farm reads .xlsx/.xlsm workbooks and .csv/.tsv text")],
)  # fmt: skip
def test_a_file_of_another_format_is_named_by_its_content(tmp_path, name, make, message):
    path = make(tmp_path / name)
    assert message in only_problem([path]).message
