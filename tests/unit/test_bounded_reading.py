"""Hostile catalogs are refused while they are streamed: the reader's memory stays bounded."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from producer.bounded import LimitExceeded, bounded_lines, check_workbook_texts

MIB = 1 << 20
PEAK_LIMIT_KIB = 500 * 1024
HEADER = ["name", "description", "model_name", "model_descr"]
# Reads the catalog in a fresh interpreter and prints its problems and its own peak memory.
# The child's own peak: VmHWM starts again at exec, while getrusage's ru_maxrss would keep
# the forking parent's size (a test runner that has run worker processes holds hundreds of MB).
READER = """
import sys
from pathlib import Path
from producer.catalog import CatalogError, read_catalog
try:
    read_catalog([Path(sys.argv[1])])
    print("accepted")
except CatalogError as error:
    print(error)
status = Path("/proc/self/status").read_text()
peak = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
print("peak-kib", peak)
"""


MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
DOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
OFFICE = "application/vnd.openxmlformats-officedocument.spreadsheetml"
PARTS = {
    "[Content_Types].xml": (
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{OFFICE}.sheet.main+xml"/>'
        f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{OFFICE}.worksheet+xml"/>'
        f'<Override PartName="/xl/sharedStrings.xml" ContentType="{OFFICE}.sharedStrings+xml"/>'
        "</Types>"
    ),
    "_rels/.rels": (
        f'<Relationships xmlns="{RELS}"><Relationship Id="rId1" '
        f'Type="{DOC}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
    ),
    "xl/workbook.xml": (
        f'<workbook xmlns="{MAIN}" xmlns:r="{DOC}"><sheets>'
        '<sheet name="Sheet" sheetId="1" r:id="rId1"/></sheets></workbook>'
    ),
    "xl/_rels/workbook.xml.rels": (
        f'<Relationships xmlns="{RELS}">'
        f'<Relationship Id="rId1" Type="{DOC}/worksheet" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{DOC}/sharedStrings" Target="sharedStrings.xml"/>'
        "</Relationships>"
    ),
    "xl/worksheets/sheet1.xml": (
        f'<worksheet xmlns="{MAIN}"><sheetData><row r="1">'
        + "".join(
            f'<c r="{col}1" t="inlineStr"><is><t>{name}</t></is></c>'
            for col, name in zip("ABCD", HEADER, strict=True)
        )
        + '</row><row r="2"><c r="A2" t="inlineStr"><is><t>Shirt</t></is></c>'
        '<c r="B2" t="s"><v>0</v></c></row></sheetData></worksheet>'
    ),
}


def runaway_workbook(path: Path, chars: int) -> Path:
    """A small workbook whose one shared string, B2's text, unpacks to ``chars`` characters."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for name, text in PARTS.items():
            out.writestr(name, text)
        with out.open("xl/sharedStrings.xml", "w", force_zip64=True) as stream:
            stream.write(f'<sst xmlns="{MAIN}" count="1" uniqueCount="1"><si><t>'.encode())
            for _ in range(chars // MIB):
                stream.write(b"x" * MIB)
            stream.write(b"</t></si></sst>")
    return path


def one_field_csv(path: Path, chars: int) -> Path:
    """A CSV file of a header and one row whose description is ``chars`` long, on one line."""
    with path.open("w", newline="") as handle:
        handle.write(",".join(HEADER) + "\nShirt,")
        for _ in range(chars // MIB):
            handle.write("x" * MIB)
        handle.write(",,\n")
    return path


def read_in_child(path: Path) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", READER, str(path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    message, peak = done.stdout.rsplit("peak-kib", 1)
    return message, int(peak)


def test_a_small_xlsx_unpacking_to_one_200_mib_string_is_refused_in_bounded_memory(tmp_path):
    path = runaway_workbook(tmp_path / "bomb.xlsx", 200 * MIB)
    assert path.stat().st_size < 2 * MIB
    message, peak_kib = read_in_child(path)
    assert "texts longer than the cell limit" in message
    assert "refused before loading it" in message
    assert peak_kib < PEAK_LIMIT_KIB, f"peak {peak_kib >> 10} MiB"


def test_a_150_mb_csv_of_one_field_is_refused_in_bounded_memory(tmp_path):
    path = one_field_csv(tmp_path / "one-field.csv", 150 * MIB)
    message, peak_kib = read_in_child(path)
    assert "line 2 is longer than" in message
    assert "refused before reading it whole" in message
    assert peak_kib < PEAK_LIMIT_KIB, f"peak {peak_kib >> 10} MiB"


def test_a_runaway_line_is_refused_before_it_is_whole():
    handle = io.StringIO("a,b\n" + "x" * 100 + "\nc,d\n")
    lines = bounded_lines(handle, max_chars=50)
    assert next(lines) == "a,b\n"
    with pytest.raises(LimitExceeded, match="line 2 is longer than"):
        next(lines)


def test_texts_a_little_over_the_limit_are_left_to_the_cell_checks(tmp_path):
    with zipfile.ZipFile(runaway_workbook(tmp_path / "long.xlsx", 2 * MIB)) as archive:
        check_workbook_texts(archive, max_cell_chars=10_000)  # reported cell by cell later
    longer = zipfile.ZipFile(runaway_workbook(tmp_path / "longer.xlsx", 20 * MIB))
    with longer, pytest.raises(LimitExceeded, match="add up to more than 16 Mi"):
        check_workbook_texts(longer, max_cell_chars=10_000)


def test_a_csv_reads_as_before_with_quoted_lines_and_the_field_limit_restored(tmp_path):
    from producer.catalog import read_catalog

    path = tmp_path / "ok.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([HEADER, ["Bluse", "Seide,\nrot", "x", "rot"]])
    before = csv.field_size_limit()
    rows = read_catalog([path])
    assert [row.description for row in rows] == ["Seide,\nrot"]
    assert csv.field_size_limit() == before
