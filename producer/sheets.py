"""Open catalog files, ``.xlsx`` workbooks and ``.csv`` text, as numbered rows of cell values.

Everything about file formats lives here: telling a workbook from CSV text by its bytes,
decoding CSV text, and turning a damaged, encrypted or hostile file into a ``SheetError``
that says what is wrong, never a traceback. ``producer.catalog`` interprets the rows.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import openpyxl

from producer.bounded import (
    LimitExceeded,
    bounded_lines,
    check_workbook_texts,
    field_limit,
    invalid_at,
)

CSV_SHEET = "csv"
XLSX_SUFFIXES = (".xlsx", ".xlsm")
CSV_SUFFIXES = (".csv", ".tsv")
CSV_DELIMITERS = (",", ";", "\t")
# Sum of the unpacked sizes of a workbook's parts; far above any real catalog, far below what
# a zip bomb would make openpyxl chew through. zipfile never unpacks more than the sizes say.
MAX_UNPACKED_BYTES = 1 << 30

_ZIP_MAGIC = b"PK\x03\x04"
_ODS_MIMETYPE = b"application/vnd.oasis.opendocument.spreadsheet"
SUPPORTED = "the farm reads .xlsx/.xlsm workbooks and .csv/.tsv text"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# An encrypted Office file is an OLE container holding a stream with this (UTF-16) name.
_ENCRYPTION_STREAM = "EncryptionInfo".encode("utf-16-le")
# A formula element (``<f>..</f>``, ``<f t="shared" .../>``, ``<x:f>``) followed by an empty
# value or the end of its cell: a formula that may never have been computed.
_UNCOMPUTED = re.compile(
    rb"(?:</(?:[\w.-]+:)?f>|<(?:[\w.-]+:)?f\b[^>]*/>)\s*"
    rb"(?:<(?:[\w.-]+:)?v\s*/>|<(?:[\w.-]+:)?v>\s*</(?:[\w.-]+:)?v>|</(?:[\w.-]+:)?c>)"
)
_BINARY_SIGNATURES = (
    (_ZIP_MAGIC, "an Excel workbook?"),
    (_OLE_MAGIC, "an old .xls or a password-protected workbook?"),
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x1f\x8b", "gzip-compressed"),
)
# Bytes that text never holds (C0 controls other than tab, line feed, form feed and return).
_BINARY_BYTES = bytes([*range(0, 9), 11, *range(14, 32)])
_SNIFF_BYTES = 4096
# Lines looked at for the header when choosing the delimiter (the catalog reader looks as far),
# and the delimiters a header line holds at least: it has four columns or more.
_SNIFF_LINES = 10
_HEADER_DELIMITERS = 3

Row = Sequence[object]


class SheetError(Exception):
    """A file, sheet or row cannot be read; ``message``, ``sheet`` and ``row`` say what, where."""

    def __init__(self, message: str, sheet: str | None = None, row: int | None = None) -> None:
        super().__init__(message, sheet, row)
        self.message = message
        self.sheet = sheet
        self.row = row


@dataclass(frozen=True)
class BadCell:
    """A workbook cell without a usable value: an Excel error, or a formula never computed."""

    shown: str
    reason: str
    hint: str = ""

    def __str__(self) -> str:
        return self.shown


@dataclass
class Table:
    """One worksheet or CSV file: its name and its rows, numbered from 1 as the user sees them.

    Iterating ``rows`` raises ``SheetError`` (with ``row``) where the file turns out damaged.
    """

    sheet: str
    rows: Iterator[tuple[int, Row]]


@contextmanager
def open_tables(
    path: Path, sheet: str | None = None, max_cell_chars: int = 10_000
) -> Iterator[Iterator[Table]]:
    """Open a catalog file and give its tables, chosen by the file name's suffix.

    Args:
        path: an ``.xlsx``/``.xlsm`` workbook or a ``.csv``/``.tsv`` file.
        sheet: read only this sheet of a workbook, matched ignoring case; a CSV file has one
            table and ignores it (``producer.catalog`` tells the user in a notice).
        max_cell_chars: the cell limit; a runaway CSV field
            (:func:`producer.bounded.field_limit`), or a workbook's over-long texts adding up
            past :data:`producer.bounded.MAX_OVERSIZED_CHARS`, stop the read before they are
            held in memory.

    Returns:
        A context manager giving an iterator over the file's tables, workbook sheets in order.
        The file stays open until the context ends.

    Raises:
        SheetError: the file is missing or not readable as a spreadsheet, or (while iterating)
            the sheet asked for does not exist or the workbook has no worksheets.
    """
    suffix = path.suffix.lower()
    try:
        _check_access(path)
        if suffix in XLSX_SUFFIXES:
            with _workbook_tables(path, sheet, max_cell_chars) as tables:
                yield tables
        elif suffix in CSV_SUFFIXES:
            with _csv_tables(path, max_cell_chars) as tables:
                yield tables
        else:
            raise SheetError(_unsupported(path, suffix))
    except OSError as exc:  # the file changed or vanished after the first look
        raise SheetError(f"cannot read file: {exc.strerror or exc}") from exc


def _unsupported(path: Path, suffix: str) -> str:
    """What a file of an unsupported suffix is, told by its bytes, and what to do with it."""
    found = _format_by_content(path)
    if found == "xlsx":
        return f"an Excel workbook (.xlsx) with a {suffix or 'missing'} suffix; rename it .xlsx"
    if found == "ods":
        return f"an OpenDocument spreadsheet (.ods); {SUPPORTED}: save it as .xlsx"
    if found == "ole":
        if _ole_message(path).startswith("the workbook is password-protected"):
            return _ole_message(path)
        return f"old Excel 97-2003 (.xls) file; {SUPPORTED}: save it as .xlsx"
    return "not a spreadsheet; expected .xlsx or .csv"


def _format_by_content(path: Path) -> str | None:
    """``xlsx``, ``ods`` (a ZIP package, by its parts), ``ole`` (an OLE2 container) or None."""
    with path.open("rb") as handle:
        head = handle.read(len(_OLE_MAGIC))
    if len(head) >= 4 and _OLE_MAGIC.startswith(head[:4]):
        return "ole"
    if not head.startswith(_ZIP_MAGIC):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            small = "mimetype" in names and archive.getinfo("mimetype").file_size < 200
            if small and archive.read("mimetype").strip() == _ODS_MIMETYPE:
                return "ods"
            if "[Content_Types].xml" in names and "xl/workbook.xml" in names:
                return "xlsx"
    except Exception:  # a damaged archive is simply not a format we can name
        return None
    return None


def _check_access(path: Path) -> None:
    try:
        is_file = path.is_file()
    except ValueError as exc:  # a NUL byte in the path
        raise SheetError(f"cannot read file: {exc}") from exc
    if is_file:
        path.open("rb").close()
    elif path.is_symlink() and not path.exists():
        raise SheetError("broken symbolic link (its target does not exist or loops)")
    else:
        raise SheetError("not a file" if path.exists() else "file not found")


def _numbered(
    rows: Iterable[Row], errors: type[Exception], describe: Callable[[Exception], str]
) -> Iterator[tuple[int, Row]]:
    """Number rows from 1, turning reader failures into ``SheetError``.

    Args:
        rows: the reader's rows.
        errors: the exception type(s) the reader raises for damaged input.
        describe: the user's message for such an exception.

    Returns:
        ``(row number, values)`` pairs; a failure raises ``SheetError`` with its row number.
    """
    iterator = iter(rows)
    for number in itertools.count(1):
        try:
            values = next(iterator)
        except StopIteration:
            return
        except errors as exc:
            raise SheetError(describe(exc), row=number) from exc
        yield number, values


# --- workbooks ---------------------------------------------------------------------------------


@contextmanager
def _workbook_tables(
    path: Path, sheet: str | None, max_cell_chars: int
) -> Iterator[Iterator[Table]]:
    uncomputed = _inspect_workbook(path, max_cell_chars)
    # Values come from a data_only read, which gives a formula's stored value and None where
    # there is none; only a second, formula read tells such a formula (written by a script,
    # never opened in Excel) from an empty cell, so it runs only where the bytes suggest one.
    books = [_load(path, data_only=True)]
    try:
        if uncomputed:
            books.append(_load(path, data_only=False))
        yield _sheet_tables(books, sheet)
    finally:
        for book in books:
            book.close()


def _inspect_workbook(path: Path, max_cell_chars: int) -> bool:
    """Check that ``path`` is a ZIP archive of sane size and texts; return whether it may hold
    formulas without a stored value."""
    with path.open("rb") as handle:
        head = handle.read(len(_OLE_MAGIC))
    if not head:
        raise SheetError("file is empty")
    if head == _OLE_MAGIC:
        raise SheetError(_ole_message(path))
    if not head.startswith(_ZIP_MAGIC):
        raise SheetError("not a valid .xlsx workbook (not a ZIP archive); is it a CSV file?")
    if _format_by_content(path) == "ods":
        raise SheetError(f"an OpenDocument spreadsheet (.ods) with an .xlsx name; {SUPPORTED}")
    try:
        with zipfile.ZipFile(path) as archive:
            parts = archive.infolist()
            unpacked = sum(part.file_size for part in parts)
            if unpacked <= MAX_UNPACKED_BYTES:
                check_workbook_texts(archive, max_cell_chars)
            formulas = unpacked <= MAX_UNPACKED_BYTES and any(
                _has_uncomputed_formula(archive, p) for p in parts if p.filename.endswith(".xml")
            )
    except LimitExceeded as exc:
        raise SheetError(str(exc)) from exc
    except Exception as exc:  # zipfile and zlib raise many types for damaged archives
        raise SheetError(_damaged(exc)) from exc
    if unpacked > MAX_UNPACKED_BYTES:
        limit = MAX_UNPACKED_BYTES >> 20
        message = f"workbook unpacks to {unpacked >> 20} MiB; the limit is {limit} MiB (zip bomb?)"
        raise SheetError(message)
    return formulas


def _ole_message(path: Path) -> str:
    with path.open("rb") as handle:
        if _ENCRYPTION_STREAM in handle.read():
            return "the workbook is password-protected; save an unprotected copy"
    return "old Excel 97-2003 (.xls) file with an .xlsx name; save it as .xlsx"


def _has_uncomputed_formula(archive: zipfile.ZipFile, part: zipfile.ZipInfo) -> bool:
    tail = b""
    with archive.open(part) as stream:
        while chunk := stream.read(1 << 20):
            if _UNCOMPUTED.search(tail + chunk):
                return True
            tail = chunk[-256:]  # a formula split between two chunks
    return False


def _load(path: Path, data_only: bool):
    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=data_only)
    except Exception as exc:  # openpyxl raises many types for damaged archives
        raise SheetError(_damaged(exc)) from exc


def _damaged(exc: Exception) -> str:
    return f"corrupt or truncated workbook ({type(exc).__name__}: {exc})"


def _sheet_tables(books: list, sheet: str | None) -> Iterator[Table]:
    """The chosen sheets of ``books`` (a data_only read, maybe a formula read) as tables."""
    if not books[0].worksheets:
        raise SheetError("the workbook has no worksheets (only chart sheets?)")
    for index in _chosen_indexes(books[0].worksheets, sheet):
        worksheets = [book.worksheets[index] for book in books]
        for worksheet in worksheets:
            worksheet.reset_dimensions()  # stale size records would otherwise cut rows short
        # A damaged sheet can fail anywhere in its XML, with many exception types.
        rows = _numbered(_cell_values(worksheets), Exception, _damaged)
        yield Table(worksheets[0].title, rows)


def _chosen_indexes(worksheets: list, sheet: str | None) -> list[int]:
    titles = [worksheet.title for worksheet in worksheets]
    if sheet is None:
        return list(range(len(titles)))
    exact = [i for i, title in enumerate(titles) if title == sheet]
    # Excel treats sheet names case-insensitively, so a user may type them either way.
    chosen = exact or [i for i, title in enumerate(titles) if title.casefold() == sheet.casefold()]
    if not chosen:
        listed = ", ".join(repr(title) for title in titles)
        raise SheetError(f"no sheet named {sheet!r}; the workbook has {listed}", sheet=sheet)
    return chosen[:1]


def _cell_values(worksheets: list) -> Iterator[Row]:
    """Rows of cell values from a data_only sheet, with errors and uncomputed formulas as
    ``BadCell``; the formula read, when there is one, runs in step with it."""
    cells = worksheets[0].iter_rows(values_only=False)
    if len(worksheets) == 1:
        for row in cells:
            yield tuple(map(_cell_value, row))
        return
    formulas = worksheets[1].iter_rows(values_only=True)
    for row, written in zip(cells, formulas, strict=False):
        padded = itertools.chain(written, itertools.repeat(None))
        yield tuple(_cell_value(cell, f) for cell, f in zip(row, padded, strict=False))


def _cell_value(cell, formula: object = None) -> object:
    if cell.data_type == "e":
        return BadCell(str(cell.value), "error value")
    # A formula that computed "" is stored as a text cell with an empty value, which openpyxl
    # also reads as None; only a formula cell without a text type was never computed.
    if cell.value is None and formula is not None and cell.data_type != "str":
        text = str(getattr(formula, "text", None) or formula)
        shown = text if len(text) <= 100 else text[:99] + "…"
        hint = "recalculate and save the file in Excel or LibreOffice"
        return BadCell(shown, "formula without a value", hint)
    return cell.value


# --- CSV ---------------------------------------------------------------------------------------


@contextmanager
def _csv_tables(path: Path, max_cell_chars: int) -> Iterator[Iterator[Table]]:
    encoding = _csv_encoding(path)
    with path.open("r", encoding=encoding, newline="") as handle:
        delimiter = _sniff_delimiter(handle)
    with path.open("r", encoding=encoding, newline="") as handle:
        reader = csv.reader(bounded_lines(handle), delimiter=delimiter, strict=True)
        rows = _numbered(reader, (csv.Error, LimitExceeded), _csv_describer(reader, max_cell_chars))
        # A runaway field stops the reader where it is met, before it is whole.
        with _csv_field_limit(field_limit(max_cell_chars)):
            yield iter([Table(CSV_SHEET, rows)])


def _csv_encoding(path: Path) -> str:
    """The encoding of CSV bytes: UTF-16 (with a BOM, or recognised by its zero bytes), UTF-8
    with or without BOM, else Windows-1252, else Latin-1; binary files raise ``SheetError``.

    The file is checked in chunks, never held whole.
    """
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head:
        raise SheetError("file is empty")
    utf16 = _utf16_encoding(head)
    if utf16 is not None:
        at = invalid_at(path, utf16)
        if at is not None:
            raise SheetError(f"not valid UTF-16 text (at byte {at})")
        return utf16
    kind = _binary_kind(head)
    if kind is not None:
        raise SheetError(f"binary file ({kind}), not CSV text")
    for encoding in ("utf-8-sig", "cp1252"):
        if invalid_at(path, encoding) is None:
            return encoding
    return "latin-1"


def _utf16_encoding(data: bytes) -> str | None:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    head = data[:_SNIFF_BYTES]
    even, odd = head[0::2].count(0), head[1::2].count(0)
    # Latin text in UTF-16 has a zero byte in most characters, always on the same side.
    if odd * 3 > len(head) // 2 and even * 10 <= odd:
        return "utf-16-le"
    if even * 3 > len(head) // 2 and odd * 10 <= even:
        return "utf-16-be"
    return None


def _binary_kind(data: bytes) -> str | None:
    for signature, kind in _BINARY_SIGNATURES:
        if data.startswith(signature):
            return kind
    head = data[:_SNIFF_BYTES]
    controls = len(head) - len(head.translate(None, _BINARY_BYTES))
    return "unknown format" if controls * 10 > len(head) else None


def _sniff_delimiter(handle: TextIO) -> str:
    """Pick the delimiter that occurs most often in the header line.

    The header is taken to be the first of the first ten non-blank lines holding at least
    three of one delimiter (it has at least four columns), else the first non-blank line: a
    title above the table, which the catalog reader skips, must not choose the delimiter.
    """
    lines = (line for line in _head_lines(handle) if line.strip())
    head = list(itertools.islice(lines, _SNIFF_LINES))
    header = next(
        (line for line in head if max(map(line.count, CSV_DELIMITERS)) >= _HEADER_DELIMITERS),
        head[0] if head else "",
    )
    counts = {delimiter: header.count(delimiter) for delimiter in CSV_DELIMITERS}
    best = max(CSV_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _head_lines(handle: TextIO) -> Iterator[str]:
    """The file's first lines, each cut at the sniffer's size (a runaway line is refused by
    the reader, with its number)."""
    while line := handle.readline(_SNIFF_BYTES):
        yield line


def _csv_describer(reader, max_cell_chars: int) -> Callable[[Exception], str]:
    """The user's message for an error of ``reader``."""

    def describe(exc: Exception) -> str:
        if isinstance(exc, LimitExceeded):
            return str(exc)
        if "field larger than field limit" in str(exc):
            return (
                f"a cell at line {reader.line_num} has more than {field_limit(max_cell_chars)} "
                f"characters (the limit is {max_cell_chars}, FARM_MAX_CELL_CHARS); "
                "refused before reading it whole"
            )
        return _csv_message(exc, reader.line_num)

    return describe


def _csv_message(exc: Exception, line: int) -> str:
    if "unexpected end of data" in str(exc):
        return "malformed CSV: unbalanced quotes; a quoted field opened in this row never closes"
    return f"malformed CSV at line {line}: {exc}"


@contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    previous = csv.field_size_limit()
    csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)
