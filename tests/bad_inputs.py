"""A corpus of malformed and hostile catalog files, built on the fly, and how each must end.

Every case is read with ``read_catalog``: it is either accepted with the right rows or
rejected with a ``CatalogError`` whose problems name the file, and the sheet, row and column
where they apply. Any other exception means the case is not handled. The unit tests run the
corpus; ``bench/faults.py`` can count it with ``run_case``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
import struct
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import openpyxl
from openpyxl.chart import BarChart, Reference

from producer.catalog import CatalogError, CatalogRow, read_catalog
from tasks.outputs import safe_stem

Result = list[CatalogRow] | CatalogError
Builder = Callable[[Path], list[Path]]
Check = Callable[[Result], None]
# (file name, sheet, row, column, text the message contains) of one expected problem.
Expected = tuple[str, str | None, int | None, str | None, str]

HEADER = ["name", "description", "model_name", "model_descr"]
BIG_ROWS = 100_000


@dataclass(frozen=True)
class Case:
    """One bad input: how to build its files and what reading them must give.

    ``check`` raises ``AssertionError`` when the outcome is wrong; ``seconds`` is the most the
    read may take.
    """

    name: str
    build: Builder
    check: Check
    seconds: float = 10.0


def outcome(case: Case, tmp_path: Path) -> tuple[Result, float]:
    """Build a case's files in ``tmp_path`` and read them.

    Args:
        case: the case.
        tmp_path: an empty folder for its files.

    Returns:
        The rows or the ``CatalogError``, and the seconds the read took. Any other exception
        propagates: the case is not handled.
    """
    paths = case.build(tmp_path)
    started = time.perf_counter()
    try:
        result: Result = read_catalog(paths)
    except CatalogError as error:
        result = error
    return result, time.perf_counter() - started


def run_case(case: Case, tmp_path: Path) -> bool:
    """Run one case and say whether it was handled as expected.

    Args:
        case: the case.
        tmp_path: an empty folder for its files.

    Returns:
        True when the outcome passes the case's check in time; False when it does not or when
        reading raised anything but ``CatalogError``.
    """
    try:
        result, seconds = outcome(case, tmp_path)
        case.check(result)
    except Exception:  # counting unhandled cases is the point here
        return False
    return seconds <= case.seconds


# --- checks ------------------------------------------------------------------------------------


def rejected(*expected: Expected) -> Check:
    """A check that the input is rejected with exactly these problems, in this order.

    Args:
        expected: per problem, the file's name, sheet, row, column and a part of the message.

    Returns:
        The check.
    """

    def check(result: Result) -> None:
        assert isinstance(result, CatalogError), f"accepted {len(result)} row(s)"
        got = [(Path(p.file).name, p.sheet, p.row, p.column) for p in result.problems]
        assert got == [place[:4] for place in expected], result
        for problem, place in zip(result.problems, expected, strict=True):
            assert place[4] in problem.message, problem

    return check


def accepted(fields: str, *expected: tuple) -> Check:
    """A check that the input is accepted with exactly these rows.

    Args:
        fields: ``CatalogRow`` attribute names, separated by spaces.
        expected: per row, the values of those fields.

    Returns:
        The check.
    """

    def check(result: Result) -> None:
        assert not isinstance(result, CatalogError), str(result)
        got = [tuple(getattr(row, name) for name in fields.split()) for row in result]
        assert got == list(expected)

    return check


# --- files -------------------------------------------------------------------------------------


def _article(n: int) -> list[str]:
    """A plausible row in HEADER order."""
    return [f"Shirt {n}", f"Ein weiches Shirt aus Baumwolle, Nummer {n}.", "T-Shirt", "basic"]


def _csv_text(rows: Sequence[Sequence[object]], delimiter: str = ",") -> str:
    """Rows as CSV text with Excel's CRLF line ends."""
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


def _workbook(sheets: dict[str, Sequence[Sequence[object]]], merge: str = "") -> bytes:
    """An ``.xlsx`` file with these sheets and rows, and optionally one merged range."""
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for values in rows:
            sheet.append(list(values))
        if merge:
            sheet.merge_cells(merge)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _rewrite(archive: bytes, part: str, edit: Callable[[str], str]) -> bytes:
    """A copy of a ZIP archive (a workbook) with the text of one part changed by ``edit``."""
    buffer = io.BytesIO()
    source = zipfile.ZipFile(io.BytesIO(archive))
    with source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for name in source.namelist():
            content = source.read(name)
            if name == part:
                content = edit(content.decode("utf-8")).encode("utf-8")
            target.writestr(name, content)
    return buffer.getvalue()


def _set_cell(ref: str, xml: str) -> Callable[[str], str]:
    """An edit for ``rewrite`` that replaces the cell ``ref`` of a sheet by raw XML."""
    pattern = re.compile(rf'<c r="{ref}"[^>]*?(?:/>|>.*?</c>)', re.DOTALL)

    def edit(text: str) -> str:
        changed, count = pattern.subn(lambda _: xml, text, count=1)
        assert count == 1, f"no cell {ref}"
        return changed

    return edit


def _sheet_with(**cells: str) -> bytes:
    """A one-sheet workbook (header and article 1) with cells replaced by raw XML, by ref."""
    data = _workbook({"Sheet": [HEADER, _article(1)]})
    for ref, xml in cells.items():
        data = _rewrite(data, "xl/worksheets/sheet1.xml", _set_cell(ref, xml))
    return data


def _inline(ref: str, text: str) -> str:
    """The XML of a text cell."""
    return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'


_FREE, _END, _FAT, _NONE = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF


def _compound_file(streams: dict[str, bytes]) -> bytes:
    """A minimal OLE2/CFB container (the format of ``.xls`` and of password-protected
    ``.xlsx`` files) holding up to three streams, each padded to 4096 bytes so that it lives in
    regular 512-byte sectors: a FAT sector, a directory sector, then the streams."""
    names = sorted(streams, key=lambda name: (len(name), name.upper()))
    fat, body = [_FAT, _END], b""
    entries = [_directory_entry("Root Entry", 5, child=1 if names else _NONE, start=_END)]
    for number, name in enumerate(names, start=1):
        data = streams[name].ljust(4096, b"\0")
        first, count = len(fat), -(-len(data) // 512)
        fat += [*range(first + 1, first + count), _END]
        right = number + 1 if number < len(names) else _NONE
        entries.append(_directory_entry(name, 2, right=right, start=first, size=len(data)))
        body += data.ljust(count * 512, b"\0")
    header = struct.pack(
        "<8s16s5H6s9I109I",
        *(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", bytes(16), 0x3E, 3, 0xFFFE, 9, 6, bytes(6)),
        *(0, 1, 1, 0, 4096, _END, 0, _END, 0),
        *(0, *[_FREE] * 108),
    )
    fat_sector = struct.pack("<128I", *fat, *[_FREE] * (128 - len(fat)))
    return header + fat_sector + b"".join(entries).ljust(512, b"\0") + body


def _directory_entry(name: str, kind: int, right=_NONE, child=_NONE, start=0, size=0) -> bytes:
    encoded = (name + "\0").encode("utf-16-le")
    return struct.pack(
        "<64sHBBIII16sIQQIQ",
        *(encoded, len(encoded), kind, 1, _NONE, right, child, bytes(16), 0, 0, 0, start, size),
    )


def _one(name: str, make: Callable[[], bytes | str], encoding: str = "utf-8") -> Builder:
    """A builder of one file ``name`` whose content ``make`` gives (text is encoded)."""

    def build(tmp_path: Path) -> list[Path]:
        content = make()
        path = tmp_path / name
        path.write_bytes(content.encode(encoding) if isinstance(content, str) else content)
        return [path]

    return build


def _link(name: str, target: str) -> Builder:
    """A builder of a symbolic link ``name`` to ``target``."""

    def build(tmp_path: Path) -> list[Path]:
        (tmp_path / name).symlink_to(target)
        return [tmp_path / name]

    return build


# --- cases with their own builders and checks --------------------------------------------------


def _zip_bomb() -> bytes:
    """A workbook whose sheet claims to unpack to 3.75 GiB (its size fields are patched)."""
    data = bytearray(_workbook({"Sheet": [HEADER, _article(1)]}))
    entry = data.find(b"xl/worksheets/sheet1.xml", data.find(b"PK\x01\x02"))
    # The uncompressed size sits 46 - 24 = 22 bytes before the name in a central record.
    data[entry - 22 : entry - 18] = struct.pack("<I", 0xF0000000)
    return bytes(data)


def _chart_sheets(keep_data: bool) -> Callable[[], bytes]:
    def make() -> bytes:
        book = openpyxl.Workbook()
        data = book.active
        data.append(HEADER)
        data.append(_article(1))
        chart = BarChart()
        chart.add_data(Reference(data, min_col=1, min_row=1, max_row=2))
        book.create_chartsheet("Diagramm").add_chart(chart)
        if not keep_data:
            book.remove(data)
        buffer = io.BytesIO()
        book.save(buffer)
        return buffer.getvalue()

    return make


def _hidden_sheets() -> bytes:
    data = _workbook({"Alt": [HEADER, _article(1)], "Neu": [HEADER, _article(2)]})
    return _rewrite(data, "xl/workbook.xml", lambda xml: xml.replace('"visible"', '"hidden"'))


def _big_csv(tmp_path: Path) -> list[Path]:
    path = tmp_path / "big.csv"
    rows = (["sku", *HEADER], *([f"A-{n}", *_article(n)] for n in range(BIG_ROWS)))
    path.write_text(_csv_text(rows), encoding="utf-8")
    return [path]


def _big_csv_check(result: Result) -> None:
    assert not isinstance(result, CatalogError), str(result)
    assert len(result) == BIG_ROWS
    assert (result[0].row, result[0].key, result[-1].row, result[-1].key) == (
        2,
        "A-0",
        BIG_ROWS + 1,
        f"A-{BIG_ROWS - 1}",
    )


HOSTILE_KEYS = ["../../etc/passwd", "/etc/shadow", "..", "a\\..\\..\\b", "~root/x", "CON", " .x."]


def _hostile_keys_check(result: Result) -> None:
    assert not isinstance(result, CatalogError), str(result)
    assert [row.key for row in result] == [key.strip() for key in HOSTILE_KEYS]
    out = (Path(tempfile.gettempdir()) / "farm-out").resolve()
    stems = [safe_stem(row.key) for row in result]
    assert len(set(stems)) == len(stems)
    for stem in stems:
        assert (out / (stem + ".png")).resolve().parent == out, stem


def _passwd_check(result: Result) -> None:
    assert isinstance(result, CatalogError), "read /etc/passwd as a catalog"
    assert result.problems
    for problem in result.problems:
        place = (Path(problem.file).name, problem.sheet, problem.row)
        assert place == ("catalog.csv", "csv", 1), problem
        assert problem.message.startswith("missing required column"), problem


def _two_files(tmp_path: Path) -> list[Path]:
    first, second = tmp_path / "herbst.csv", tmp_path / "winter.xlsx"
    first.write_text(_csv_text([["sku", *HEADER], ["A-1", *_article(1)]]))
    rows = [["SKU", *HEADER], ["A-2", *_article(2)], ["A-1", *_article(3)]]
    second.write_bytes(_workbook({"Winter": rows}))
    return [first, second]


def _directory(tmp_path: Path) -> list[Path]:
    (tmp_path / "catalog.xlsx").mkdir()
    return [tmp_path / "catalog.xlsx"]


def _fifo(tmp_path: Path) -> list[Path]:
    os.mkfifo(tmp_path / "catalog.csv")  # opening it would wait for a writer forever
    return [tmp_path / "catalog.csv"]


def _mixed_line_ends() -> bytes:
    header = ",".join(HEADER).encode()
    return header + b'\r\nA,eins,,\nB,"zwei\r\nZeilen",,\rC,drei,,\r\n'


def _cells_in_text_columns() -> bytes:
    first = [4711, 0.5, dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 1, 12, 30), True]
    second = [-3, 1234.5, dt.time(8, 15), dt.date(1999, 12, 31), 7]
    return _workbook({"Sheet": [[*HEADER, "sku"], first, second]})


# --- the corpus --------------------------------------------------------------------------------

_SHEET1 = "xl/worksheets/sheet1.xml"
_TEXT = "name;description;model_name;model_descr\r\nGröße;Weiß und grün;Jäckchen;ß\r\n"
_FAR_CELL = _inline("XFD1048576", " ")
_EMOJI_RTL = ["Kleid 👗", "Sommerkleid 👩🏽‍🦰 — فستان صيفي أزرق", "‏שמלה", "\u202eabc"]

CORPUS: list[Case] = [
    Case(
        "truncated-xlsx",
        _one("cat.xlsx", lambda: _workbook({"Sheet": [HEADER, _article(1)]})[:1500]),
        rejected(("cat.xlsx", None, None, None, "corrupt or truncated workbook")),
    ),
    Case(
        "damaged-sheet-xml",
        _one(
            "cat.xlsx", lambda: _rewrite(_sheet_with(), _SHEET1, lambda x: x[: x.index("</row>")])
        ),
        rejected(("cat.xlsx", "Sheet", 1, None, "corrupt or truncated workbook (ParseError")),
    ),
    Case(
        "shared-string-index-out-of-range",
        _one("cat.xlsx", lambda: _sheet_with(B2='<c r="B2" t="s"><v>999</v></c>')),
        rejected(("cat.xlsx", "Sheet", 2, None, "corrupt or truncated workbook (IndexError")),
    ),
    Case(
        "xlsx-that-is-a-csv",
        _one("cat.xlsx", lambda: _csv_text([HEADER, _article(1)])),
        rejected(("cat.xlsx", None, None, None, "not a ZIP archive); is it a CSV file?")),
    ),
    Case(
        "csv-that-is-an-xlsx",
        _one("cat.csv", lambda: _workbook({"Sheet": [HEADER, _article(1)]})),
        rejected(("cat.csv", None, None, None, "binary file (an Excel workbook?), not CSV")),
    ),
    Case(
        "pdf-file",
        _one("cat.pdf", lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
        rejected(("cat.pdf", None, None, None, "not a spreadsheet; expected .xlsx or .csv")),
    ),
    Case(
        "csv-in-a-txt-file",
        _one("cat.txt", lambda: _csv_text([HEADER, _article(1)])),
        rejected(("cat.txt", None, None, None, "not a spreadsheet; expected .xlsx or .csv")),
    ),
    Case(
        "pdf-named-csv",
        _one("cat.csv", lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
        rejected(("cat.csv", None, None, None, "binary file (a PDF document), not CSV text")),
    ),
    Case(
        "random-bytes-named-csv",
        _one("cat.csv", lambda: bytes(range(256)) * 16),
        rejected(("cat.csv", None, None, None, "binary file (unknown format), not CSV text")),
    ),
    Case(
        "password-protected-xlsx",
        _one(
            "secret.xlsx",
            lambda: _compound_file(
                {"EncryptionInfo": b"\x04\x00\x04\x00\x40\x00\x00\x00<encryption/>"}
                | {"EncryptedPackage": bytes(range(256)) * 8}
            ),
        ),
        rejected(("secret.xlsx", None, None, None, "password-protected; save an unprotected")),
    ),
    Case(
        "old-xls-named-xlsx",
        _one("cat.xlsx", lambda: _compound_file({"Workbook": b"\x09\x08\x10\x00\x00\x06\x05\x00"})),
        rejected(("cat.xlsx", None, None, None, "old Excel 97-2003 (.xls) file with an .xlsx")),
    ),
    Case(
        "empty-xlsx-file",
        _one("cat.xlsx", lambda: b""),
        rejected(("cat.xlsx", None, None, None, "file is empty")),
    ),
    Case(
        "empty-csv-file",
        _one("cat.csv", lambda: b""),
        rejected(("cat.csv", None, None, None, "file is empty")),
    ),
    Case(
        "empty-workbook",
        _one("cat.xlsx", lambda: _workbook({"Tabelle1": []})),
        rejected(("cat.xlsx", None, None, None, "no articles found in the input")),
    ),
    Case(
        "header-only",
        _one("cat.xlsx", lambda: _workbook({"Sheet": [HEADER]})),
        rejected(("cat.xlsx", None, None, None, "no articles found in the input")),
    ),
    Case(
        "missing-headers",
        _one("cat.csv", lambda: _csv_text([["name", "description"], ["Shirt", "Weich."]])),
        rejected(
            ("cat.csv", "csv", 1, "model_name", "missing required column 'model_name'"),
            ("cat.csv", "csv", 1, "model_descr", "missing required column 'model_descr'"),
        ),
    ),
    Case(
        "duplicated-headers",
        _one("cat.xlsx", lambda: _workbook({"Sheet": [HEADER + ["Description"], _article(1)]})),
        rejected(("cat.xlsx", "Sheet", 1, "description", "duplicated header 'description' (col")),
    ),
    Case(
        "merged-description-cells",
        _one("cat.xlsx", lambda: _workbook({"Sheet": [HEADER, _article(1), _article(2)]}, "B2:B3")),
        rejected(("cat.xlsx", "Sheet", 3, "description", "empty description")),
    ),
    Case(
        "formula-without-a-value",
        _one("cat.xlsx", lambda: _sheet_with(B2='<c r="B2"><f>1+1</f><v /></c>')),
        rejected(
            ("cat.xlsx", "Sheet", 2, "description", "formula without a value: =1+1 (cell B2)"),
        ),
    ),
    Case(
        "hyperlink-formula-without-a-value",
        _one(
            "cat.xlsx",
            lambda: _sheet_with(B2='<c r="B2"><f>HYPERLINK("https://x.de","Text")</f></c>'),
        ),
        rejected(
            ("cat.xlsx", "Sheet", 2, "description", '=HYPERLINK("https://x.de","Text") (cell B2)'),
        ),
    ),
    Case(
        "formulas-with-cached-values",
        _one(
            "cat.xlsx",
            lambda: _sheet_with(
                B2='<c r="B2" t="str"><f>HYPERLINK("https://x.de","Weich.")</f><v>Weich.</v></c>',
                C2='<c r="C2"><f>1+1</f><v>2</v></c>',
            ),
        ),
        accepted("row description model_name model_descr", (2, "Weich.", "2", "basic")),
    ),
    Case(
        # Stored as text with an empty value, which openpyxl reads as None, like no value.
        "formula-that-computed-empty-text",
        _one(
            "cat.xlsx",
            lambda: _sheet_with(D2='<c r="D2" t="str"><f>IF(A2="","",A2)</f><v></v></c>'),
        ),
        accepted("row name model_descr", (2, "Shirt 1", "")),
    ),
    Case(
        "error-value-cell",
        _one("cat.xlsx", lambda: _sheet_with(C2='<c r="C2" t="e"><f>1/0</f><v>#DIV/0!</v></c>')),
        rejected(("cat.xlsx", "Sheet", 2, "model_name", "error value: #DIV/0! (cell C2)")),
    ),
    Case(
        "one-mb-cell-in-csv",
        _one("cat.csv", lambda: _csv_text([HEADER, ["Shirt", "x" * 2**20, "", ""]])),
        rejected(("cat.csv", "csv", 2, "description", "cell has 1048576 characters; the limit")),
    ),
    Case(
        # 1 MiB of one letter packs about 1000:1; the sheet part unpacks whole in memory.
        "one-mb-cell-in-xlsx",
        _one("cat.xlsx", lambda: _sheet_with(B2=_inline("B2", "x" * 2**20))),
        rejected(("cat.xlsx", "Sheet", 2, "description", "cell has 1048576 characters")),
    ),
    Case(
        "zip-bomb-size",
        _one("cat.xlsx", _zip_bomb),
        rejected(("cat.xlsx", None, None, None, "workbook unpacks to 3840 MiB; the limit is")),
    ),
    Case(
        "dimension-claims-the-whole-grid",
        _one(
            "cat.xlsx",
            lambda: _rewrite(
                _sheet_with(),
                _SHEET1,
                lambda x: re.sub(r'<dimension ref="[^"]*"', '<dimension ref="A1:XFD1048576"', x),
            ),
        ),
        accepted("row name", (2, "Shirt 1")),
        seconds=2.0,
    ),
    Case(
        # A space typed into the sheet's very last cell: a million blank rows to skip.
        "stray-cell-in-the-last-row-and-column",
        _one(
            "cat.xlsx",
            lambda: _rewrite(
                _sheet_with(),
                _SHEET1,
                lambda x: x.replace(
                    "</sheetData>", f"<row r='1048576'>{_FAR_CELL}</row></sheetData>"
                ),
            ),
        ),
        accepted("row name", (2, "Shirt 1")),
        seconds=20.0,
    ),
    Case(
        "control-characters",
        _one("cat.csv", lambda: _csv_text([HEADER, ["Shirt\x07", "Text\x1b[31m rot", "", "\x7f"]])),
        rejected(
            ("cat.csv", "csv", 2, "name", "1 control character(s), first U+0007 at position 6"),
            ("cat.csv", "csv", 2, "description", "first U+001B at position 5"),
            ("cat.csv", "csv", 2, "model_descr", "first U+007F at position 1"),
        ),
    ),
    Case(
        "emoji-and-right-to-left-text",
        _one("cat.xlsx", lambda: _workbook({"Sheet": [HEADER, _EMOJI_RTL]})),
        accepted("name description model_name model_descr", tuple(_EMOJI_RTL)),
    ),
    Case(
        "numbers-and-dates-in-text-columns",
        _one("cat.xlsx", _cells_in_text_columns),
        accepted(
            "key name description model_name model_descr",
            ("TRUE", "4711", "0.5", "2024-03-01", "2024-03-01 12:30:00"),
            ("7", "-3", "1234.5", "08:15:00", "1999-12-31"),
        ),
    ),
    Case("hundred-thousand-rows", _big_csv, _big_csv_check, seconds=30.0),
    Case(
        "path-traversal-keys",
        _one(
            "cat.csv",
            lambda: _csv_text([["key", *HEADER], *([k, *_article(1)] for k in HOSTILE_KEYS)]),
        ),
        _hostile_keys_check,
    ),
    Case(
        "latin1-csv",
        _one("cat.csv", lambda: _TEXT, encoding="latin-1"),
        accepted("name description model_descr", ("Größe", "Weiß und grün", "ß")),
    ),
    Case(
        "utf8-csv-with-bom",
        _one("cat.csv", lambda: _TEXT.replace(";", ","), encoding="utf-8-sig"),
        accepted("name description model_descr", ("Größe", "Weiß und grün", "ß")),
    ),
    Case(
        "bom-and-semicolon-csv",
        _one("cat.csv", lambda: _TEXT + "Hose;Blau, weit;;\r\n", encoding="utf-8-sig"),
        accepted("row name description", (2, "Größe", "Weiß und grün"), (3, "Hose", "Blau, weit")),
    ),
    Case(
        # What Excel writes as "Unicode Text": UTF-16 with a BOM, tab-separated.
        "utf16-csv",
        _one("cat.csv", lambda: _TEXT.replace(";", "\t"), encoding="utf-16"),
        accepted("name description model_descr", ("Größe", "Weiß und grün", "ß")),
    ),
    Case(
        "utf16-csv-without-bom",
        _one("cat.csv", lambda: _TEXT, encoding="utf-16-le"),
        accepted("name description model_descr", ("Größe", "Weiß und grün", "ß")),
    ),
    Case(
        "mixed-line-endings",
        _one("cat.csv", _mixed_line_ends),
        accepted(
            "row name description", (2, "A", "eins"), (3, "B", "zwei\r\nZeilen"), (4, "C", "drei")
        ),
    ),
    Case(
        "unbalanced-quotes",
        _one("cat.csv", lambda: _csv_text([HEADER, _article(1)]) + 'B,"offen,,\r\nC,zu,,\r\n'),
        rejected(("cat.csv", "csv", 3, None, "unbalanced quotes; a quoted field opened in this")),
    ),
    Case(
        "csv-with-a-nul-byte",
        _one("cat.csv", lambda: _csv_text([HEADER, ["Shirt", "Baum\0wolle", "", ""]])),
        rejected(("cat.csv", "csv", 2, "description", "first U+0000 at position 5")),
    ),
    Case(
        "chart-sheet-only",
        _one("cat.xlsx", _chart_sheets(keep_data=False)),
        rejected(("cat.xlsx", None, None, None, "the workbook has no worksheets (only chart")),
    ),
    Case(
        "chart-sheet-beside-data",
        _one("cat.xlsx", _chart_sheets(keep_data=True)),
        accepted("sheet row name", ("Sheet", 2, "Shirt 1")),
    ),
    Case(
        # Hidden sheets are read too: skipping them would lose articles without a word.
        "only-hidden-sheets",
        _one("cat.xlsx", _hidden_sheets),
        accepted("sheet row name", ("Alt", 2, "Shirt 1"), ("Neu", 2, "Shirt 2")),
    ),
    Case(
        "sheet-name-with-unicode-and-quotes",
        _one("cat.xlsx", lambda: _workbook({'Damen\'s "Größe" 👗': [HEADER, _article(1)]})),
        accepted("sheet row name", ('Damen\'s "Größe" 👗', 2, "Shirt 1")),
    ),
    Case(
        "whitespace-only-descriptions",
        _one(
            "cat.xlsx", lambda: _workbook({"S": [HEADER, ["a", " \t", "", ""], ["b", "\n\u3000"]]})
        ),
        rejected(
            ("cat.xlsx", "S", 2, "description", "empty description"),
            ("cat.xlsx", "S", 3, "description", "empty description"),
        ),
    ),
    Case(
        "duplicate-keys-across-files",
        _two_files,
        rejected(("winter.xlsx", "Winter", 3, "SKU", "duplicate article key 'A-1'; first used in")),
    ),
    Case(
        "symlink-to-etc-passwd",
        _link("catalog.csv", "/etc/passwd"),
        _passwd_check,
    ),
    Case(
        "symlink-to-dev-zero",
        _link("catalog.csv", "/dev/zero"),
        rejected(("catalog.csv", None, None, None, "not a file")),
    ),
    Case(
        "dangling-symlink",
        _link("catalog.csv", "nowhere.csv"),
        rejected(("catalog.csv", None, None, None, "broken symbolic link")),
    ),
    Case(
        "named-pipe",
        _fifo,
        rejected(("catalog.csv", None, None, None, "not a file")),
    ),
    Case(
        "directory-passed-as-a-file",
        _directory,
        rejected(("catalog.xlsx", None, None, None, "not a file")),
    ),
    Case(
        "nonexistent-path",
        lambda tmp_path: [tmp_path / "nope" / "catalog.xlsx"],
        rejected(("catalog.xlsx", None, None, None, "file not found")),
    ),
]
